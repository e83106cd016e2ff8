#!/usr/bin/python3
"""Parity of the glowrt CLI on openai/glow (TensorFlow) checkpoints.

    /usr/bin/python3 tests/parity_openai.py --glowrt build/glowrt [--keep DIR]

For each case: a random openai/glow model (models/glow_openai.py: every weight
drawn, actnorms data-initialised), its variables saved as TensorFlow's
train.py saves them (models/tfckpt.py: .index + .data, with polyak averages
and optimizer slots beside them, a `checkpoint` file, and train.txt's
hyperparameter line where the case says), exported with
`models/export.py openai` (self-check on), then glowrt score / encode / decode
compared with openai's model run literally in float64, with tests/parity.py's
tolerances: |dlog_p| <= 1e-5 |log_p| + 1e-3, max|deps| <= 1e-4,
decode(encode(x)) within 1e-4. Cases that give glowrt 8-bit pixels check the
n_bits map too. Then malformed checkpoints that the exporter must refuse
(exit 2, one line, no output file).
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "models"))

import torch  # noqa: E402

import glow_openai  # noqa: E402
import tfckpt  # noqa: E402
from parity import (check_refusal, compare_outputs, export_quiet, exporter_suite_main,  # noqa: E402
                    parse_score_csv, run_cli)

# (C, L, K, coupling, permutation, learntop, classes, width, HxW, n_bits, how)
# how: "logdir" (train.txt gives n_bits and size; the directory is exported),
# "prefix", "index" (the .index path), "ema" (--ema), "class2" (--class 2),
# "pixels" (uint8 input: the n_bits map)
CASES = [
    (3, 2, 2, "affine", "invconv", True, 0, 7, (8, 8), 8, "logdir"),
    (1, 3, 1, "additive", "invconv", False, 0, 5, (16, 16), 8, "prefix"),
    (3, 1, 2, "affine", "shuffle", True, 0, 9, (8, 8), 8, "index"),
    (3, 2, 1, "additive", "reverse", True, 0, 6, (8, 16), 8, "prefix"),
    (3, 2, 2, "affine", "lu", True, 0, 5, (8, 8), 8, "prefix"),
    (3, 2, 1, "affine", "invconv", True, 4, 6, (8, 8), 8, "class2"),
    (1, 2, 2, "affine", "invconv", False, 3, 4, (8, 8), 8, "class2"),
    (3, 2, 1, "affine", "invconv", True, 0, 8, (8, 8), 8, "ema"),
    (3, 2, 2, "additive", "invconv", True, 0, 6, (16, 16), 5, "pixels"),
    (5, 2, 1, "affine", "invconv", True, 0, 64, (8, 8), 8, "prefix"),  # a 20-channel half: whole blocks + rest
    (3, 2, 1, "additive", "shuffle", True, 0, 5, (8, 8), 8, "ema"),  # indices: int32, never averaged
    (3, 1, 2, "affine", "lu", False, 0, 6, (8, 8), 8, "ema"),  # P, sign_S: trainable=False, never averaged
]


def describe(case):
    c, L, K, coup, perm, lt, ny, wd, (h, w), nb, how = case
    return "C=%d L=%d K=%d %s %s learntop=%d classes=%d width=%d %dx%d n_bits=%d %s" % (
        c, L, K, coup, perm, lt, ny, wd, h, w, nb, how)


def info_of(case):
    c, L, K, coup, perm, lt, ny, wd = case[:8]
    return dict(in_channels=c, n_levels=L, depth=K, width=wd, affine=coup == "affine", perm=perm,
                learntop=lt, n_y=ny)


def hps_line(info, size, n_bits):
    """train.py's first train.txt line (ResultLogger: json of its hps), the keys the exporter reads."""
    return json.dumps(dict(problem="cifar10", image_size=size, n_levels=info["n_levels"], depth=info["depth"],
                           width=info["width"], n_bits_x=n_bits, flow_coupling=1 if info["affine"] else 0,
                           flow_permutation={"reverse": 0, "shuffle": 1}.get(info["perm"], 2),
                           learntop=info["learntop"], ycond=bool(info["n_y"]), n_y=info["n_y"] or 10)) + "\n"


def save_openai(var, d, seed, hps=None):
    """As train.py's saver.save(sess, d/model_best_loss.ckpt): every variable, the
    polyak averages (different values) of the trainable ones (not shuffle indices,
    LU's P and sign_S) with their zero-debias state (optim.polyak: zero_debias=True),
    optimizer slots; a `checkpoint` file."""
    rng = np.random.RandomState(seed)
    arrays = dict(var)
    for k, v in var.items():
        if not k.endswith(glow_openai.NOT_AVERAGED):
            arrays[k + glow_openai.EMA] = (v + 0.01 * rng.randn(*v.shape)).astype(np.float32)
            arrays[k + glow_openai.EMA + "/biased"] = np.zeros(v.shape, np.float32)
            arrays[k + glow_openai.EMA + "/local_step"] = np.float32(1000.0)
    for j, v in enumerate(list(var.values())[:5]):
        arrays["Variable_%d" % (j + 1)] = np.zeros(v.shape, np.float32)  # optimizer slots
    arrays["Variable"] = np.float32(7.0)  # adam_t
    prefix = os.path.join(d, "model_best_loss.ckpt")
    tfckpt.write_checkpoint(prefix, arrays, block_size=2048)
    with open(os.path.join(d, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model_best_loss.ckpt"\nall_model_checkpoint_paths: "model_best_loss.ckpt"\n')
    if hps:
        with open(os.path.join(d, "train.txt"), "w") as f:
            f.write(hps + json.dumps(dict(epoch=1, n_processed=50000, loss=3.5)) + "\n")
    return prefix, arrays


def run_case(k, case, args, work):
    c, L, K, coup, perm, lt, ny, wd, (H, W), nb, how = case
    info = info_of(case)
    d = os.path.join(work, "case%02d" % k)
    os.makedirs(d, exist_ok=True)
    var = glow_openai.random_variables(info, H, W, seed=3000 + k)
    hps = hps_line(info, H, nb) if how in ("logdir", "pixels") else None
    prefix, arrays = save_openai(var, d, seed=k, hps=hps)
    gl = os.path.join(d, "model.glow")
    src = {"logdir": d, "index": prefix + ".index"}.get(how, prefix)
    extra = [] if hps else ["--n-bits", str(nb), "--image-size", "%dx%d" % (H, W)]
    extra += ["--ema"] if how == "ema" else []
    extra += ["--class", "2"] if how == "class2" else []
    rc, err = export_quiet(["openai", src, "-o", gl, "-q"] + extra)
    if rc != 0:
        raise RuntimeError("export failed (exit %d): %s" % (rc, err.strip()))
    used = {kk: arrays[kk + glow_openai.EMA] if how == "ema" and kk + glow_openai.EMA in arrays else v
            for kk, v in var.items()}
    model = glow_openai.OpenaiGlow(used, info, label=2 if how == "class2" else None)
    n = 3
    u = np.random.default_rng(k).integers(0, 256, size=(n, c, H, W))
    u[0, :, 0, :2] = [0, 255]  # both ends of the range
    nbins = 2 ** nb
    x = (np.floor(u / 2 ** (8 - nb)) / nbins - 0.5 + 0.5 / nbins).astype(np.float32)  # bin centres
    xp, zp, xrp = (os.path.join(d, f) for f in ("x.npy", "z.npy", "xr.npy"))
    if how == "pixels":  # 8-bit pixels, [N, H, W(, C)]
        np.save(xp, (u[:, 0] if c == 1 else u.transpose(0, 2, 3, 1)).astype(np.uint8))
    else:
        np.save(xp, x)
    with torch.no_grad():
        xt = torch.from_numpy(x.astype(np.float64))
        ref_ll = model.log_prob(xt).numpy()
        ref_eps = model.encode(xt).numpy()
    common = ["--batch", "2", "--threads", "2"]
    ll, bpd = parse_score_csv(run_cli([args.glowrt, "score", gl, xp, "--format", "csv"] + common, args.timeout), n)
    run_cli([args.glowrt, "encode", gl, xp, "-o", zp] + common, args.timeout)
    run_cli([args.glowrt, "decode", gl, zp, "-o", xrp] + common, args.timeout)
    z, xr = np.load(zp), np.load(xrp)
    D = c * H * W
    if z.shape != (n, D) or xr.shape != x.shape:
        raise RuntimeError("shapes: eps %s, decoded %s" % (z.shape, xr.shape))
    # compare_outputs checks bpd with 256 bins: an n_bits model's bpd is 8 - n_bits lower
    return compare_outputs(ll, bpd + (8 - nb), z, xr, ref_ll, ref_eps, x, D)


def bad_checkpoints(work):
    """(name, export argv after "openai", a word the one-line message must contain), each a checkpoint
    the exporter must refuse."""
    info = dict(in_channels=3, n_levels=2, depth=1, width=4, affine=True, perm="invconv", learntop=True, n_y=0)
    var = glow_openai.random_variables(info, 8, 8, seed=5)
    out = []

    def make(name, v, word, extra=("--n-bits", "8", "--image-size", "8"), hps=None, damage=None):
        d = os.path.join(work, "bad%02d" % len(out))
        os.makedirs(d, exist_ok=True)
        prefix, _ = save_openai(v, d, seed=1, hps=hps)
        if damage:
            damage(prefix)
        out.append((name, [prefix] + list(extra), word))

    make("missing variable", {k: v for k, v in var.items() if k != "model/1/0/f1/l_2/W"}, "missing")
    make("unexpected variable", dict(var, **{"model/1/0/f1/l_3/W": np.zeros((1, 1, 4, 4), np.float32)}),
         "unexpected")
    cond = glow_openai.random_variables(dict(info, n_y=3), 8, 8, seed=6)
    make("ycond without --class", cond, "class-conditional")
    make("--class on an unconditional model", var, "not class-conditional",
         extra=("--n-bits", "8", "--image-size", "8", "--class", "1"))
    make("scalar class embedding", dict(var, **{"model/prior/y_emb/W": np.float32(1.0)}), "y_emb/W")
    make("--class out of range", cond, "has 3 classes", extra=("--n-bits", "8", "--image-size", "8", "--class", "3"))
    make("no --n-bits, no train.txt", var, "--n-bits is required", extra=("--image-size", "8"))
    make("train.txt contradicts", var, "train.txt says", extra=(),
         hps=hps_line(dict(info, depth=2), 8, 8))
    make("--n-bits contradicts train.txt", var, "contradicts", extra=("--n-bits", "5"), hps=hps_line(info, 8, 8))

    def hps_with(**kw):  # train.txt's first line with some values replaced
        return json.dumps(dict(json.loads(hps_line(info, 8, 8)), **kw)) + "\n"

    make("train.txt n_bits_x true", var, "n_bits_x", extra=(), hps=hps_with(n_bits_x=True))
    make("train.txt n_bits_x a string", var, "n_bits_x", extra=("--n-bits", "8"), hps=hps_with(n_bits_x="8"))
    make("train.txt n_bits_x 9", var, "n_bits_x", extra=(), hps=hps_with(n_bits_x=9))
    make("train.txt image_size a string", var, "image_size", extra=(), hps=hps_with(image_size="8"))
    make("train.txt image_size 2^40", var, "out of range", extra=(), hps=hps_with(image_size=2 ** 40))
    make("--image-size 2^70", var, "out of range", extra=("--n-bits", "8", "--image-size", str(2 ** 70)))
    big = dict(var, **{"model/0/0/f1/l_1/actnorm_scale/logs": np.full(
        var["model/0/0/f1/l_1/actnorm_scale/logs"].shape, 40.0, np.float32)})  # exp(120): beyond float32
    make("folded weights overflow float32 (--no-check)", big, "float32",
         extra=("--n-bits", "8", "--image-size", "8", "--no-check"))
    huge = dict(var, **{"model/0/0/actnorm_scale/logs": np.full(
        var["model/0/0/actnorm_scale/logs"].shape, 400.0, np.float32)})  # exp(1200): beyond float64
    make("actnorm scale overflows float64", huge, "overflows")
    make("--alignment 3", var, "alignment", extra=("--n-bits", "8", "--image-size", "8", "--alignment", "3"))
    make("--alignment 2^21", var, "alignment", extra=("--n-bits", "8", "--image-size", "8", "--alignment",
                                                       str(2 ** 21)))
    make("train.txt nested 10^5 deep", var, "--n-bits is required", extra=("--image-size", "8"),
         hps="[" * 100000 + "\n")
    inf = dict(var)
    inf["model/0/0/f1/l_2/W"] = inf["model/0/0/f1/l_2/W"].copy()
    inf["model/0/0/f1/l_2/W"][0, 0, 1, 2] = np.inf
    make("non-finite weight", inf, "non-finite")
    sh = glow_openai.random_variables(dict(info, perm="shuffle"), 8, 8, seed=7)
    sh["model/1/0/shuffle/indices"] = np.zeros_like(sh["model/1/0/shuffle/indices"])
    make("shuffle indices not a permutation", sh, "not a permutation")
    lu = glow_openai.random_variables(dict(info, perm="lu"), 8, 8, seed=8)
    lu["model/1/0/invconv/U"] = np.zeros_like(lu["model/1/0/invconv/U"])
    lu["model/1/0/invconv/log_S"] = np.full_like(lu["model/1/0/invconv/log_S"], -1000.0)  # exp: 0
    make("singular LU 1x1 conv (exp(log_S) = 0)", lu, "not invertible")
    # upstream's log-det is sum(log_S): true only for a permutation P and signs of +-1
    lu = glow_openai.random_variables(dict(info, perm="lu"), 8, 8, seed=8)
    lu["model/0/0/invconv/P"] = lu["model/0/0/invconv/P"] * 2.0
    make("LU P not a permutation matrix", lu, "invconv/P")
    lu = glow_openai.random_variables(dict(info, perm="lu"), 8, 8, seed=8)
    lu["model/1/0/invconv/sign_S"] = lu["model/1/0/invconv/sign_S"] * 0.5
    make("LU sign_S not +-1", lu, "invconv/sign_S")
    make("actnorm scale exp(3 logs) = 0", dict(var, **{"model/0/0/actnorm_scale/logs": np.full(
        var["model/0/0/actnorm_scale/logs"].shape, -400.0, np.float32)}), "not invertible")

    def flip_data(prefix):  # a weight's bytes changed on disk: the tensor's crc32c no longer matches
        path = prefix + ".data-00000-of-00001"
        b = bytearray(open(path, "rb").read())
        e = tfckpt._load_index(prefix)[0]["model/prior/p/W"]
        b[e["offset"] + e["size"] // 2] ^= 0x40
        open(path, "wb").write(bytes(b))

    def cut_index(prefix):
        path = prefix + ".index"
        b = open(path, "rb").read()
        open(path, "wb").write(b[:len(b) // 2])

    def no_data(prefix):
        os.remove(prefix + ".data-00000-of-00001")

    make("corrupt data file", var, "CRC mismatch", damage=flip_data)
    make("train.txt a named pipe", var, "--n-bits is required", extra=("--image-size", "8"),
         damage=lambda prefix: os.mkfifo(os.path.join(os.path.dirname(prefix), "train.txt")))  # not waited on
    make("truncated index", var, ".index", damage=cut_index)
    make("missing data file", var, ".data-00000-of-00001", damage=no_data)
    garbage = os.path.join(work, "garbage.ckpt.index")
    with open(garbage, "wb") as f:
        f.write(os.urandom(300))
    out.append(("garbage index", [garbage, "--n-bits", "8", "--image-size", "8"], "garbage.ckpt"))
    out.append(("no such checkpoint", [os.path.join(work, "nothing.ckpt"), "--n-bits", "8", "--image-size", "8"],
                "nothing.ckpt"))
    return out


def run_bad(args, work):
    results = []
    for k, (name, argv, word) in enumerate(bad_checkpoints(work)):
        gl = os.path.join(work, "bad%d.glow" % k)
        argv = ["openai", argv[0], "-o", gl] + argv[1:]
        results.append((name,) + check_refusal(k, argv, gl, word, args.timeout))
    return results


def main(argv=None):
    return exporter_suite_main(argv, __doc__, "glowrt-parity-openai-", enumerate(CASES), run_case, describe,
                               run_bad)


if __name__ == "__main__":
    sys.exit(main())
