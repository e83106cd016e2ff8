#!/usr/bin/env python3
"""End-to-end checks of the glowrt CLI that the C unit tests cannot make:

  errors       every malformed input a user can produce ends with exit code 2
               and exactly one line on stderr naming the file, never a signal:
               models truncated at many offsets, flipped bytes, wrong magic,
               version or byte order, plans that contradict their tensors,
               corrupt or truncated PNG and JPEG, bad .npy files;
  determinism  score at --threads 1/2/4 and --batch 1/16 gives bit-identical
               log_p; sample with one seed gives bit-identical output at
               --threads 1/2/4 and --batch 1/7;
  memory       peak RSS minus the model's size grows by less than 6% of the
               model's growth between two models that differ only in depth
               (n_flow 8 and 32): the session's packed copy of the weights
               and the file pages left around them may exceed the file a
               little; activations must not grow with depth;
  inputs       legal but unusual inputs and options, with the shipped
               models/fmnist.glow: idx files in encode / interp / manipulate,
               option values that must be refused rather than reinterpreted,
               files that must be named in the one line of an error.

usage: cli_test.py --glowrt build/glowrt [--only errors,determinism,memory,inputs]
Ends with the line 'N passed, N failed'; exit code 1 if any failed.
"""
import argparse
import csv
import gzip
import io
import os
import stat
import struct
import subprocess
import tempfile

import numpy as np
import torch

from harness import PY, ROOT, check, export_random_model, finish, run


def make_model(tmp, name, n_flow=2, n_block=2, hidden=16, size=8, in_channel=3, seed=1):
    return export_random_model(os.path.join(tmp, name + ".glow"), in_channel, n_flow, n_block,
                               hidden, size, seed)


# ---- CRC32C, to forge files whose checksums are right but whose content is not
def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        t.append(c)
    return t


CRC_TABLE = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def reseal(buf):
    """Recomputes the header CRC of a .glow image (bytearray)."""
    meta_off, meta_size = struct.unpack_from("<QQ", buf, 40)
    crc = crc32c(bytes(buf[:124]) + bytes(buf[meta_off:meta_off + meta_size]))
    struct.pack_into("<I", buf, 124, crc)
    return buf


def plan_offset(buf):
    """Offset of the plan table inside the metadata section."""
    n_kv, n_t = struct.unpack_from("<II", buf, 28)
    p = 128

    def skip_str(p):
        (n,) = struct.unpack_from("<H", buf, p)
        return p + 2 + n

    for _ in range(n_kv):
        p = skip_str(p)
        typ = buf[p]
        p += 1
        p = p + 8 if typ in (1, 2) else skip_str(p)
    tensors = []
    for _ in range(n_t):
        p = skip_str(p)
        ndim = buf[p + 1]
        dims_at = p + 2
        p = dims_at + 8 * ndim + 8 + 8 + 4
        tensors.append((dims_at, ndim))
    return p, tensors


def expect_error(name, args, must_name=None, env=None):
    try:
        r = run(args, timeout=120, env=dict(os.environ, **env) if env else None)
    except subprocess.TimeoutExpired:
        check(name, False, "timed out")
        return
    lines = r.stderr.strip("\n").split("\n") if r.stderr.strip() else []
    ok = r.returncode == 2 and len(lines) == 1 and (must_name is None or must_name in lines[0])
    detail = "exit %d, stderr %r" % (r.returncode, r.stderr[:300])
    check(name, ok, detail)


def test_errors(glowrt, tmp):
    model = make_model(tmp, "err")
    data = bytearray(open(model, "rb").read())
    size = len(data)
    x = (np.random.RandomState(0).rand(2, 3, 8, 8).astype(np.float32) - 0.5)
    xin = os.path.join(tmp, "x.npy")
    np.save(xin, x)
    r = run([glowrt, "score", model, xin])
    check("valid model scores", r.returncode == 0 and r.stdout.count("\n") == 3, r.stderr)

    bad = os.path.join(tmp, "bad.glow")

    def write(b):
        with open(bad, "wb") as f:
            f.write(bytes(b))

    data_off = struct.unpack_from("<Q", data, 56)[0]
    offsets = sorted(set([0, 1, 7, 8, 15, 64, 127, 128, 129, 200, data_off - 1, data_off, data_off + 1, size - 1]
                         + [size * k // 17 for k in range(1, 17)]))
    for off in offsets:
        write(data[:off])
        expect_error("model truncated at %d of %d bytes" % (off, size), [glowrt, "score", bad, xin], bad)
    write(data + b"\0" * 10)
    expect_error("model with trailing bytes", [glowrt, "info", bad], bad)

    for off, what in [(3, "magic"), (20, "file size"), (130, "metadata"), (data_off - 200, "metadata tail")]:
        b = bytearray(data)
        b[off] ^= 0x40
        write(b)
        expect_error("flipped byte in %s (offset %d)" % (what, off), [glowrt, "info", bad], bad)
    for k in range(1, 6):  # flips inside tensor data: caught by the tensor CRCs
        off = data_off + (size - data_off) * k // 6
        b = bytearray(data)
        b[off] ^= 0x01
        write(b)
        expect_error("flipped byte in tensor data (offset %d), info --verify" % off, [glowrt, "info", "--verify", bad], bad)
        expect_error("flipped byte in tensor data (offset %d), score" % off, [glowrt, "score", bad, xin], bad)

    b = bytearray(data)
    b[0:8] = b"GGUF\0\0\0\0"
    write(b)
    expect_error("wrong magic", [glowrt, "info", bad], bad)
    b = bytearray(data)
    struct.pack_into("<H", b, 8, 2)
    write(reseal(b))
    expect_error("wrong major version", [glowrt, "info", bad], bad)
    b = bytearray(data)
    struct.pack_into(">I", b, 12, 0x01020304)
    write(reseal(b))
    expect_error("big-endian byte order", [glowrt, "info", bad], bad)
    b = bytearray(data)
    struct.pack_into("<I", b, 24, 48)
    write(reseal(b))
    expect_error("bad alignment", [glowrt, "info", bad], bad)
    b = bytearray(data)
    struct.pack_into("<I", b, 32, 0xFFFFFFF)
    write(reseal(b))
    expect_error("huge tensor count", [glowrt, "info", bad], bad)

    plan_at, tensors = plan_offset(data)
    # op 0 is SQUEEZE with C = 3: claim 4 channels
    b = bytearray(data)
    struct.pack_into("<q", b, plan_at + 8, 4)
    write(reseal(b))
    expect_error("plan channel count contradicts the input", [glowrt, "info", bad], bad)
    b = bytearray(data)
    struct.pack_into("<H", b, plan_at, 99)
    write(reseal(b))
    expect_error("unknown op code", [glowrt, "info", bad], bad)
    # a tensor whose dims contradict the plan (product kept, so nbytes still matches)
    for i, (dims_at, ndim) in enumerate(tensors):
        if ndim >= 2:
            d0, d1 = struct.unpack_from("<QQ", data, dims_at)
            if d0 != d1:
                b = bytearray(data)
                struct.pack_into("<QQ", b, dims_at, d1, d0)
                write(reseal(b))
                expect_error("tensor %d shape contradicts the plan" % i, [glowrt, "info", bad], bad)
                break
    # a tensor pointing outside the file
    dims_at, ndim = tensors[0]
    b = bytearray(data)
    struct.pack_into("<Q", b, dims_at + 8 * ndim, 1 << 40)
    write(reseal(b))
    expect_error("tensor offset outside the file", [glowrt, "info", bad], bad)
    expect_error("missing model file", [glowrt, "info", os.path.join(tmp, "nope.glow")], "nope.glow")
    expect_error("image size not divisible", [glowrt, "sample", model, "-n", "1", "--size", "10", "-o", os.path.join(tmp, "s.npy")])

    # inputs
    def bad_input(name, content, fname):
        p = os.path.join(tmp, fname)
        with open(p, "wb") as f:
            f.write(content)
        expect_error(name, [glowrt, "score", model, p], p)

    png = os.path.join(tmp, "ok.png")
    r = run([glowrt, "sample", model, "-n", "1", "-o", png])
    check("sample writes a png", r.returncode == 0 and os.path.exists(png), r.stderr)
    jpg = os.path.join(tmp, "ok.jpg")
    run([glowrt, "sample", model, "-n", "1", "--size", "32", "-o", jpg])
    pngb, jpgb = open(png, "rb").read(), open(jpg, "rb").read()
    r = run([glowrt, "score", model, png, jpg])
    check("the sampled png and jpg score", r.returncode == 0 and r.stdout.count("\n") == 3, r.stderr)
    for k in (8, 20, 40, len(pngb) // 2, len(pngb) - 5):
        bad_input("png truncated at %d" % k, pngb[:k], "t%d.png" % k)
    c = bytearray(pngb)
    c[len(c) // 2] ^= 0xFF
    bad_input("png with a corrupt chunk", bytes(c), "c.png")
    for k in (2, 10, 100, len(jpgb) // 2, len(jpgb) - 2):
        bad_input("jpeg truncated at %d" % k, jpgb[:k], "t%d.jpg" % k)
    # markers inside the entropy-coded scan: the decoder must not pad silently
    c = bytearray(jpgb)
    sos = jpgb.index(b"\xff\xda")
    for i in range(sos + 40, sos + 80):
        c[i] = 0xFF if i % 2 == 0 else 0xD9
    bad_input("jpeg with garbage in its scan", bytes(c), "c.jpg")
    bad_input("empty file", b"", "empty.png")
    bad_input("text file named .jpg", b"hello\n", "text.jpg")

    def npy(arr):
        import io
        f = io.BytesIO()
        np.save(f, arr)
        return f.getvalue()

    bad_input("npy float64 beyond float32's range", npy(np.full((1, 3, 8, 8), 1e300)), "f64big.npy")
    bad_input("npy big-endian float32", npy(x.astype(">f4")), "be.npy")
    bad_input("npy wrong channel count", npy(np.zeros((1, 2, 8, 8), np.float32)), "c2.npy")
    bad_input("npy 3-d float32", npy(np.zeros((3, 8, 8), np.float32)), "d3.npy")
    bad_input("npy image size not divisible", npy(np.zeros((1, 3, 6, 6), np.float32)), "s6.npy")
    full = npy(x)
    bad_input("npy truncated data", full[:len(full) - 7], "tr.npy")
    bad_input("npy truncated header", full[:20], "th.npy")
    bad_input("npy bad magic", b"\x93NUMPZ" + full[6:], "bm.npy")
    bad_input("npy fortran order", full.replace(b"'fortran_order': False", b"'fortran_order': True "), "fo.npy")
    bad_input("npy huge shape", full.replace(b"'shape': (2, 3, 8, 8)", b"'shape': (9999999999, 3, 8, 8)"), "hs.npy")
    bad_input("npy with NaN", npy(np.full((1, 3, 8, 8), np.nan, np.float32)), "nan.npy")
    # float64 arrays (numpy's default) are rounded to float32: same scores
    f64 = os.path.join(tmp, "x64.npy")
    np.save(f64, x.astype(np.float64))
    r64, r32 = run([glowrt, "score", model, f64]), run([glowrt, "score", model, xin])
    check("float64 .npy scores as its float32 rounding",
          r64.returncode == 0 and r64.stdout.replace(f64, xin) == r32.stdout,
          r64.stdout + r64.stderr)
    # float32 overflow is an error, never a score of -inf or latents of inf/NaN
    huge = os.path.join(tmp, "huge.npy")
    np.save(huge, np.concatenate([x[:1], np.full((1, 3, 8, 8), 1e30, np.float32)]))
    rh = run([glowrt, "score", model, huge])
    rows = list(csv.reader(io.StringIO(rh.stdout)))
    check("input far outside model space: its row carries the error, the other is scored (exit 3)",
          rh.returncode == 3 and len(rows) == 3 and rows[1][3] == "" and rows[2][1] == "" and
          "overflows float32" in rows[2][3], rh.stdout + rh.stderr)
    expect_error("encode of an input far outside model space", [glowrt, "encode", model, huge, "-o",
                                                                os.path.join(tmp, "e.npy")], huge)
    zbig = os.path.join(tmp, "zbig.npy")
    np.save(zbig, np.full((1, 3 * 8 * 8), 1e4, np.float32))
    expect_error("decode of latents far from the prior", [glowrt, "decode", model, zbig, "-o",
                                                          os.path.join(tmp, "d.npy")], zbig)
    # -o a pipe (or a device, /dev/stdout): written into, never replaced by a renamed temporary file
    fifo = os.path.join(tmp, "rows.fifo")
    os.mkfifo(fifo)
    for cmd in (["score", model, xin, "-o", fifo], ["encode", model, xin, "-o", fifo]):
        with subprocess.Popen(["cat", fifo], stdout=subprocess.PIPE) as reader:
            rf = run([glowrt] + cmd)
            try:
                got = reader.communicate(timeout=20)[0]
            except subprocess.TimeoutExpired:  # nothing ever opened the pipe for writing
                reader.kill()
                got = b""
        still_fifo = stat.S_ISFIFO(os.stat(fifo).st_mode)
        if not still_fifo:  # replaced: make it a pipe again for the next command
            os.remove(fifo)
            os.mkfifo(fifo)
        check("%s -o a named pipe writes into it and leaves it a pipe" % cmd[0],
              rf.returncode == 0 and len(got) > 0 and still_fifo and not os.path.exists(fifo + ".tmp"), rf.stderr)
    # -o a link (like /dev/stdout -> /proc/self/fd/1) with stdout redirected to a file:
    # the rows reach the file through the link, which stays a link
    link = os.path.join(tmp, "stdout-link")
    os.symlink("/proc/self/fd/1", link)
    redirected = os.path.join(tmp, "redirected.csv")
    with open(redirected, "w") as out:
        rl = subprocess.run([glowrt, "score", model, xin, "-o", link], stdout=out, stderr=subprocess.PIPE, text=True)
    check("score -o a link to stdout writes through it and leaves the link",
          rl.returncode == 0 and open(redirected).read().count("\n") == 3 and os.path.islink(link), rl.stderr)
    z = os.path.join(tmp, "z.npy")
    np.save(z, np.zeros((2, 100), np.float32))
    expect_error("latents of the wrong length", [glowrt, "decode", model, z, "-o", os.path.join(tmp, "d.npy")], z)
    expect_error("unknown option", [glowrt, "score", model, xin, "--bogus"])
    expect_error("session over the working-memory cap", [glowrt, "score", model, xin],
                 "GLOWRT_MAX_SESSION_BYTES", env={"GLOWRT_MAX_SESSION_BYTES": "1000"})
    expect_error("malformed working-memory cap", [glowrt, "sample", model, "-n", "1", "-o", os.path.join(tmp, "c.npy")],
                 "GLOWRT_MAX_SESSION_BYTES", env={"GLOWRT_MAX_SESSION_BYTES": "lots"})
    expect_error("bad thread count", [glowrt, "score", model, xin, "--threads", "0"])


def test_determinism(glowrt, tmp, small=False):
    # width 512 at 32x32 (~1 GFLOP per image): large enough that one image is
    # split among the threads (batch 1) and that oneDNN would split GEMMs;
    # --small (for emulated runs): width 512 at 16x16, ~0.07 GFLOP
    size = 16 if small else 32
    model = make_model(tmp, "det", n_flow=2 if small else 4, n_block=3, hidden=512, size=size)
    x = (np.random.RandomState(1).rand(16, 3, size, size).astype(np.float32) - 0.5)
    xin = os.path.join(tmp, "x16.npy")
    np.save(xin, x)
    outs = {}
    for t in (1, 2, 4):
        for b in (1, 16):
            r = run([glowrt, "score", model, xin, "--threads", str(t), "--batch", str(b)])
            outs[(t, b)] = r.stdout if r.returncode == 0 else "error: " + r.stderr
    ref = outs[(1, 1)]
    for k, v in outs.items():
        check("score threads=%d batch=%d bit-identical to threads=1 batch=1" % k, v == ref and v.count("\n") == 17)
    samples = {}
    for t in (1, 2, 4):
        for b in (1, 7):
            p = os.path.join(tmp, "s_%d_%d.npy" % (t, b))
            r = run([glowrt, "sample", model, "-n", "9", "--seed", "1234", "-t", "0.8", "--threads", str(t),
                     "--batch", str(b), "-o", p])
            samples[(t, b)] = open(p, "rb").read() if r.returncode == 0 else None
    ref = samples[(1, 1)]
    check("samples are finite", ref is not None and bool(np.isfinite(np.load(os.path.join(tmp, "s_1_1.npy"))).all()))
    for k, v in samples.items():
        check("sample threads=%d batch=%d bit-identical" % k, v is not None and v == ref)
    p = os.path.join(tmp, "s_other.npy")
    run([glowrt, "sample", model, "-n", "9", "--seed", "1235", "-t", "0.8", "-o", p])
    check("another seed gives other samples", open(p, "rb").read() != ref)
    # sample i of a larger draw is sample i of a smaller one
    p = os.path.join(tmp, "s_more.npy")
    run([glowrt, "sample", model, "-n", "12", "--seed", "1234", "-t", "0.8", "-o", p])
    a, b = np.load(p), np.load(os.path.join(tmp, "s_1_1.npy"))
    check("sample i does not depend on -n", np.array_equal(a[:9], b))


# The peak RSS of a process forked from this one would start at this
# process's own (torch is large): a small interpreter forks the child instead
# and reports the child's ru_maxrss in KiB.
RSS_PROBE = """
import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), ru.ru_maxrss)
"""


def peak_rss_kb(args):
    r = run([PY, "-S", "-c", RSS_PROBE] + args)
    rc, rss = r.stdout.split()
    return int(rc), int(rss)


def test_memory(glowrt, tmp):
    x = (np.random.RandomState(2).rand(4, 3, 32, 32).astype(np.float32) - 0.5)
    xin = os.path.join(tmp, "x32.npy")
    np.save(xin, x)
    net, msizes = {}, {}
    for k in (8, 32):
        model = make_model(tmp, "mem%d" % k, n_flow=k, n_block=3, hidden=256, size=32)
        rc, rss = peak_rss_kb([glowrt, "score", model, xin, "--threads", "1"])
        msize = msizes[k] = os.path.getsize(model) / 1024
        net[k] = rss - msize
        print("  n_flow %2d: model %.0f KiB, peak RSS %d KiB, RSS - model %.0f KiB" % (k, msize, rss, net[k]))
        check("memory run n_flow=%d" % k, rc == 0)
    # The session keeps its own packed copy of the weights (outputs padded to whole blocks) and gives
    # the file's pages back, but not every page: the partial pages at each tensor's ends, and what the
    # kernel's page-cache folios keep mapped around them. So RSS - model grows with depth a little,
    # 1.7-2.1 MiB here for 24 more steps (~80 KiB a step; the same before this test's bound changed).
    # One activation-sized buffer per step (256 KiB at 256 x 16 x 16) would add 6 MiB. (The old bound,
    # 10% of RSS - model, ~2 MiB, failed now and then on that alone: 10.8% in one CI run.)
    grew, allowed = net[32] - net[8], 0.06 * (msizes[32] - msizes[8])
    check("peak RSS minus model size grows by %.0f KiB (< %.0f KiB, 6%% of the model's growth) from n_flow 8 "
          "to 32" % (grew, allowed), grew < allowed)


def test_inputs(glowrt, tmp):
    m = os.path.join(ROOT, "models", "fmnist.glow")
    u = (np.random.RandomState(3).rand(2, 28, 28) * 255).astype(np.uint8)
    unpy = os.path.join(tmp, "u.npy")
    np.save(unpy, u)
    idx_data = struct.pack(">IIII", 0x803, 2, 28, 28) + u.tobytes()
    idx = os.path.join(tmp, "u-idx3-ubyte")
    open(idx, "wb").write(idx_data)
    idxgz = idx + ".gz"
    with gzip.open(idxgz, "wb") as f:
        f.write(idx_data)

    # idx files, which score reads, are inputs of encode, interp and manipulate too
    z_idx, z_npy = os.path.join(tmp, "zi.npy"), os.path.join(tmp, "zn.npy")
    r1 = run([glowrt, "encode", m, idx, idxgz, "-o", z_idx])
    r2 = run([glowrt, "encode", m, unpy, unpy, "-o", z_npy])
    check("encode of idx files (raw, gzipped) == encode of the same uint8 .npy",
          r1.returncode == 0 and r2.returncode == 0 and open(z_idx, "rb").read() == open(z_npy, "rb").read(),
          r1.stderr + r2.stderr)
    r = run([glowrt, "interp", m, idx, idxgz, "-n", "3", "-o", os.path.join(tmp, "i.npy")])
    check("interp between idx files", r.returncode == 0, r.stderr)
    r = run([glowrt, "manipulate", m, "--pos", idx, "--neg", idxgz, "--alpha", "0", idx, "-o",
             os.path.join(tmp, "mp.npy")])
    check("manipulate with idx files", r.returncode == 0, r.stderr)

    # --seed: blanks and signs are refused, not read by strtoull (" -5" would be 2^64 - 5)
    for bad in (" -5", "+5", " 5"):
        expect_error("--seed %r refused" % bad, [glowrt, "sample", m, "-n", "1", "--seed", bad, "-o",
                                                 os.path.join(tmp, "s.npy")], "--seed")
    # a temperature that underflows (strtod's ERANGE) is still a number in [0, 10]: 1e-320 is a
    # denormal double, float32 0, so the samples are those of -t 0; one that overflows is refused
    t0, tiny = os.path.join(tmp, "t0.npy"), os.path.join(tmp, "tiny.npy")
    r0 = run([glowrt, "sample", m, "-n", "2", "-t", "0", "-o", t0])
    for t in ("1e-320", "1e-400"):
        r = run([glowrt, "sample", m, "-n", "2", "-t", t, "-o", tiny])
        check("sample -t %s accepted: the samples of -t 0" % t, r0.returncode == 0 and r.returncode == 0 and
              open(tiny, "rb").read() == open(t0, "rb").read(), r.stderr)
    expect_error("sample -t 1e400 refused", [glowrt, "sample", m, "-n", "1", "-t", "1e400", "-o", tiny],
                 "not a number in [0, 10]")
    r = run([glowrt, "manipulate", m, "--pos", unpy, "--neg", unpy, "--alpha", "-1e-320", unpy, "-o",
             os.path.join(tmp, "mt.npy")])
    check("manipulate --alpha -1e-320 accepted", r.returncode == 0, r.stderr)
    # a threshold file whose score kind is unknown: the file is named, not an option never given
    thr = os.path.join(tmp, "thr.json")
    open(thr, "w").write('{"score": "bogus", "threshold": 9, "train_mean_bpd": 9}\n')
    expect_error("--threshold with an unknown score kind names the file", [glowrt, "score", m, unpy, "--threshold", thr],
                 thr)

    # usage errors: one line, the command named once ("glowrt info: info: ..." before)
    for cmd in ("info", "score", "encode", "decode", "sample", "bench", "calibrate", "eval", "interp", "manipulate"):
        r = run([glowrt, cmd])
        check("glowrt %s without arguments: one line, exit 2, no doubled prefix" % cmd,
              r.returncode == 2 and r.stderr.count("\n") == 1 and ("%s: %s:" % (cmd, cmd)) not in r.stderr, r.stderr)

    # eval: an empty CSV is an error naming it, not a file of no rows beside the others
    good, empty = os.path.join(tmp, "good.csv"), os.path.join(tmp, "empty.csv")
    open(good, "w").write("id,log_p,bpd,error\na,-1,2.5,\nb,-1,3.5,\n")
    open(empty, "w").close()
    expect_error("eval of an empty CSV names it", [glowrt, "eval", "--in", good, "--out", good, empty], empty)

    # an output in a missing directory fails before the work (here: before reading an input that
    # would fail), not after it; image outputs that are directories are still created with parents
    junk = os.path.join(tmp, "junk.png")
    open(junk, "wb").write(b"\x89PNG\r\n\x1a\n junk")
    nodir = os.path.join(tmp, "missing", "sub")
    for cmd in (["encode", m, junk, "-o", nodir + "/z.npy"], ["decode", m, junk, "-o", nodir + "/d.png"],
                ["interp", m, junk, junk, "-o", nodir + "/i.png"], ["calibrate", m, "--in", junk, "-o", nodir + "/t.json"],
                ["manipulate", m, "--pos", junk, "--neg", junk, junk, "-o", nodir + "/m.npy"],
                ["eval", "--in", junk, "--out", junk, "--plot", nodir + "/p.png"]):
        expect_error("%s -o into a missing directory: refused first" % cmd[0], [glowrt] + cmd, nodir)
    r = run([glowrt, "sample", m, "-n", "2", "-o", nodir + "/samples"])
    check("sample -o a new directory (no extension) creates it with its parents",
          r.returncode == 0 and sorted(os.listdir(nodir + "/samples")) == ["000000.png", "000001.png"], r.stderr)

    # encode -o an image name would write a .npy array under it (over an input of that name, even):
    # refused before the work; a pipe of that name is still written into, a name without an extension
    # still gets the array
    one = os.path.join(tmp, "one.png")
    r = run([glowrt, "sample", m, "-n", "1", "-o", one])
    before = open(one, "rb").read() if r.returncode == 0 else None
    for out in (one, os.path.join(tmp, "z.jpg"), os.path.join(tmp, "z.JPEG")):
        expect_error("encode -o %s refused" % os.path.basename(out), [glowrt, "encode", m, one, "-o", out],
                     out + ": encode writes latents as a .npy array")
    check("encode -o its own input image leaves the image as it was",
          before is not None and open(one, "rb").read() == before and not os.path.exists(os.path.join(tmp, "z.jpg")))
    pipe = os.path.join(tmp, "lat.png")
    os.mkfifo(pipe)
    with subprocess.Popen(["cat", pipe], stdout=subprocess.PIPE) as reader:
        rp = run([glowrt, "encode", m, unpy, "-o", pipe])
        try:
            got = reader.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            reader.kill()
            got = b""
    check("encode -o a named pipe called lat.png writes the array into it",
          rp.returncode == 0 and got.startswith(b"\x93NUMPY"), rp.stderr)
    noext = os.path.join(tmp, "latents")
    r = run([glowrt, "encode", m, unpy, "-o", noext])
    check("encode -o a name without an extension writes the array",
          r.returncode == 0 and np.load(noext, allow_pickle=False).shape == (2, 784), r.stderr)

    # a .png/.jpg grid or strip too large to write (over 16384 px a side) is refused before any work:
    # with a session cap of 1000 bytes, whatever computes would fail first with the cap's message
    cap = {"GLOWRT_MAX_SESSION_BYTES": "1000"}
    zwide = os.path.join(tmp, "zwide.npy")
    np.save(zwide, np.zeros((2, 32 * 8192), np.float32))   # two 32x8192 images: a grid 16386 wide
    grid_msg = "would be 16386x32 (max 16384x16384)"
    for ext in ("png", "jpg"):
        out = os.path.join(tmp, "wide." + ext)
        expect_error("decode to a %s grid too wide: refused before the work" % ext,
                     [glowrt, "decode", m, zwide, "--size", "32x8192", "-o", out], grid_msg, env=cap)
        expect_error("sample to a %s grid too wide: refused before the work" % ext,
                     [glowrt, "sample", m, "-n", "2", "--size", "32x8192", "-o", out], grid_msg, env=cap)
        check("no %s written" % out, not os.path.exists(out))
    expect_error("sample -n 300000 to a png grid: refused before the work",
                 [glowrt, "sample", m, "-n", "300000", "-o", os.path.join(tmp, "many.png")],
                 "grid of 300000 samples would be", env=cap)
    # interp: a strip of 1000 28-pixel images is 29998 wide; refused before B is read (B is junk here)
    expect_error("interp to a strip too wide: refused before B and the decoding",
                 [glowrt, "interp", m, unpy, junk, "-n", "1000", "-o", os.path.join(tmp, "strip.png")],
                 "image size 29998x28 too large (max 16384x16384)")

    # a newline in a file name does not split the one line of an error
    nl = os.path.join(tmp, "new\nline")
    os.mkdir(nl)
    np.save(os.path.join(nl, "z.npy"), np.zeros((1, 5), np.float32))
    np.save(os.path.join(nl, "big.npy"), np.full((1, 1, 28, 28), 1e30, np.float32))
    expect_error("decode of latents of the wrong length, a newline in the path: one line",
                 [glowrt, "decode", m, os.path.join(nl, "z.npy"), "-o", os.path.join(tmp, "d.npy")], "z.npy")
    # latents of the wrong shape: the message says which shape they have, and which they need
    for shape, got in (((3, 700), "[3, 700]"), ((784,), "[784]"), ((2, 1, 28, 28), "[2, 1, 28, 28]")):
        zw = os.path.join(tmp, "zw.npy")
        np.save(zw, np.zeros(shape, np.float32))
        expect_error("decode of latents %s names that shape and [N, 784]" % got,
                     [glowrt, "decode", m, zw, "-o", os.path.join(tmp, "d.npy")],
                     "latents are %s, need [N, 784] for 28x28 images" % got)
    r = run([glowrt, "score", m, os.path.join(nl, "big.npy"), unpy])
    check("score: the overflow of an input with a newline in its path is one line on stderr",
          r.returncode == 3 and r.stderr.count("\n") == 1 and "overflows" in r.stderr, r.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glowrt", required=True)
    ap.add_argument("--only", default="errors,determinism,memory,inputs")
    ap.add_argument("--small", action="store_true", help="a smaller model for determinism (emulated runs)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    glowrt = os.path.abspath(a.glowrt)
    with tempfile.TemporaryDirectory() as tmp:
        for part in a.only.split(","):
            print("== " + part, flush=True)
            if part == "determinism":
                test_determinism(glowrt, tmp, a.small)
            else:
                {"errors": test_errors, "memory": test_memory, "inputs": test_inputs}[part](glowrt, tmp)
    finish()


if __name__ == "__main__":
    main()
