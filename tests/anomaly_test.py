#!/usr/bin/env python3
"""End-to-end checks of glowrt score at scale and the anomaly commands:

  idx          idx-ubyte files (raw and gzipped) score like the same pixels
               as a uint8 .npy; ids are PATH[i]; bad idx files are error rows
  stdin        '-' reads paths (and directories) from stdin
  shard        --shard i/n for n = 1..4: the shards partition the input
               exactly (union == all rows, disjoint) and each row's values
               equal the unsharded run's
  nothing_lost a directory with one corrupt file: every other row is there,
               one error row, one line on stderr, exit 3 (jsonl too); all
               inputs failing: exit 2
  signal       SIGTERM / SIGINT while waiting for more paths on stdin: exit
               143 / 130, complete rows only (FILE.partial with -o)
  scores       --score bpd|typicality|complexity columns, calibrate +
               --threshold: the flag rate on the calibration set <= fpr
  eval         metrics from CSVs equal metrics from images (--model), the
               plot PNG exists with the documented size
  interp       strip shapes; endpoints decode back to the inputs (1e-3)
  manipulate   output shape; alpha 0 gives back the images (1e-3)

usage: anomaly_test.py --glowrt build/glowrt [--only idx,shard,...]
Ends with the line 'N passed, N failed'; exit code 1 if any failed.
"""
import argparse
import gzip
import json
import os
import signal
import struct
import subprocess
import tempfile
import time

import numpy as np
import torch

from harness import check, export_random_model, finish, run


def make_model(tmp, name, in_channel=1, size=8, seed=1):
    return export_random_model(os.path.join(tmp, name + ".glow"), in_channel, 2, 2, 16, size, seed)


def idx_bytes(u):
    n, h, w = u.shape
    return struct.pack(">IIII", 0x803, n, h, w) + u.astype(np.uint8).tobytes()


def parse_csv(text):
    """rows of glowrt score's CSV -> (header, {id: fields}) ; ids are unique here"""
    import csv
    import io
    rows = list(csv.reader(io.StringIO(text)))
    return (rows[0], rows[1:]) if rows else ([], [])


class Ctx:
    pass


def setup(glowrt, tmp):
    c = Ctx()
    c.g = glowrt
    c.tmp = tmp
    c.model = make_model(tmp, "m1")
    r = np.random.RandomState(0)
    c.u = (r.rand(23, 8, 8) * 255).astype(np.uint8)
    c.unpy = os.path.join(tmp, "u.npy")
    np.save(c.unpy, c.u)
    c.idx = os.path.join(tmp, "u-idx3-ubyte")
    open(c.idx, "wb").write(idx_bytes(c.u))
    c.idxgz = c.idx + ".gz"
    with gzip.open(c.idxgz, "wb") as f:
        f.write(idx_bytes(c.u))
    # a directory of png images, written by glowrt itself
    c.pngdir = os.path.join(tmp, "pngs")
    r2 = run([glowrt, "sample", c.model, "-n", "5", "-t", "0.5", "-o", c.pngdir + "/"])
    if r2.returncode:
        raise SystemExit("sample failed: " + r2.stderr)
    return c


def test_idx(c):
    ref = run([c.g, "score", c.model, c.unpy])
    for p in (c.idx, c.idxgz):
        r = run([c.g, "score", c.model, p])
        h, rows = parse_csv(r.stdout)
        _, refrows = parse_csv(ref.stdout)
        ok = (r.returncode == 0 and h == ["id", "log_p", "bpd", "error"] and len(rows) == 23
              and all(a[0] == "%s[%d]" % (p, i) and a[1:] == b[1:] for i, (a, b) in enumerate(zip(rows, refrows))))
        check("idx %s scores like the same uint8 npy" % os.path.basename(p), ok, r.stderr or r.stdout[:300])
    bad = os.path.join(c.tmp, "trunc-idx3-ubyte")
    open(bad, "wb").write(idx_bytes(c.u)[:-5])
    r = run([c.g, "score", c.model, bad, c.idx])
    h, rows = parse_csv(r.stdout)
    ok = (r.returncode == 3 and len(rows) == 24 and rows[0][0] == bad and rows[0][1] == "" and "truncated" in rows[0][3]
          and r.stderr.count("\n") == 1)
    check("a truncated idx file is one error row, the next file is scored, exit 3", ok, (r.returncode, r.stderr))


def test_stdin(c):
    paths = "\n".join([c.unpy, "", c.pngdir, c.idxgz]) + "\n"
    r = run([c.g, "score", c.model, "-"], input=paths)
    direct = run([c.g, "score", c.model, c.unpy, c.pngdir, c.idxgz])
    check("'-' reads paths and directories from stdin", r.returncode == 0 and r.stdout == direct.stdout
          and r.stdout.count("\n") == 1 + 23 + 5 + 23, r.stderr)


def test_shard(c):
    args = [c.unpy, c.pngdir, os.path.join(c.tmp, "missing.png"), c.idx]
    full = run([c.g, "score", c.model, "--batch", "4"] + args)
    _, all_rows = parse_csv(full.stdout)
    check("unsharded run (one missing input) exits 3", full.returncode == 3, full.stderr)
    for n in (1, 2, 3, 4):
        seen = []
        ok = True
        for i in range(n):
            r = run([c.g, "score", c.model, "--batch", "3", "--shard", "%d/%d" % (i, n)] + args)
            _, rows = parse_csv(r.stdout)
            seen += rows
            ok &= r.returncode in (0, 3)
        ids = [x[0] for x in seen]
        ok &= len(ids) == len(set(ids)) and sorted(map(tuple, seen)) == sorted(map(tuple, all_rows))
        check("--shard i/%d: the shards partition the input exactly" % n, ok, "%d rows vs %d" % (len(seen), len(all_rows)))
    r = run([c.g, "score", c.model, "--shard", "3/3", c.unpy])
    check("--shard 3/3 is an option error (exit 2)", r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr)


def test_nothing_lost(c):
    d = os.path.join(c.tmp, "mixed")
    os.makedirs(d)
    names = sorted(os.listdir(c.pngdir))
    for nm in names:
        open(os.path.join(d, nm), "wb").write(open(os.path.join(c.pngdir, nm), "rb").read())
    good = open(os.path.join(d, names[0]), "rb").read()
    corrupt = os.path.join(d, "000002b.png")
    open(corrupt, "wb").write(good[:len(good) // 2])
    np.save(os.path.join(d, "wrongshape.npy"), np.zeros((2, 3, 8, 8), np.float32))  # 3 channels, model has 1
    r = run([c.g, "score", c.model, d])
    h, rows = parse_csv(r.stdout)
    errs = [x for x in rows if x[3]]
    ok_rows = [x for x in rows if not x[3]]
    ok = (r.returncode == 3 and h == ["id", "log_p", "bpd", "error"] and len(ok_rows) == 5 and len(errs) == 2
          and {x[0] for x in errs} == {corrupt, os.path.join(d, "wrongshape.npy")}
          and all(x[1] == "" and x[2] == "" for x in errs) and r.stderr.count("\n") == 2
          and [x[0] for x in rows] == sorted(x[0] for x in rows))
    check("a directory with a corrupt png and a wrong-shape npy: 5 rows, 2 error rows, exit 3", ok,
          (r.returncode, r.stderr, r.stdout))
    ref = run([c.g, "score", c.model, c.pngdir])
    _, refrows = parse_csv(ref.stdout)
    check("the good rows are those of a clean run", [x[1:3] for x in ok_rows] == [x[1:3] for x in refrows])
    r = run([c.g, "score", c.model, d, "--format", "jsonl"])
    js = [json.loads(line) for line in r.stdout.splitlines()]
    ok = (r.returncode == 3 and len(js) == 7 and sum("error" in j for j in js) == 2
          and all(("error" in j) == ("bpd" not in j) for j in js))
    check("jsonl: an error key on failed rows only", ok, r.stdout[:400])
    out = os.path.join(c.tmp, "mixed.csv")
    r = run([c.g, "score", c.model, d, "-o", out])
    check("-o with failures: the file is written whole, exit 3", r.returncode == 3 and os.path.exists(out)
          and open(out).read().count("\n") == 8 and not os.path.exists(out + ".tmp"), r.stderr)
    r = run([c.g, "score", c.model, corrupt])
    check("every input failing: exit 2, one line on stderr", r.returncode == 2 and r.stderr.count("\n") == 1
          and corrupt in r.stderr, r.stderr)
    r = run([c.g, "score", os.path.join(c.tmp, "nomodel.glow"), c.unpy])
    check("a missing model: exit 2 and nothing on stdout", r.returncode == 2 and r.stdout == "", r.stdout)


def wait_for(cond, timeout=60):
    t = time.time()
    while time.time() - t < timeout:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_signal(c):
    pngs = [os.path.join(c.pngdir, n) for n in sorted(os.listdir(c.pngdir))]
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        out = os.path.join(c.tmp, "sig%d.csv" % sig)
        p = subprocess.Popen([c.g, "score", c.model, "-", "-o", out, "--batch", "2"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stdin.write("\n".join(pngs[:3]) + "\n")
        p.stdin.flush()
        tmpf = out + ".tmp"
        got = wait_for(lambda: os.path.exists(tmpf) and open(tmpf).read().count("\n") == 4)
        p.send_signal(sig)
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            check("signal %d: stops" % sig, False, "still running")
            continue
        part = out + ".partial"
        text = open(part).read() if os.path.exists(part) else ""
        lines = text.split("\n")
        ok = (got and p.returncode == code and text.endswith("\n") and len(lines) == 5
              and all(len(x.split(",")) == 4 for x in lines[:-1]) and not os.path.exists(out)
              and not os.path.exists(tmpf))
        check("signal %d with -o: exit %d, FILE.partial holds the 3 whole rows, FILE untouched" % (sig, code), ok,
              (got, p.returncode, text, err))
    # stdout: whole rows
    p = subprocess.Popen([c.g, "score", c.model, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdin.write("\n".join(pngs[:2]) + "\n")
    p.stdin.flush()
    time.sleep(2.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    check("signal on stdout: exit 143, whole rows", p.returncode == 143 and out.count("\n") == 3
          and out.endswith("\n"), (p.returncode, out, err))


def score_csv(c, args):
    r = run([c.g, "score", c.model] + args)
    h, rows = parse_csv(r.stdout)
    return r, h, rows


def test_scores(c):
    r, h, rows = score_csv(c, [c.unpy, "--score", "bpd"])
    check("--score bpd: score == bpd", r.returncode == 0 and h[4] == "score" and all(x[4] == x[2] for x in rows), h)
    r, h, rows = score_csv(c, [c.unpy, "--score", "typicality"])
    check("--score typicality without --train-stats: exit 2", r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr)
    r, h, rows = score_csv(c, [c.unpy, "--score", "complexity"])
    ok = r.returncode == 0 and h == ["id", "log_p", "bpd", "error", "score"]
    if ok:
        cx = np.array([float(x[2]) - float(x[4]) for x in rows])  # PNG bits per dim
        # 8x8 noise: PNG needs more than 8 bits/pixel (headers, ~70 bytes) but far less than 40
        ok = bool(np.all(cx > 8) and np.all(cx < 40))
    check("--score complexity = bpd - PNG bits/dim (plausible sizes)", ok, (r.stderr, rows[:2]))
    flat = np.full((1, 8, 8), 77, np.uint8)
    fp = os.path.join(c.tmp, "flat.npy")
    np.save(fp, flat)
    _, _, frow = score_csv(c, [fp, "--score", "complexity"])
    check("a flat image compresses better than noise",
          float(frow[0][2]) - float(frow[0][4]) < min(float(x[2]) - float(x[4]) for x in rows))

    # calibrate on 200 images, then flag them
    cal = (np.random.RandomState(3).rand(200, 8, 8) * 255).astype(np.uint8)
    calp = os.path.join(c.tmp, "cal.npy")
    np.save(calp, cal)
    for kind in ("bpd", "typicality", "complexity"):
        for fpr in (0.01, 0.05, 0.2):
            thr = os.path.join(c.tmp, "thr_%s.json" % kind)
            r = run([c.g, "calibrate", c.model, "--in", calp, "--fpr", str(fpr), "--score", kind, "-o", thr])
            if r.returncode != 0:
                check("calibrate %s fpr %g" % (kind, fpr), False, r.stderr)
                continue
            st = json.load(open(thr))
            r2, h, rows = score_csv(c, [calp, "--threshold", thr])
            flags = [int(x[5]) for x in rows]
            rate = sum(flags) / len(flags)
            bpd = np.array([float(x[2]) for x in rows])
            ok = (r2.returncode == 0 and h == ["id", "log_p", "bpd", "error", "score", "flag"] and st["score"] == kind
                  # the CSV prints bpd to 8 significant digits (~1e-7 here)
                  and rate <= fpr and rate >= fpr - 0.02 and abs(st["train_mean_bpd"] - bpd.mean()) < 1e-6
                  and abs(st["train_std_bpd"] - bpd.std(ddof=1)) < 1e-6 and st["n"] == 200)
            check("calibrate --score %s --fpr %g: flag rate %.3f on the calibration set" % (kind, fpr, rate), ok,
                  (r2.stderr, st))
    thr = os.path.join(c.tmp, "thr_typicality.json")
    r, h, rows = score_csv(c, [calp, "--score", "typicality", "--train-stats", thr])
    st = json.load(open(thr))
    ok = r.returncode == 0 and all(abs(float(x[4]) - abs(float(x[2]) - st["train_mean_bpd"])) < 1e-6 for x in rows)
    check("--score typicality = |bpd - train_mean_bpd|", ok, r.stderr)
    r, _, _ = score_csv(c, [calp, "--score", "bpd", "--threshold", thr])
    check("--score contradicting --threshold: exit 2", r.returncode == 2, r.stderr)


def test_eval(c):
    ind = (np.random.RandomState(4).rand(60, 8, 8) * 60 + 100).astype(np.uint8)
    ood = (np.random.RandomState(5).rand(50, 8, 8) * 255).astype(np.uint8)
    ip, op = os.path.join(c.tmp, "ind.npy"), os.path.join(c.tmp, "ood.npy")
    np.save(ip, ind)
    np.save(op, ood)
    ic, oc = os.path.join(c.tmp, "ind.csv"), os.path.join(c.tmp, "ood.csv")
    run([c.g, "score", c.model, ip, "-o", ic])
    run([c.g, "score", c.model, op, "-o", oc])
    plot = os.path.join(c.tmp, "hist.png")
    r1 = run([c.g, "eval", "--in", ic, "--out", oc, "--plot", plot])
    r2 = run([c.g, "eval", "--model", c.model, "--in", ip, "--out", op])
    vals = dict(line.split() for line in r1.stdout.splitlines()) if r1.returncode == 0 else {}
    ok = (r1.returncode == 0 and r1.stdout == r2.stdout and vals.get("n_in") == "60" and vals.get("n_out") == "50"
          and all(0 <= float(vals[k]) <= 1 for k in ("auroc", "aupr", "fpr95")))
    check("eval from CSVs == eval from images with --model", ok, (r1.stdout, r2.stdout, r1.stderr, r2.stderr))
    # against numpy on the same bpd
    _, ri = parse_csv(open(ic).read())
    _, ro = parse_csv(open(oc).read())
    si, so = np.array([float(x[2]) for x in ri]), np.array([float(x[2]) for x in ro])
    auroc = ((so[:, None] > si[None, :]).sum() + 0.5 * (so[:, None] == si[None, :]).sum()) / (len(si) * len(so))
    check("eval auroc matches a direct count", vals and abs(float(vals["auroc"]) - auroc) < 1e-6, (vals, auroc))
    hdr = open(plot, "rb").read(24) if os.path.exists(plot) else b""
    check("eval --plot writes a 640x400 PNG", hdr[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", hdr[16:24]) == (640, 400))
    r = run([c.g, "eval", "--in", ic])
    check("eval without --out: exit 2", r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr)


def test_interp(c):
    x = (np.random.RandomState(6).rand(2, 1, 8, 8).astype(np.float32) - 0.5) * 0.9
    a, b = os.path.join(c.tmp, "ia.npy"), os.path.join(c.tmp, "ib.npy")
    np.save(a, x[:1])
    np.save(b, x[1:])
    o = os.path.join(c.tmp, "strip.npy")
    r = run([c.g, "interp", c.model, a, b, "-n", "6", "-o", o])
    s = np.load(o) if r.returncode == 0 else None
    ok = (s is not None and s.shape == (6, 1, 8, 8) and np.abs(s[0] - x[0]).max() < 1e-3
          and np.abs(s[-1] - x[1]).max() < 1e-3)
    check("interp .npy: [n,C,H,W], endpoints decode back to the inputs", ok,
          r.stderr if s is None else (s.shape, np.abs(s[0] - x[0]).max(), np.abs(s[-1] - x[1]).max()))
    o = os.path.join(c.tmp, "strip.png")
    r = run([c.g, "interp", c.model, a, b, "-n", "6", "-o", o])
    hdr = open(o, "rb").read(24) if os.path.exists(o) else b""
    check("interp .png: a strip of 6 images in a row", r.returncode == 0 and hdr[:4] == b"\x89PNG"
          and struct.unpack(">II", hdr[16:24]) == (6 * 8 + 5 * 2, 8), r.stderr)
    r = run([c.g, "interp", c.model, a, b, "-n", "1", "-o", o])
    check("interp -n 1: exit 2", r.returncode == 2, r.stderr)


def test_manipulate(c):
    pos = (np.random.RandomState(7).rand(10, 8, 8) * 80 + 150).astype(np.uint8)
    neg = (np.random.RandomState(8).rand(12, 8, 8) * 80).astype(np.uint8)
    pp, nn = os.path.join(c.tmp, "pos.npy"), os.path.join(c.tmp, "neg.npy")
    np.save(pp, pos)
    np.save(nn, neg)
    x = (np.random.RandomState(9).rand(3, 1, 8, 8).astype(np.float32) - 0.5) * 0.9
    xp = os.path.join(c.tmp, "mx.npy")
    np.save(xp, x)
    o = os.path.join(c.tmp, "man.npy")
    r = run([c.g, "manipulate", c.model, xp, "--pos", pp, "--neg", nn, "--alpha", "0", "-o", o])
    y = np.load(o) if r.returncode == 0 else None
    check("manipulate --alpha 0 gives the images back", y is not None and y.shape == (3, 1, 8, 8)
          and np.abs(y - x).max() < 1e-3, r.stderr)
    r = run([c.g, "manipulate", c.model, "--pos", pp, "--neg", nn, "--alpha", "1", xp, "-o", o])
    y = np.load(o) if r.returncode == 0 else None
    check("manipulate --alpha 1 moves them", y is not None and y.shape == (3, 1, 8, 8)
          and np.abs(y - x).max() > 1e-2, r.stderr)
    d = os.path.join(c.tmp, "mandir")
    r = run([c.g, "manipulate", c.model, xp, "--pos", c.pngdir, "--neg", nn, "-o", d + "/"])
    check("manipulate into a directory: one PNG per image", r.returncode == 0 and len(os.listdir(d)) == 3, r.stderr)


TESTS = {"idx": test_idx, "stdin": test_stdin, "shard": test_shard, "nothing_lost": test_nothing_lost,
         "signal": test_signal, "scores": test_scores, "eval": test_eval, "interp": test_interp,
         "manipulate": test_manipulate}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glowrt", required=True)
    ap.add_argument("--only", default=",".join(TESTS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        c = setup(os.path.abspath(a.glowrt), tmp)
        for part in a.only.split(","):
            print("== " + part, flush=True)
            TESTS[part](c)
    finish()


if __name__ == "__main__":
    main()
