#!/usr/bin/python3
"""Parity of the glowrt CLI against the PyTorch reference (models/glow.py).

    /usr/bin/python3 tests/parity.py --glowrt build/glowrt [--keep DIR]

For each case: build a random rosinality-layout Glow (every parameter
perturbed, actnorms data-initialised), save its state_dict (.pt), export it
with models/export.py, then run
    glowrt score  MODEL X.npy --format csv      (id,log_p,bpd)
    glowrt encode MODEL X.npy -o Z.npy          (float32 [N, D])
    glowrt decode MODEL Z.npy -o XR.npy         (float32 [N, C, H, W])
and compare with the torch model run in float64:
    |dlog_p| <= 1e-5 |log_p| + 1e-3,  max|deps| <= 1e-4,  max|x - XR| <= 1e-4.
Prints one line per case, then 'N passed, N failed'; exit 1 if any failed.
"""
import argparse
import contextlib
import csv
import io
import math
import os
import re
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
from glow import random_model  # noqa: E402

# (in_channels, n_block, n_flow, affine, lu, hidden, H, W, n_images, --batch, --threads)
# Covers every value of every factor: C {1,3,4,133}, L {1,2,3,4}, K {1,2,3,5}, affine/additive,
# LU/plain, hidden {32,100,512,520}, sizes {8,16,32,16x8,16x4}, batch {1,3,16}.
CASES = [
    (1, 1, 1, True, True, 32, 8, 8, 1, 1, 1),
    (3, 2, 2, False, False, 32, 16, 16, 5, 3, 2),
    (3, 3, 5, True, False, 32, 32, 32, 16, 16, 2),
    (1, 4, 2, False, True, 32, 16, 16, 3, 3, 1),      # top level 1x1
    (3, 3, 2, True, True, 32, 16, 8, 4, 3, 2),        # non-square
    (3, 1, 1, True, True, 512, 8, 8, 3, 3, 2),        # width 512
    (1, 2, 1, False, False, 512, 8, 8, 16, 16, 1),    # width 512, additive, plain
    (3, 4, 1, True, False, 32, 32, 32, 2, 1, 2),
    (1, 3, 5, False, True, 32, 8, 8, 16, 16, 2),      # top level 1x1
    (3, 2, 5, True, True, 32, 32, 32, 3, 16, 1),
    (1, 2, 2, True, False, 32, 16, 8, 7, 3, 2),       # non-square, plain
    (3, 2, 1, True, True, 512, 16, 4, 3, 3, 2),       # taps at 8x2 and 4x1 (1-pixel-wide levels), tails packed at use
    (4, 2, 2, True, True, 100, 16, 16, 3, 3, 2),      # width 100: every layer pads; C=4
    (133, 1, 1, True, True, 32, 4, 4, 2, 2, 2),       # 266 input channels to a width of 32: no split first layer
]
# One image split among 2 threads (>= 0.5 GFLOP): skipped with --small (emulated runs).
CASES_LARGE = [
    (3, 2, 3, True, True, 520, 32, 32, 3, 3, 2),      # 0.71 GFLOP: padded channels packed per thread in a team
]


def describe(case):
    c, L, K, aff, lu, hid, H, W, n, b, t = case
    return "C=%d L=%d K=%d %s %s hidden=%d %dx%d n=%d batch=%d threads=%d" % (
        c, L, K, "affine" if aff else "additive", "lu" if lu else "plain", hid, H, W, n, b, t)


def run_cli(argv, timeout):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError("%s exited %d: %s" % (" ".join(os.path.basename(a) for a in argv[:2]),
                                                  r.returncode, err))
    return r.stdout


def parse_score_csv(text, n):
    rows = list(csv.reader(io.StringIO(text.strip())))
    if not rows or [h.strip() for h in rows[0]][:3] != ["id", "log_p", "bpd"]:  # then error (glowrt score), ...
        raise RuntimeError("score: bad csv header %r" % (rows[0] if rows else None))
    body = rows[1:]
    if len(body) != n:
        raise RuntimeError("score: %d rows for %d images" % (len(body), n))
    # ids are row numbers, either plain (0, 1, ...) or PATH[i] (glowrt's array rows)
    ids = []
    for r in body:
        m = re.fullmatch(r"(?:.*\[)?(\d+)\]?", r[0].strip())
        ids.append(int(m.group(1)) if m else None)
    if ids != list(range(n)):
        raise RuntimeError("score: ids %s" % [r[0] for r in body[:3]])
    return np.array([float(r[1]) for r in body]), np.array([float(r[2]) for r in body])


def compare_outputs(ll, bpd, z, xr, ref_ll, ref_eps, x, D):
    """glowrt's log_p, bpd, eps and decode(encode(x)) against the float64
    reference, with the tolerances of the module docstring; returns the list
    of failures and a one-line summary."""
    fails = []
    d_ll = np.abs(ll - ref_ll)
    tol = 1e-5 * np.abs(ref_ll) + 1e-3
    if not np.all(d_ll <= tol):
        i = int(np.argmax(d_ll - tol))
        fails.append("log_p[%d] %.6f vs %.6f" % (i, ll[i], ref_ll[i]))
    ref_bpd = -(ref_ll - D * math.log(256.0)) / (D * math.log(2.0))
    d_bpd = np.abs(bpd - ref_bpd)
    if not np.all(d_bpd <= tol / (D * math.log(2.0)) + 1e-5):
        fails.append("bpd max diff %.3g" % d_bpd.max())
    d_eps = float(np.abs(z.astype(np.float64) - ref_eps).max())
    if not d_eps <= 1e-4:
        fails.append("eps max diff %.3g" % d_eps)
    d_rt = float(np.abs(xr.astype(np.float64) - x).max())
    if not d_rt <= 1e-4:
        fails.append("roundtrip max diff %.3g" % d_rt)
    if not (np.all(np.isfinite(ll)) and np.all(np.isfinite(z)) and np.all(np.isfinite(xr))):
        fails.append("non-finite output")
    stats = "dlog_p %.2g (rel %.2g) deps %.2g droundtrip %.2g" % (
        d_ll.max(), (d_ll / np.abs(ref_ll)).max(), d_eps, d_rt)
    return fails, stats


def run_case(k, case, args, work):
    c, L, K, aff, lu, hid, H, W, n, b, t = case
    d = os.path.join(work, "case%02d" % k)
    os.makedirs(d, exist_ok=True)
    model = random_model(c, K, L, affine=aff, conv_lu=lu, hidden=hid, height=H, width=W,
                         seed=1000 + k)
    pt, gl = os.path.join(d, "model.pt"), os.path.join(d, "model.glow")
    torch.save(model.state_dict(), pt)
    rc = export.main(["rosinality", pt, "-o", gl, "--image-size", "%dx%d" % (H, W),
                      "--n-bits", "8", "-q", "--no-check"])
    if rc != 0:
        raise RuntimeError("export failed (exit %d)" % rc)
    g = np.random.default_rng(k)
    u = g.integers(0, 256, size=(n, c, H, W))
    x = (u / 256.0 - 0.5 + 0.5 / 256.0).astype(np.float32)
    xp, zp, xrp = (os.path.join(d, f) for f in ("x.npy", "z.npy", "xr.npy"))
    np.save(xp, x)

    md = model.double()
    with torch.no_grad():
        xt = torch.from_numpy(x.astype(np.float64))
        ref_ll = md.log_prob(xt).numpy()
        ref_eps = md.encode(xt).numpy()

    common = ["--batch", str(b), "--threads", str(t)]
    out = run_cli([args.glowrt, "score", gl, xp, "--format", "csv"] + common, args.timeout)
    ll, bpd = parse_score_csv(out, n)
    run_cli([args.glowrt, "encode", gl, xp, "-o", zp] + common, args.timeout)
    run_cli([args.glowrt, "decode", gl, zp, "-o", xrp] + common, args.timeout)
    z = np.load(zp)
    xr = np.load(xrp)
    D = c * H * W
    if z.dtype != np.float32 or z.shape != (n, D):
        raise RuntimeError("encode: got %s %s, want float32 %s" % (z.dtype, z.shape, (n, D)))
    if xr.dtype != np.float32 or xr.shape != x.shape:
        raise RuntimeError("decode: got %s %s, want float32 %s" % (xr.dtype, xr.shape, x.shape))

    return compare_outputs(ll, bpd, z, xr, ref_ll, ref_eps, x, D)


def run_cases(cases, run_one, describe_one, args, work):
    """run_one(k, case, args, work) -> (fails, stats) for each (k, case),
    one ok/FAIL line each (an exception is a failed case); (passed, failed)."""
    passed = failed = 0
    for k, case in cases:
        t0 = time.time()
        try:
            fails, stats = run_one(k, case, args, work)
        except Exception as e:  # noqa: BLE001 - report any failure as a failed case
            fails, stats = ["%s: %s" % (type(e).__name__, e)], ""
        dt = time.time() - t0
        if fails:
            failed += 1
            print("FAIL case%02d %s: %s  %s (%.1fs)" % (k, describe_one(case), "; ".join(fails), stats, dt),
                  flush=True)
        else:
            passed += 1
            print("ok   case%02d %s: %s (%.1fs)" % (k, describe_one(case), stats, dt), flush=True)
    return passed, failed


def export_quiet(argv):
    """export.main in this process: (exit code, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = export.main(argv)
    return rc, err.getvalue()


def check_refusal(k, argv, gl, word, timeout):
    """Exports with argv (the exporter's arguments, writing gl), which it must refuse: exit 2,
    one line on stderr containing word, no gl. Refusal k = 0 goes through the real command
    line (the exit status), the others run in this process. -> (ok, detail)."""
    if k == 0:
        r = subprocess.run([sys.executable, os.path.join(HERE, "..", "models", "export.py")] + argv,
                           capture_output=True, text=True, timeout=timeout)
        rc, err = r.returncode, r.stderr
    else:
        rc, err = export_quiet(argv)
    lines = err.strip().splitlines()
    ok = rc == 2 and len(lines) == 1 and word in lines[0] and not os.path.exists(gl)
    return ok, "exit %d: %s" % (rc, " | ".join(lines))


def exporter_suite_main(argv, doc, prefix, cases, run_one, describe_one, run_bad):
    """main() of an exporter's parity test: its cases through run_cases, then the
    refusals run_bad(args, work) gives as (name, ok, detail); exit status 1 on a failure."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glowrt", required=True, help="path of the glowrt CLI")
    ap.add_argument("--keep", metavar="DIR", help="keep the generated models and arrays in DIR")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per glowrt call")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not os.path.exists(args.glowrt):
        print("glowrt not found: %s" % args.glowrt, file=sys.stderr)
        return 2
    work = args.keep or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    try:
        passed, failed = run_cases(cases, run_one, describe_one, args, work)
        for name, ok, detail in run_bad(args, work):
            passed, failed = passed + ok, failed + (not ok)
            print("%s refuse %s: %s" % ("ok  " if ok else "FAIL", name, detail), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glowrt", required=True, help="path of the glowrt CLI")
    ap.add_argument("--keep", metavar="DIR", help="keep the generated models and arrays in DIR")
    ap.add_argument("--cases", help="comma-separated case numbers to run (default: all)")
    ap.add_argument("--small", action="store_true", help="skip the cases that split an image among threads "
                    "(emulated runs: they take minutes under qemu)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per glowrt call")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the reference")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not os.path.exists(args.glowrt):
        print("glowrt not found: %s" % args.glowrt, file=sys.stderr)
        return 2
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        work = args.keep
    else:
        work = tempfile.mkdtemp(prefix="glowrt-parity-")
    cases = CASES + ([] if args.small else CASES_LARGE)
    sel = range(len(cases)) if not args.cases else [int(s) for s in args.cases.split(",")]
    try:
        passed, failed = run_cases([(k, cases[k]) for k in sel], run_case, describe, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
