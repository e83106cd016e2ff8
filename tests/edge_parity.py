#!/usr/bin/python3
"""Coupling networks with a first-layer edge table (e1: openai/glow's edge
bias, added before the first ReLU) against the float64 reference.

    /usr/bin/python3 tests/edge_parity.py --glowrt build/glowrt [--keep DIR] [--cases 0,2] [--small]

Each case exports a random rosinality-layout Glow (models/glow.py
random_model, models/export.py) and adds e1 [9, hidden] ~ N(0, 0.5) to every
COUPLING op with models/glowfile.py (or, for 1024 channels, whose random
invertible 1x1 convs take seconds to make, writes a plan of couplings and a
learned top prior directly), and compares
    glowrt score  MODEL X.npy --format csv     log_p
    glowrt encode MODEL X.npy -o Z.npy         eps
    glowrt decode MODEL Z.npy -o XR.npy        (blocked runs with threads 2)
with glowfile.Plan(g).forward in float64 (tests/parity.py's tolerances:
|dlog_p| <= 1e-5 |log_p| + 1e-3, max|deps| <= 1e-4, max|x - XR| <= 1e-4).
Each case runs on the blocked path with threads 1 / batch 1, threads 2 /
batch 16 and threads 2 / batch 1 (whose log_p and latents must also be
bit-identical), then under GLOWRT_PLAIN_CONV=1 (the plain path, as a
cross-check), DNNL_MAX_CPU_ISA=AVX2 (8-channel blocks), GLOWRT_ISA=ref, and
the case's own switches (GLOWRT_NO_TAPS: input pieces; GLOWRT_NO_SPLIT).
The cases cover split first layers (C/2 not a multiple of the block), taps
and input pieces in the first layer, padded widths, 1-pixel-wide levels
(4x1, 1x1) and one image split among threads (>= 0.5 GFLOP).
Prints one line per case and mode, then 'N passed, N failed'; exit 1 if any
failed.
"""
import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))

import torch  # noqa: E402

import export  # noqa: E402
import glowfile  # noqa: E402
from glow import random_model  # noqa: E402

# (in_channels, n_block, n_flow, hidden, H, W, n_images, extra env switches, what it covers);
# n_block 0: no squeezes, n_flow couplings written directly (synthetic_model)
CASES = [
    (3, 2, 2, 32, 8, 8, 3, [], "plain input (C/2 = 6)"),
    (5, 2, 1, 100, 16, 4, 3, ["GLOWRT_NO_SPLIT"], "split first layer at 4x1 (C/2 = 20), width 100 padded"),
    (33, 1, 2, 600, 8, 8, 2, ["GLOWRT_NO_SPLIT"], "split first layer (C/2 = 66), width 600"),
    (1024, 0, 2, 32, 1, 3, 2, ["GLOWRT_NO_TAPS"], "first layer as taps / input pieces (512 -> 32) at 1x3"),
]
# One image split among 2 threads (>= 0.5 GFLOP): skipped with --small (emulated runs).
CASES_LARGE = [
    (5, 2, 3, 520, 32, 32, 2, [], "one image split among threads (0.85 GFLOP), split first layer"),
]

BLOCKED = [(1, 1), (2, 16), (2, 1)]  # (threads, batch), bit-identical


def describe(case):
    c, L, K, hid, H, W, n = case[:7]
    return "C=%d L=%d K=%d hidden=%d %dx%d n=%d" % (c, L, K, hid, H, W, n)


def add_e1(src, dst, seed):
    """src .glow -> dst .glow with e1 [9, hid] ~ N(0, 0.5) in every coupling."""
    g = glowfile.read_glow(src)
    rng = np.random.default_rng(seed)
    tensors = [(n, g.tensors[n]) for n in g.tensor_names]
    ops = []
    for k, op in enumerate(g.ops):
        names = list(op.tensors)
        if op.code == glowfile.OP_COUPLING:
            if names[2] is not None:
                raise RuntimeError("the exported model already has e1")
            name = "op%d.e1" % k
            tensors.append((name, rng.normal(0.0, 0.5, size=(9, op.ints[1])).astype(np.float32)))
            names[2] = name
        ops.append((op.code, op.ints, op.f64s, names))
    glowfile.write_glow(dst, list(g.kv.items()), tensors, ops)
    return glowfile.read_glow(dst)


def synthetic_model(path, c, n_flow, hid, h, w, seed):
    """n_flow couplings over c channels at h x w (affine with contiguous
    halves, then additive with interleaved ones, alternately; e1 and e3),
    then a learned top prior (with its edge table), written to path."""
    rng = np.random.default_rng(seed)
    tensors, ops = [], []

    def t(name, arr):
        tensors.append((name, arr.astype(np.float32)))
        return name

    for k in range(n_flow):
        additive = k % 2
        co = c // 2 if additive else c
        names = [t("c%d.w1" % k, rng.normal(0, (2.0 / (9 * c // 2)) ** 0.5, (hid, c // 2, 3, 3))),
                 t("c%d.b1" % k, rng.normal(0, 0.05, hid)), t("c%d.e1" % k, rng.normal(0, 0.5, (9, hid))),
                 t("c%d.w2" % k, rng.normal(0, (2.0 / hid) ** 0.5, (hid, hid, 1, 1))),
                 t("c%d.b2" % k, rng.normal(0, 0.05, hid)),
                 t("c%d.w3" % k, rng.normal(0, 0.3 / (9 * hid) ** 0.5, (co, hid, 3, 3))),
                 t("c%d.b3" % k, rng.normal(0, 0.05, co)), t("c%d.e3" % k, rng.normal(0, 0.05, (9, co)))]
        ops.append((glowfile.OP_COUPLING, [c, hid, additive, additive], [], names))
    ops.append((glowfile.OP_TOP_PRIOR, [c, 1, 1], [], [t("top.b", rng.normal(0, 0.05, 2 * c)),
                                                      t("top.e", rng.normal(0, 0.05, (9, 2 * c)))]))
    kv = [("glow.in_channels", c), ("glow.image_height", h), ("glow.image_width", w), ("glow.n_levels", 0),
          ("glow.n_flow", n_flow), ("glow.hidden", hid), ("glow.coupling", "affine"), ("glow.invconv", "permutation"),
          ("glow.n_bits", 8), ("source.format", "edge_parity")]
    glowfile.write_glow(path, kv, tensors, ops)
    return glowfile.read_glow(path)


def run_cli(argv, env, timeout):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError("%s exited %d: %s" % (" ".join(os.path.basename(a) for a in argv[:2]), r.returncode, err))
    return r.stdout


def parse_log_p(text, n):
    rows = list(csv.reader(io.StringIO(text.strip())))
    if not rows or [h.strip() for h in rows[0]][:2] != ["id", "log_p"] or len(rows) != n + 1:
        raise RuntimeError("score: unexpected csv %r" % text[:200])
    return np.array([float(r[1]) for r in rows[1:]])


def run_case(k, case, args, work):
    c, L, K, hid, H, W, n, switches = case[:8]
    d = os.path.join(work, "case%02d" % k)
    os.makedirs(d, exist_ok=True)
    pt, plain, gl = (os.path.join(d, f) for f in ("model.pt", "model-noe1.glow", "model.glow"))
    if L == 0:
        g = synthetic_model(gl, c, K, hid, H, W, 3000 + k)
    else:
        torch.save(random_model(c, K, L, affine=True, conv_lu=True, hidden=hid, height=H, width=W,
                                seed=2000 + k).state_dict(), pt)
        if export.main(["rosinality", pt, "-o", plain, "--image-size", "%dx%d" % (H, W), "--n-bits", "8", "-q",
                        "--no-check"]) != 0:
            raise RuntimeError("export failed")
        g = add_e1(plain, gl, 3000 + k)
    x = ((np.random.default_rng(k).integers(0, 256, size=(n, c, H, W)) + 0.5) / 256.0 - 0.5).astype(np.float32)
    xp = os.path.join(d, "x.npy")
    np.save(xp, x)
    with torch.no_grad():
        ref_ll, ref_eps = glowfile.Plan(g).forward(x.astype(np.float64))
    ref_ll, ref_eps = ref_ll.numpy(), ref_eps.numpy()
    tol = 1e-5 * np.abs(ref_ll) + 1e-3

    base = dict(os.environ)
    for v in ("GLOWRT_PLAIN_CONV", "GLOWRT_NO_TAPS", "GLOWRT_NO_SPLIT", "GLOWRT_ISA", "DNNL_MAX_CPU_ISA"):
        base.pop(v, None)
    modes = [("threads %d batch %d" % tb, tb, {}) for tb in BLOCKED]
    modes += [("GLOWRT_PLAIN_CONV=1", (2, 16), {"GLOWRT_PLAIN_CONV": "1"}),
              ("DNNL_MAX_CPU_ISA=AVX2", (2, 1), {"DNNL_MAX_CPU_ISA": "AVX2"}),
              ("GLOWRT_ISA=ref", (2, 16), {"GLOWRT_ISA": "ref"})]
    modes += [("%s=1" % s, (2, 1), {s: "1"}) for s in switches]
    results = []
    first = None
    for name, (t, b), extra in modes:
        env = dict(base, **extra)
        common = ["--threads", str(t), "--batch", str(b)]
        zp = os.path.join(d, "z.npy")
        fails = []
        try:
            ll = parse_log_p(run_cli([args.glowrt, "score", gl, xp, "--format", "csv"] + common, env, args.timeout), n)
            run_cli([args.glowrt, "encode", gl, xp, "-o", zp] + common, env, args.timeout)
            z = np.load(zp)
            if z.shape != ref_eps.shape or z.dtype != np.float32:
                raise RuntimeError("encode: %s %s" % (z.dtype, z.shape))
            d_ll = np.abs(ll - ref_ll)
            if not np.all(d_ll <= tol):
                i = int(np.argmax(d_ll - tol))
                fails.append("log_p[%d] %.6f vs %.6f" % (i, ll[i], ref_ll[i]))
            d_eps = float(np.abs(z.astype(np.float64) - ref_eps).max())
            if not d_eps <= 1e-4:
                fails.append("eps max diff %.3g" % d_eps)
            stats = "dlog_p %.2g deps %.2g" % (d_ll.max(), d_eps)
            if not extra:
                if first is None:
                    first = (ll, z)
                elif not (np.array_equal(ll, first[0]) and np.array_equal(z, first[1])):
                    fails.append("not bit-identical to threads 1 batch 1")
                if t > 1:
                    xr = os.path.join(d, "xr.npy")
                    run_cli([args.glowrt, "decode", gl, zp, "-o", xr] + common, env, args.timeout)
                    d_rt = float(np.abs(np.load(xr).astype(np.float64) - x).max())
                    if not d_rt <= 1e-4:
                        fails.append("roundtrip max diff %.3g" % d_rt)
                    stats += " droundtrip %.2g" % d_rt
        except Exception as e:  # noqa: BLE001 - any failure is a failed mode
            fails.append("%s: %s" % (type(e).__name__, e))
            stats = ""
        results.append((name, fails, stats))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glowrt", required=True, help="path of the glowrt CLI")
    ap.add_argument("--keep", metavar="DIR", help="keep the generated models and arrays in DIR")
    ap.add_argument("--cases", help="comma-separated case numbers to run (default: all)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per glowrt call")
    ap.add_argument("--small", action="store_true", help="skip the case that splits an image among threads "
                    "(emulated runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not os.path.exists(args.glowrt):
        print("glowrt not found: %s" % args.glowrt, file=sys.stderr)
        return 2
    work = args.keep or tempfile.mkdtemp(prefix="glowrt-edge-")
    os.makedirs(work, exist_ok=True)
    cases = CASES + ([] if args.small else CASES_LARGE)
    sel = range(len(cases)) if not args.cases else [int(s) for s in args.cases.split(",")]
    passed = failed = 0
    try:
        for k in sel:
            t0 = time.time()
            try:
                results = run_case(k, cases[k], args, work)
            except Exception as e:  # noqa: BLE001
                results = [("setup", ["%s: %s" % (type(e).__name__, e)], "")]
            for name, fails, stats in results:
                ok = not fails
                passed += ok
                failed += not ok
                print("%s case%02d %s (%s) [%s]: %s" % ("ok  " if ok else "FAIL", k, describe(cases[k]), cases[k][8],
                                                       name, stats if ok else "; ".join(fails) + "  " + stats),
                      flush=True)
            print("     case%02d took %.1fs" % (k, time.time() - t0), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
