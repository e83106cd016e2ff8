#!/usr/bin/python3
"""Parity of the glowrt CLI on y0ast/Glow-PyTorch and chaiyujin/glow-pytorch
checkpoints (models/glow_y0ast.py, both layouts).

    /usr/bin/python3 tests/parity_y0ast.py --glowrt build/glowrt [--keep DIR]

For each case: a random Glow of that layout (actnorms data-initialised, every
other parameter perturbed), its state_dict saved (chaiyujin: mostly as its
utils.save does, under "graph"), exported with `models/export.py y0ast` or
`chaiyujin` (self-check on), then glowrt score / encode / decode compared with
the module in float64, with tests/parity.py's tolerances:
|dlog_p| <= 1e-5 |log_p| + 1e-3, max|deps| <= 1e-4, decode(encode(x)) within 1e-4.
chaiyujin cases give glowrt 8-bit pixels (uint8 .npy), so its pixel map and the
exporter's fold of upstream's u/255 input are checked together.
Class-conditional cases (upstream's y_condition: project_ycond, project_class)
are exported with --class K and compared with the module's log p(x | y = K)
(and eps), after checking that the class changes the reference's log_p.
Then malformed checkpoints that the exporter must refuse (exit 2, one line).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "models"))

import torch  # noqa: E402

from glow_y0ast import random_model  # noqa: E402
from parity import (check_refusal, compare_outputs, export_quiet, exporter_suite_main,  # noqa: E402
                    parse_score_csv, run_cli)

# (C, L, K, coupling, flow_permutation, LU, learn_top, hidden, size, buffers, how it is saved)
# buffers: which of upstream's plain attributes a fork might store ("inited",
# "lu_masks", "perm"); () is upstream's exact key set.
CASES = [
    (3, 2, 2, "affine", "invconv", True, True, 7, 8, (), "wrapped"),         # {"model": sd}, module. prefix
    (1, 3, 1, "additive", "invconv", True, False, 5, 16, ("inited", "lu_masks"), "plain"),
    (3, 1, 2, "affine", "invconv", False, True, 9, 8, (), "weight4d"),       # weight as [C, C, 1, 1]
    (1, 2, 3, "additive", "invconv", False, False, 6, 8, ("inited",), "plain"),
    (3, 2, 1, "affine", "shuffle", False, True, 5, 16, ("perm",), "plain"),
    (1, 1, 2, "affine", "reverse", False, False, 3, 8, (), "plain"),        # needs --flow-permutation
    (3, 3, 2, "affine", "reverse", False, True, 4, 16, ("perm",), "plain"),
    (1, 3, 2, "additive", "shuffle", False, True, 11, 16, ("perm",), "plain"),
]
# chaiyujin/glow-pytorch layout; "pkg": utils.save's {"graph": sd, ...}; prior_h's
# batch (its training batch per GPU) is the first number of `how`
CHAIYUJIN_CASES = [
    (3, 2, 2, "affine", "invconv", True, True, 7, 8, (), "pkg12"),
    (1, 3, 1, "additive", "invconv", False, False, 5, 16, (), "pkg1"),
    (3, 1, 2, "affine", "reverse", False, True, 6, 8, (), "pkg4"),          # needs --flow-permutation
    (1, 2, 2, "additive", "invconv", True, True, 9, 8, (), "plain3"),
    (3, 3, 1, "affine", "shuffle", False, False, 4, 16, ("perm",), "pkg2"),  # a fork that stores indices
]
# class-conditional (y_condition): (layout, case as above, (y_classes, the class K exported))
COND_CASES = [
    ("y0ast", (3, 2, 2, "affine", "invconv", True, True, 7, 8, (), "plain"), (10, 7)),
    ("y0ast", (1, 3, 1, "additive", "invconv", False, False, 5, 16, ("inited",), "wrapped"), (2, 0)),
    ("chaiyujin", (3, 1, 2, "affine", "invconv", True, False, 6, 8, (), "pkg4"), (40, 39)),
    ("chaiyujin", (1, 2, 1, "affine", "reverse", False, True, 9, 16, (), "pkg2"), (3, 1)),
]
ALL_CASES = [("y0ast", c, None) for c in CASES] + [("chaiyujin", c, None) for c in CHAIYUJIN_CASES] + COND_CASES


def describe(lcase):
    layout, (c, L, K, coup, perm, lu, lt, hid, S, bufs, how), cls = lcase
    p = perm + ("-lu" if perm == "invconv" and lu else "-plain" if perm == "invconv" else "")
    return "%s C=%d L=%d K=%d %s %s learn_top=%d hidden=%d %dx%d keys+%s %s%s" % (
        layout, c, L, K, coup, p, lt, hid, S, S, ",".join(bufs) or "none", how,
        " y_condition %d classes --class %d" % cls if cls else "")


def save_ckpt(sd, path, how):
    if how.startswith("pkg"):  # chaiyujin's utils.save (optimizer state left out)
        sd = {"global_step": 5000, "graph": sd, "optim": {"state": {}, "param_groups": []}, "criterion": {}}
    elif how == "wrapped":
        sd = {"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
    elif how == "weight4d":
        sd = {k: v.view(*v.shape, 1, 1) if k.endswith("invconv.weight") else v for k, v in sd.items()}
    torch.save(sd, path)


def run_case(k, lcase, args, work):
    layout, (c, L, K, coup, perm, lu, lt, hid, S, bufs, how), cls = lcase
    d = os.path.join(work, "case%02d" % k)
    os.makedirs(d, exist_ok=True)
    pb = int(how.lstrip("pkglain") or 1) if layout == "chaiyujin" else 1
    model = random_model(c, hid, K, L, perm, coup, lu, lt, S, S, buffers=bufs, seed=2000 + k,
                         layout=layout, prior_batch=pb, y_classes=cls[0] if cls else 0)
    pt, gl = os.path.join(d, "save_5k0.pkg" if how.startswith("pkg") else "model.pt"), os.path.join(d, "model.glow")
    save_ckpt(model.state_dict(), pt, how)
    extra = ["--flow-permutation", perm] if perm in ("shuffle", "reverse") and "perm" not in bufs else []
    extra += ["--n-bits", "8"] if layout == "y0ast" else []  # chaiyujin: 8, the default
    extra += ["--class", str(cls[1])] if cls else []
    rc, err = export_quiet([layout, pt, "-o", gl, "--image-size", str(S), "-q"] + extra)
    if rc != 0:
        raise RuntimeError("export failed (exit %d): %s" % (rc, err.strip()))
    n = 3
    u = np.random.default_rng(k).integers(0, 256, size=(n, c, S, S))
    u[0, :, 0, :2] = [0, 255]  # both ends of the range
    x = (u / 256.0 - 0.5 + 0.5 / 256.0).astype(np.float32)  # bin centres, as glowrt maps pixels
    xp, zp, xrp = (os.path.join(d, f) for f in ("x.npy", "z.npy", "xr.npy"))
    if layout == "chaiyujin":  # 8-bit pixels, [N, H, W(, C)]
        np.save(xp, (u[:, 0] if c == 1 else u.transpose(0, 2, 3, 1)).astype(np.uint8))
    else:
        np.save(xp, x)
    md = model.double()
    with torch.no_grad():
        xt = torch.from_numpy(x.astype(np.float64))
        ref_ll = md.log_prob(xt, cls[1] if cls else None).numpy()
        ref_eps = md.encode(xt, cls[1] if cls else None).numpy()
        if cls:  # the class must matter, or a file that ignores it would pass
            other = md.log_prob(xt, (cls[1] + 1) % cls[0]).numpy()
            if not np.all(np.abs(other - ref_ll) > 1e-5 * np.abs(ref_ll) + 1e-2):
                raise RuntimeError("the reference's log_p hardly depends on the class: %s vs %s" % (ref_ll, other))
    common = ["--batch", "2", "--threads", "2"]
    ll, bpd = parse_score_csv(run_cli([args.glowrt, "score", gl, xp, "--format", "csv"] + common, args.timeout), n)
    run_cli([args.glowrt, "encode", gl, xp, "-o", zp] + common, args.timeout)
    run_cli([args.glowrt, "decode", gl, zp, "-o", xrp] + common, args.timeout)
    z, xr = np.load(zp), np.load(xrp)
    D = c * S * S
    if z.shape != (n, D) or xr.shape != x.shape:
        raise RuntimeError("shapes: eps %s, decoded %s" % (z.shape, xr.shape))
    return compare_outputs(ll, bpd, z, xr, ref_ll, ref_eps, x, D)


def bad_checkpoints():
    """(name, state_dict, source format + extra args, a word the message must contain)."""
    base = random_model(1, 3, 1, 2, "invconv", "affine", True, True, 8, 8, buffers=("inited",), seed=7).state_dict()
    # upstream's y_condition: project_ycond (LinearZeros(10, 2C)), project_class (LinearZeros(C, 10)), C = 8
    cond = random_model(1, 3, 1, 2, "invconv", "affine", True, True, 8, 8, buffers=("inited",), seed=7,
                        y_classes=10).state_dict()
    cond_no_head = {k: v for k, v in cond.items() if not k.startswith("project_class.")}
    cond_bad_shape = dict(cond, **{"project_ycond.logs": cond["project_ycond.logs"][:8]})
    missing = {k: v for k, v in base.items() if k != "flow.layers.1.block.2.actnorm.logs"}
    uninit = dict(base)
    uninit["flow.layers.1.actnorm.inited"] = torch.tensor(0, dtype=torch.uint8)
    shuffled = random_model(1, 3, 1, 1, "shuffle", "additive", False, False, 8, 8, seed=8).state_dict()
    cy = random_model(1, 3, 1, 2, "invconv", "affine", True, True, 8, 8, seed=9, layout="chaiyujin",
                      prior_batch=2).state_dict()
    # hparams.Glow.y_condition: two LinearZeros (nn.Linear + logs); 40 classes (CelebA's attributes)
    cy_cond = random_model(1, 3, 1, 2, "invconv", "affine", True, True, 8, 8, seed=9, layout="chaiyujin",
                           prior_batch=2, y_classes=40).state_dict()
    cy_missing = {k: v for k, v in cy.items() if k != "flow.layers.4.f.4.logs"}
    cy_old_lu = {k: v for k, v in cy.items() if not k.endswith(("invconv.p", "invconv.sign_s"))}
    bad_p = dict(base, **{"flow.layers.1.invconv.p": 2 * base["flow.layers.1.invconv.p"]})
    bad_sign = dict(base, **{"flow.layers.1.invconv.sign_s": 0.5 * base["flow.layers.1.invconv.sign_s"]})
    masked = random_model(1, 3, 1, 2, "invconv", "affine", True, True, 8, 8, buffers=("inited", "lu_masks"),
                          seed=7).state_dict()
    bad_mask = dict(masked, **{"flow.layers.1.invconv.l_mask": masked["flow.layers.1.invconv.l_mask"].T})
    bad_eye = dict(masked, **{"flow.layers.1.invconv.eye": 0 * masked["flow.layers.1.invconv.eye"]})
    pkg = lambda sd: {"global_step": 1000, "graph": sd, "optim": {}, "criterion": {}}  # noqa: E731
    return [("y_condition without --class", cond, ["y0ast"],
             "class-conditional model (y_condition, 10 classes): pass --class K"),
            ("y_condition --class 10", cond, ["y0ast", "--class", "10"], "--class 10: the model has 10 classes"),
            ("y_condition --class -1", cond, ["y0ast", "--class", "-1"], "--class -1: the model has 10 classes"),
            ("--class on an unconditional model", base, ["y0ast", "--class", "0"], "not class-conditional"),
            ("y_condition without project_class", cond_no_head, ["y0ast", "--class", "1"], "missing keys"),
            ("y_condition project_ycond.logs shape", cond_bad_shape, ["y0ast", "--class", "1"],
             "inconsistent shape of project_ycond.logs"),
            ("missing key", missing, ["y0ast"], "missing"),
            ("LU p not a permutation", bad_p, ["y0ast"], "invconv.p is not a permutation matrix"),
            ("LU sign_s not +-1", bad_sign, ["y0ast"], "invconv.sign_s is not all +-1"),
            ("LU l_mask not lower", bad_mask, ["y0ast"], "invconv.l_mask is not the strict lower triangle"),
            ("LU eye not the identity", bad_eye, ["y0ast"], "invconv.eye is not the identity"),
            ("uninitialised actnorm", uninit, ["y0ast"], "never data-initialised"),
            ("shuffle without stored indices", shuffled, ["y0ast"], "permutation"),
            ("chaiyujin y_condition without --class", pkg(cy_cond), ["chaiyujin"],
             "class-conditional model (y_condition, 40 classes): pass --class K"),
            ("chaiyujin y_condition --class 40", pkg(cy_cond), ["chaiyujin", "--class", "40"], "has 40 classes"),
            ("chaiyujin --class on an unconditional model", pkg(cy), ["chaiyujin", "--class", "3"],
             "not class-conditional"),
            ("chaiyujin missing key", pkg(cy_missing), ["chaiyujin"], "missing"),
            ("chaiyujin LU without p, sign_s", pkg(cy_old_lu), ["chaiyujin"], "840971f"),
            ("chaiyujin --n-bits 5", pkg(cy), ["chaiyujin", "--n-bits", "5"], "8-bit"),
            ("chaiyujin keys as y0ast", pkg(cy), ["y0ast"], "export the checkpoint as chaiyujin")]


def run_bad(args, work):
    results = []
    for k, (name, sd, extra, word) in enumerate(bad_checkpoints()):
        pt, gl = os.path.join(work, "bad%d.pt" % k), os.path.join(work, "bad%d.glow" % k)
        torch.save(sd, pt)
        argv = [extra[0], pt, "-o", gl, "--image-size", "8"] + (["--n-bits", "8"] if extra[0] == "y0ast" else []) \
            + extra[1:]
        results.append((name,) + check_refusal(k, argv, gl, word, args.timeout))
    return results


def main(argv=None):
    return exporter_suite_main(argv, __doc__, "glowrt-parity-y0ast-", enumerate(ALL_CASES), run_case, describe,
                               run_bad)


if __name__ == "__main__":
    sys.exit(main())
