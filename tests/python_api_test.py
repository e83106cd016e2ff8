#!/usr/bin/python3
"""python/glowrt.py (ctypes over libglowrt.so) against the glowrt CLI and the PyTorch reference.

    /usr/bin/python3 tests/python_api_test.py --glowrt build/glowrt [--lib build/libglowrt.so]

On two small random Glows (RGB 8x8 at 8 bits; grey 8x16, additive, at 5 bits):
  - the CLI (score, encode, decode, sample, uint8 pixel inputs, PNG output):
    the same bits (score's printed digits) from the same C code;
  - the float64 PyTorch model (models/glow.py) with tests/parity.py's
    tolerances: |dlog_p| <= 1e-5 |log_p| + 1e-3, |deps| <= 1e-4, and
    decode(encode(x)) within 1e-4 of x;
  - sampling determinism (same seed, same bits; rows of sample(4) are
    sample(1, first_index=i)), batch splitting (N > batch) and threads
    (sessions in parallel threads, one session shared by two): the same bits;
  - the error paths (missing, truncated, corrupt model; wrong shape, dtype,
    NaN; overflow; closed objects; a library that cannot load): the right
    exception with a one-line message, never a crash.
Prints PASS/FAIL per check, then 'N passed, N failed'; exit 1 if any failed.
"""
import argparse
import csv
import gc
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import numpy as np

try:
    from PIL import Image  # the CLI's PNGs read back (the check is skipped without Pillow)
except ImportError:
    Image = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from harness import check, finish, run  # noqa: E402  (puts models/ on sys.path)

import torch  # noqa: E402

import export  # noqa: E402
from glow import random_model  # noqa: E402
from parity import compare_outputs  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--glowrt", required=True, help="the glowrt CLI")
ap.add_argument("--lib", help="libglowrt.so (default: beside the CLI)")
args = ap.parse_args()
LIB = os.path.abspath(args.lib or os.path.join(os.path.dirname(args.glowrt), "libglowrt.so"))
if not os.path.exists(LIB):
    sys.exit("no %s (configure with -DGLOWRT_SHARED=ON)" % LIB)
os.environ["GLOWRT_LIB"] = LIB
sys.path.insert(0, os.path.join(ROOT, "python"))
import glowrt  # noqa: E402

torch.set_num_threads(1)
work = tempfile.mkdtemp(prefix="glowrt-pyapi-")


def cli(*argv):
    r = run([args.glowrt] + [str(a) for a in argv], timeout=120)
    if r.returncode != 0:
        raise RuntimeError("glowrt %s exited %d: %s" % (argv[0], r.returncode, r.stderr.strip()))
    return r.stdout


def make(name, c, K, L, affine, lu, hidden, H, W, n_bits, seed):
    """A random Glow exported to WORK/NAME.glow; returns (path, the float64 torch model)."""
    m = random_model(c, K, L, affine=affine, conv_lu=lu, hidden=hidden, height=H, width=W, seed=seed)
    pt, gl = os.path.join(work, name + ".pt"), os.path.join(work, name + ".glow")
    torch.save(m.state_dict(), pt)
    if export.main(["rosinality", pt, "-o", gl, "--image-size", "%dx%d" % (H, W), "--n-bits", str(n_bits),
                    "-q", "--no-check"]) != 0:
        sys.exit("export failed")
    return gl, m.double()


def save(name, a):
    p = os.path.join(work, name)
    np.save(p, a)
    return p


def raises(name, exc, fn, *a, **kw):
    """Checks that fn(*a, **kw) raises exc with a non-empty one-line message; returns the message."""
    try:
        fn(*a, **kw)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        check(name, isinstance(e, exc) and msg and "\n" not in msg, "%s: %r" % (type(e).__name__, msg))
        return msg
    check(name, False, "no exception")
    return ""


def reference(model, x):
    with torch.no_grad():
        xt = torch.from_numpy(x.astype(np.float64))
        return model.log_prob(xt).numpy(), model.encode(xt).numpy()


try:
    rgb_path, rgb_ref = make("rgb", 3, 2, 2, True, True, 16, 8, 8, 8, 11)
    grey_path, grey_ref = make("grey", 1, 1, 2, False, False, 16, 8, 16, 5, 12)
    g = np.random.default_rng(0)

    # --- the models' description
    m = glowrt.Model(rgb_path, verify=True)
    mg = glowrt.Model(grey_path)
    check("Model info (RGB)", (m.in_channels, m.height, m.width, m.n_levels, m.n_bits, m.dim) == (3, 8, 8, 2, 8, 192),
          repr(m))
    check("Model.info", m.info == dict(in_channels=3, height=8, width=8, n_bits=8, n_levels=2, n_steps=m.n_steps,
                                        n_params=m.n_params, dim=192) and m.n_steps > 0 and m.n_params > 0, m.info)
    check("Model info (grey)", (mg.in_channels, mg.height, mg.width, mg.n_levels, mg.n_bits, mg.dim) ==
          (1, 8, 16, 2, 5, 128), repr(mg))
    check("library in use", os.path.realpath(glowrt.library_path()) == os.path.realpath(LIB) and
          glowrt.isa() in ("ref", "avx2", "neon"), "%s %s" % (glowrt.library_path(), glowrt.isa()))

    # --- pixels <-> model space: the README's formula, then the CLI's own mapping below
    u = np.arange(256, dtype=np.uint8).reshape(1, 1, 256)
    ok = True
    for nb in range(1, 9):
        want = (np.floor(np.arange(256) / 2 ** (8 - nb)) / 2 ** nb - 0.5 + 0.5 / 2 ** nb).astype(np.float32)
        x = glowrt.pixels_to_model(u, nb)
        back = glowrt.model_to_pixels(x, nb)
        ok &= x.dtype == np.float32 and x.shape == (1, 1, 1, 256) and np.array_equal(x[0, 0, 0], want)
        ok &= back.shape == (1, 1, 256, 1) and np.array_equal(back[0, 0, :, 0], (np.arange(256) >> (8 - nb)) << (8 - nb))
    check("pixels_to_model = README formula, model_to_pixels inverts it (n_bits 1..8)", ok)

    # --- the RGB model: torch float64 reference, the CLI, batch splitting
    n = 7
    u = g.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    x = glowrt.pixels_to_model(u, 8)
    s3 = glowrt.Session(m, batch=3, threads=2)  # 7 images: pieces of 3, 3, 1
    ll, bpd = s3.log_prob(x), s3.bpd(x)
    z, ll2 = s3.encode(x)
    xr = s3.decode(z)
    ref_ll, ref_eps = reference(rgb_ref, x)
    fails, stats = compare_outputs(ll, bpd, z, xr, ref_ll, ref_eps, x.astype(np.float64), m.dim)
    check("RGB vs torch float64 (log_p, bpd, eps, round trip): " + stats, not fails, "; ".join(fails))
    check("encode's log_p = log_prob's; dtypes and shapes", np.array_equal(ll, ll2) and
          ll.dtype == np.float64 and z.dtype == np.float32 and z.shape == (n, 192) and
          xr.dtype == np.float32 and xr.shape == (n, 3, 8, 8))
    s16, s1 = glowrt.Session(m), glowrt.Session(m, batch=1, threads=1)
    same = True
    for s in (s16, s1):
        zz, ll3 = s.encode(x)
        same &= np.array_equal(zz, z) and np.array_equal(ll3, ll) and np.array_equal(s.log_prob(x), ll)
        same &= np.array_equal(s.decode(z), xr)
    check("batch 3 (split) = batch 16 = batch 1 (threads 2/0/1): same bits", same)
    check("float64 and list inputs are rounded to float32 like the CLI",
          np.array_equal(s16.log_prob(x.astype(np.float64)), ll) and np.array_equal(s16.log_prob(x.tolist()), ll))

    xp = save("x.npy", x)
    rows = list(csv.reader(io.StringIO(cli("score", rgb_path, xp, "--format", "csv", "--threads", 1))))[1:]
    check("score: log_p and bpd print as the CLI's (%.10g, %.8g)",
          [r[1:3] for r in rows] == [["%.10g" % a, "%.8g" % b] for a, b in zip(ll, bpd)], rows[:2])
    cli("encode", rgb_path, xp, "-o", os.path.join(work, "z.npy"), "--batch", 2)
    zc = np.load(os.path.join(work, "z.npy"))
    check("encode: CLI's eps bit-identical", np.array_equal(zc, z))
    cli("decode", rgb_path, os.path.join(work, "z.npy"), "-o", os.path.join(work, "xr.npy"))
    check("decode: CLI's images bit-identical", np.array_equal(np.load(os.path.join(work, "xr.npy")), xr))
    cli("sample", rgb_path, "-n", 7, "-t", 0.6, "--seed", 9, "-o", os.path.join(work, "s.npy"))
    check("sample (7 on batch 3): CLI's bit-identical",
          np.array_equal(np.load(os.path.join(work, "s.npy")), s3.sample(7, temperature=0.6, seed=9)))
    ok = True
    for name, uu, c in (("rgb", u, None), ("grey", u[..., 0], 3), ("rgba", g.integers(0, 256, (n, 8, 8, 4), np.uint8), None)):
        cli("encode", rgb_path, save("u_%s.npy" % name, uu), "-o", os.path.join(work, "zu.npy"))
        ok &= np.array_equal(np.load(os.path.join(work, "zu.npy")), s16.encode(glowrt.pixels_to_model(uu, 8, c))[0])
    check("uint8 [N,H,W,3], [N,H,W] (channels=3) and [N,H,W,4] pixels: the CLI's eps", ok)
    if Image is not None:
        cli("decode", rgb_path, os.path.join(work, "z.npy"), "-o", os.path.join(work, "png_rgb"))
        px = glowrt.model_to_pixels(xr, 8)
        check("model_to_pixels = the CLI's PNGs (RGB)", all(np.array_equal(
            np.asarray(Image.open(os.path.join(work, "png_rgb", "%06d.png" % i))), px[i]) for i in range(n)))

    # --- the grey 5-bit model: luma, 5-bit bins, non-square
    ug = g.integers(0, 256, size=(64, 8, 16, 3), dtype=np.uint8)  # 8192 pixels: luma rounding shows
    sg = glowrt.Session(mg, batch=24, threads=1)
    xg = glowrt.pixels_to_model(ug, 5, channels=1)
    zg, llg = sg.encode(xg)
    cli("encode", grey_path, save("ug.npy", ug), "-o", os.path.join(work, "zg.npy"))
    check("grey model, RGB pixels -> luma at 5 bits: CLI's eps", np.array_equal(np.load(os.path.join(work, "zg.npy")), zg))
    ref_ll, ref_eps = reference(grey_ref, xg)
    xgr = sg.decode(zg)
    D = mg.dim
    check("grey vs torch float64 (log_p, eps, round trip, bpd at 5 bits)",
          np.all(np.abs(llg - ref_ll) <= 1e-5 * np.abs(ref_ll) + 1e-3) and np.abs(zg - ref_eps).max() <= 1e-4 and
          np.abs(xgr - xg).max() <= 1e-4 and
          np.allclose(sg.bpd(xg), -(llg - D * np.log(32.0)) / (D * np.log(2.0)), rtol=0, atol=1e-12))
    if Image is not None:
        cli("decode", grey_path, save("zg2.npy", zg), "-o", os.path.join(work, "png_grey"))
        pg = glowrt.model_to_pixels(xgr, 5)
        check("model_to_pixels = the CLI's PNGs (grey, 5 bits)", pg.shape == (64, 8, 16, 1) and all(np.array_equal(
            np.asarray(Image.open(os.path.join(work, "png_grey", "%06d.png" % i))), pg[i, :, :, 0]) for i in range(64)))

    # --- sampling determinism
    a = s3.sample(4, seed=5)
    check("sample: same seed, same bits; another seed differs",
          np.array_equal(a, s3.sample(4, seed=5)) and np.array_equal(a, s1.sample(4, seed=5)) and
          not np.array_equal(a, s3.sample(4, seed=6)))
    check("sample(4) rows = sample(1, first_index=i)",
          all(np.array_equal(a[i:i + 1], s16.sample(1, seed=5, first_index=i)) for i in range(4)) and
          np.array_equal(a[2:], s3.sample(2, seed=5, first_index=2)))
    check("sample(0) is empty", s3.sample(0).shape == (0, 3, 8, 8))
    last = (1 << 64) - 1
    check("sample number 2^64 - 1 (the stream's last) can be drawn",
          np.array_equal(s3.sample(1, seed=5, first_index=last), s3.sample(2, seed=5, first_index=last - 1)[1:]))
    raises("samples past 2^64 - 1 -> ValueError", ValueError, s3.sample, 2, seed=5, first_index=last)

    # --- threads: a session per thread, and one session shared (serialised)
    out = {}

    def work_fn(key, sess):
        out[key] = (sess.log_prob(x), sess.encode(x)[0], sess.sample(5, seed=3))

    ts = [threading.Thread(target=work_fn, args=(k, ss)) for k, ss in
          (("a", glowrt.Session(m, batch=2, threads=1)), ("b", glowrt.Session(m, batch=4, threads=1)),
           ("c", s3), ("d", s3))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    want = (ll, z, s16.sample(5, seed=3))
    check("4 threads (own sessions, and one shared): same bits",
          all(k in out and all(np.array_equal(p, q) for p, q in zip(out[k], want)) for k in "abcd"))

    # --- errors: the right exception, one line, no crash
    msg = raises("missing file -> Error", glowrt.Error, glowrt.Model, os.path.join(work, "nope.glow"))
    check("  ... naming the file", "nope.glow" in msg, msg)
    data = open(rgb_path, "rb").read()
    for k, cut in (("header", 40), ("half", len(data) // 2), ("last byte", len(data) - 1)):
        p = os.path.join(work, "trunc.glow")
        open(p, "wb").write(data[:cut])
        raises("truncated model (%s) -> Error" % k, glowrt.Error, glowrt.Model, p)
    p = os.path.join(work, "corrupt.glow")
    bad = bytearray(data)
    bad[len(data) - 8] ^= 0x40
    open(p, "wb").write(bytes(bad))
    raises("corrupt tensor, verify=True -> Error", glowrt.Error, glowrt.Model, p, verify=True)
    raises("a directory -> Error", glowrt.Error, glowrt.Model, work)
    raises("image size not a multiple of 2^levels -> Error", glowrt.Error, glowrt.Session, m, height=10, width=8)
    check("dim_at(16, 8) = 3*16*8", m.dim_at(16, 8) == 384)
    raises("dim_at(2^32 + 8, 8) -> ValueError (not the dim at 8x8)", ValueError, m.dim_at, (1 << 32) + 8, 8)
    u1 = np.zeros((1, 2, 2), np.uint8)
    raises("pixels_to_model channels=3.5 -> ValueError", ValueError, glowrt.pixels_to_model, u1, 8, channels=3.5)
    raises("n_bits=True -> ValueError (a bool is not an integer)", ValueError, glowrt.pixels_to_model, u1, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's float32 overflow warning would raise here
        check("model_to_pixels of 1e300 -> 255, no warning",
              glowrt.model_to_pixels(np.full((1, 1, 1, 1), 1e300), 8)[0, 0, 0, 0] == 255)
    raises("dim_at(-8, 8) -> ValueError (not a negative dim)", ValueError, m.dim_at, -8, 8)
    raises("dim_at(6, 8) -> Error (not a multiple of 2^levels)", glowrt.Error, m.dim_at, 6, 8)
    raises("batch 0 -> ValueError", ValueError, glowrt.Session, m, batch=0)
    raises("batch 2.5 -> ValueError", ValueError, glowrt.Session, m, batch=2.5)
    raises("one image without N -> ValueError", ValueError, s3.log_prob, x[0])
    raises("wrong channels -> ValueError", ValueError, s3.log_prob, np.zeros((2, 1, 8, 8), np.float32))
    raises("wrong size -> ValueError", ValueError, s3.encode, np.zeros((2, 3, 16, 16), np.float32))
    raises("eps of the wrong D -> ValueError", ValueError, s3.decode, np.zeros((2, 191), np.float32))
    raises("uint8 pixels to log_prob -> ValueError", ValueError, s3.log_prob, u.transpose(0, 3, 1, 2))
    raises("strings -> ValueError", ValueError, s3.log_prob, [["a"]])
    xn = x.copy()
    xn[5, 1, 2, 3] = np.nan
    msg = raises("NaN input -> ValueError", ValueError, s3.log_prob, xn)
    check("  ... naming the image", "image 5" in msg, msg)
    raises("inf in eps -> ValueError", ValueError, s3.decode, np.where(np.arange(192) == 7, np.inf, z))
    raises("float64 beyond float32 -> ValueError", ValueError, s3.log_prob, np.full((1, 3, 8, 8), 1e300))
    xh = x.copy()
    xh[4] = 1e30
    msg = raises("encode, latents overflow -> Error", glowrt.Error, s3.encode, xh)
    check("  ... naming the batch and the image", "items 3..5" in msg and "image 1" in msg, msg)
    lp = s3.log_prob(xh)
    check("log_prob overflow: -inf/NaN, not an exception", lp.shape == (n,) and not np.isfinite(lp[4]) and
          np.array_equal(lp[:4], ll[:4]), lp)
    raises("decode, output overflows -> Error", glowrt.Error, s3.decode, np.full((2, 192), 1e30, np.float32))
    raises("temperature 11 -> ValueError", ValueError, s3.sample, 2, temperature=11)
    raises("seed -1 -> ValueError", ValueError, s3.sample, 2, seed=-1)
    raises("n = -1 -> ValueError", ValueError, s3.sample, -1)
    raises("pixels of dtype float -> ValueError", ValueError, glowrt.pixels_to_model, x, 8)
    raises("pixels [N,C,H,W] with C=3 -> ValueError", ValueError, glowrt.pixels_to_model, u.transpose(0, 3, 1, 2), 8)
    raises("n_bits 9 -> ValueError", ValueError, glowrt.pixels_to_model, u, 9)

    # --- the C pixel maps refuse what they cannot address (n*h*w*c overflowing int64 or the
    # address space, NULL buffers) before touching the buffers; in a subprocess: a crash if not
    code = """import ctypes, glowrt
lib = glowrt._load()
u8, f32, err = (ctypes.c_uint8 * 4)(), (ctypes.c_float * 4)(), ctypes.create_string_buffer(512)
U8, F32 = ctypes.cast(u8, glowrt._u8p), ctypes.cast(f32, glowrt._f32p)
for n, h, w, c in ((1 << 20, 1 << 22, 1 << 22, 1), (1, 1 << 31, 1 << 31, 3), (1 << 40, 1 << 10, 1 << 10, 3),
                   (1 << 62, 1, 1, 4), (1, 1 << 62, 2, 1)):
    print(lib.glowrt_pixels_to_model(U8, n, h, w, c, 1 if c == 1 else 3, 8, F32, err), err.value.decode())
    print(lib.glowrt_model_to_pixels(F32, n, c, h, w, 8, U8, err), err.value.decode())
print(lib.glowrt_pixels_to_model(None, 1, 1, 1, 1, 1, 8, F32, err), err.value.decode())
print(lib.glowrt_pixels_to_model(U8, 1, 1, 1, 1, 1, 8, None, err), err.value.decode())
print(lib.glowrt_model_to_pixels(None, 1, 1, 1, 1, 8, U8, err), err.value.decode())
print(lib.glowrt_model_to_pixels(F32, 1, 1, 1, 1, 8, None, err), err.value.decode())
for args in ((-1, 1, 1, 1, 1, 8), (1, 0, 1, 1, 1, 8), (1, 1, 1, 2, 1, 8), (1, 1, 1, 3, 2, 8), (1, 1, 1, 1, 1, 0),
             (1, 1, 1, 1, 1, 9)):
    print(lib.glowrt_pixels_to_model(U8, *args[:5], args[5], F32, err), err.value.decode())
for n, c, h, w, nb in ((-1, 1, 1, 1, 8), (1, 0, 1, 1, 8), (1, 1, 0, 1, 8), (1, 1, 1, -5, 8), (1, 1, 1, 1, 9)):
    print(lib.glowrt_model_to_pixels(F32, n, c, h, w, nb, U8, err), err.value.decode())
print(lib.glowrt_pixels_to_model(None, 0, 5, 5, 3, 3, 8, None, err), lib.glowrt_model_to_pixels(None, 0, 3, 5, 5, 8, None, err))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    lines = r.stdout.splitlines()
    check("C pixel maps: n*h*w*c overflow, NULL buffers, n/h/w/channels/n_bits out of range -> 1 and a message",
          r.returncode == 0 and len(lines) == 26 and all(ln.startswith("1 ") and ("pixels" in ln) for ln in lines[:-1])
          and lines[-1] == "0 0", "exit %d: %s %s" % (r.returncode, lines, r.stderr.strip()[-300:]))

    # --- lifetimes: a session keeps its model; close() closes; GC frees
    tmp_s = glowrt.Session(glowrt.Model(rgb_path), batch=2)
    gc.collect()
    check("a session keeps its model alive", np.array_equal(tmp_s.log_prob(x), ll))
    del tmp_s
    gc.collect()
    with glowrt.Model(rgb_path) as mc:
        sc = glowrt.Session(mc, batch=2)
    check("model closed at the end of with", mc.closed)
    raises("session of a closed model -> ValueError", ValueError, sc.log_prob, x)
    raises("new session on a closed model -> ValueError", ValueError, glowrt.Session, mc)
    s1.close()
    s1.close()
    raises("closed session -> ValueError", ValueError, s1.sample, 1)

    # --- Model.close() while another thread is inside verify() or creating a session: close waits
    # for the call, later ones are refused (a crash in a subprocess, not here, if not)
    code = """import sys, threading, glowrt
for it in range(300):
    m = glowrt.Model(sys.argv[1])
    def busy(m=m):
        try:
            while True:
                m.verify()
                glowrt.Session(m, batch=1, threads=1)
        except ValueError:
            pass
    t = threading.Thread(target=busy)
    t.start()
    m.close()
    t.join()
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code, rgb_path], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    check("Model.close() racing verify() / Session() in another thread: no crash",
          r.returncode == 0 and r.stdout.strip() == "ok", "exit %d %s" % (r.returncode, r.stderr.strip()[-300:]))

    # --- interpreter exit while a daemon thread is inside a session's call: the finalizers wait for it
    code = """import sys, threading, time, glowrt
m = glowrt.Model(sys.argv[1])
s = glowrt.Session(m, batch=8, threads=1)
x = s.sample(8)
def busy():
    while True:
        s.log_prob(x)
        m.verify()
threading.Thread(target=busy, daemon=True).start()
time.sleep(0.3)
"""
    bad = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code, rgb_path], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
        if r.returncode != 0:
            bad.append("exit %d" % r.returncode)
    check("interpreter exit with a daemon thread inside log_prob/verify: no crash", not bad, bad)

    # --- a library that cannot load: glowrt.Error, exit 1, no signal
    code = "import glowrt\ntry:\n    glowrt.Model(%r)\nexcept glowrt.Error as e:\n    print(e)\n" % rgb_path
    env = dict(os.environ, GLOWRT_LIB=os.path.join(work, "missing", "libglowrt.so"),
               PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    check("GLOWRT_LIB not loadable -> Error naming it", r.returncode == 0 and "cannot load libglowrt.so" in r.stdout
          and "missing" in r.stdout and len(r.stdout.strip().splitlines()) == 1, r.stdout + r.stderr)
    m.close()
    mg.close()
finally:
    shutil.rmtree(work, ignore_errors=True)
finish()
