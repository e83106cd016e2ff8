"""PyTorch peer of bench/compare: one (variant, mode, batch) per process so its
peak RSS is its own. Prints one JSON line with the repeat times.

    compare_torch.py SD.pt {rosinality|precomp} {density|sample} BATCH N REPEATS THREADS IN.f32 OUT.bin H W
"""
import json
import sys
import time

import numpy as np
import torch

import compare_common as cc


def main():
    sd, variant, mode, b, n, reps, threads, inp, out, h, w = sys.argv[1:12]
    b, n, reps, threads, h, w = int(b), int(n), int(reps), int(threads), int(h), int(w)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    t0 = time.perf_counter()
    model, info = cc.build_model(sd)
    if variant == "precomp":
        cc.precompute(model)
    c = info["in_channels"]
    d = c * h * w
    if mode == "density":
        data = torch.from_numpy(cc.read_f32(inp, (-1, c, h, w))[:n].copy())
        fn = cc.Density(model)
    else:
        data = torch.from_numpy(cc.read_f32(inp, (-1, d))[:n].copy())
        fn = cc.Sampler(model, h, w)
    setup = time.perf_counter() - t0
    times = []
    with torch.inference_mode():
        fn(data[:b])  # warm-up
        for _ in range(reps):
            outs = []
            t = time.perf_counter()
            for i in range(0, n, b):
                outs.append(fn(data[i:i + b]))
            times.append(time.perf_counter() - t)
    res = torch.cat(outs, 0).numpy()
    if mode == "density":
        res.astype(np.float64).tofile(out)
    else:
        res.astype(np.float32).tofile(out)
    hwm = -1
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    print(json.dumps({"times_s": times, "setup_s": setup, "vm_hwm_kib": hwm, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
