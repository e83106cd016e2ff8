"""ONNX Runtime peer of bench/scaling.py, through onnxruntime's Python API (the
device machine has no node; bench/compare_ort.js is the node twin). One
(mode, batch, threads) per process, so its peak RSS is its own.

    scaling_ort.py MODEL.onnx {density|sample} BATCH N REPEATS THREADS IN.f32 OUT.bin C H W

Session: intra_op_num_threads = THREADS, inter_op_num_threads = 1,
ORT_SEQUENTIAL, ORT_ENABLE_ALL, CPUExecutionProvider (the settings of
compare_ort.js). Prints one JSON line with the repeat times; writes log_p
(float64 [N]) or x (float32 [N, C, H, W]) from the last repeat.
"""
import json
import sys
import time

import numpy as np


def main():
    if len(sys.argv) != 12:
        sys.exit("usage: scaling_ort.py MODEL {density|sample} BATCH N REPEATS THREADS IN OUT C H W")
    model, mode, b, n, reps, threads, inp, out, c, h, w = sys.argv[1:12]
    b, n, reps, threads, c, h, w = int(b), int(n), int(reps), int(threads), int(c), int(h), int(w)
    t0 = time.perf_counter()
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    d = c * h * w
    data = np.fromfile(inp, dtype=np.float32)
    if data.size < n * d:
        sys.exit("scaling_ort: %s holds %d floats, need %d" % (inp, data.size, n * d))
    data = data[:n * d].reshape((n, c, h, w) if mode == "density" else (n, d))
    setup = time.perf_counter() - t0
    sess.run([out_name], {in_name: data[:b]})  # warm-up
    times, outs = [], []
    for _ in range(reps):
        outs = []
        t = time.perf_counter()
        for i in range(0, n, b):
            outs.append(sess.run([out_name], {in_name: data[i:i + b]})[0])
        times.append(time.perf_counter() - t)
    res = np.concatenate(outs, 0)
    (res.astype(np.float64) if mode == "density" else res.astype(np.float32)).tofile(out)
    hwm = -1
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    print(json.dumps({"times_s": times, "setup_s": setup, "vm_hwm_kib": hwm, "ort_version": ort.__version__,
                      "providers": sess.get_providers(), "threads": threads}))


if __name__ == "__main__":
    main()
