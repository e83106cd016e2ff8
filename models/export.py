"""Export a trained Glow checkpoint to a .glow file (docs/format.md).

    /usr/bin/python3 models/export.py rosinality CKPT.pt -o MODEL.glow \
        --image-size 28 --n-bits 8

Source formats: `rosinality` (a rosinality/glow-pytorch state_dict, keys with or
without the 'module.' prefix; also the layout of models/glow.py), `y0ast` (a
y0ast/Glow-PyTorch state_dict; models/glow_y0ast.py is its layout), `chaiyujin`
(a chaiyujin/glow-pytorch checkpoint, e.g. its utils.save's save_5k0.pkg with
the state_dict under "graph"; --n-bits is 8; its [0, 1] input x' = u/255 is
folded in as x' = 256/255 x + 0.5 of glowrt's x, so glowrt's log_p is
upstream's log p(u/255) + D ln(256/255)), `openai` (an
openai/glow TensorFlow checkpoint as its train.py saves it, read without
TensorFlow: the prefix logs/model_best_loss.ckpt, its .index file or its
directory; --n-bits and --image-size default to train.txt's beside it;
models/glow_openai.py is its layout). A class-conditional y0ast, chaiyujin
(y_condition) or openai (ycond) model is exported for one class, --class K: the
file gives log p(x | y = K).
Everything is folded in float64 and rounded to float32 once. Refuses (exit 2, one line) a
checkpoint it cannot export faithfully: an actnorm that was never initialised,
missing or unexpected keys, inconsistent shapes, an image size that 2^n_block
does not divide.
"""
import argparse
import json
import os
import re
import sys
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import glowfile  # noqa: E402
import glow_openai  # noqa: E402
from glowfile import OP_AFFINE, OP_COUPLING, OP_SPLIT, OP_SQUEEZE, OP_TOP_PRIOR  # noqa: E402

EXPORTER_VERSION = "1.0.0"
LU_KEYS = ("w_p", "u_mask", "l_mask", "s_sign", "l_eye", "w_l", "w_s", "w_u")


# glow.image_height / glow.image_width: the runtime loads files whose default size is at most this
# (runtime/model.c); it runs images up to 16384 a side.
MAX_IMAGE_SIDE = 1 << 16
MAX_ALIGNMENT = 1 << 20  # the header's alignment, likewise


class ExportError(Exception):
    pass


def load_state_dict(path, as_torch=False):
    """The checkpoint's state_dict, 'module.' prefixes dropped: float64 numpy
    arrays (what the exporter folds), or the stored torch tensors with as_torch."""
    import torch
    if not os.path.isfile(path):
        raise ExportError("%s: no such file" % path)
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        raise ExportError("%s: not a readable PyTorch checkpoint (%s: %s)"
                          % (path, type(e).__name__, str(e).strip().splitlines()[0][:200] if str(e).strip() else ""))
    if isinstance(obj, dict) and not any(hasattr(v, "shape") for v in obj.values()):
        for k in ("state_dict", "model", "model_state_dict", "graph"):  # graph: chaiyujin's utils.save
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict):
        raise ExportError("%s does not hold a state_dict" % path)
    sd = {}
    for k, v in obj.items():
        k2 = k[len("module."):] if k.startswith("module.") else k
        if k2 in sd:
            raise ExportError("key %s appears twice (with and without 'module.')" % k2)
        if not hasattr(v, "detach"):
            raise ExportError("entry %s is not a tensor" % k)
        if as_torch:
            sd[k2] = v.detach().cpu()
        else:
            sd[k2] = v.detach().cpu().double().numpy() if v.dtype.is_floating_point else v.detach().cpu().numpy()
    return sd


def check_keys(sd, expected, init_suffix):
    """The key set of sd is exactly expected's; every tensor has its expected
    shape and finite values; an actnorm flag (keys ending in init_suffix) is
    a single non-zero value (zero: never data-initialised, not trained)."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing:
        raise ExportError("missing keys (%d), first %s" % (len(missing), missing[0]))
    if unexpected:
        raise ExportError("unexpected keys (%d), first %s" % (len(unexpected), unexpected[0]))
    for k, shape in expected.items():
        s = tuple(sd[k].shape)
        if k.endswith(init_suffix):
            if int(np.prod(s)) != 1:
                raise ExportError("inconsistent shape of %s: %s" % (k, s))
            if int(np.asarray(sd[k]).reshape(-1)[0]) == 0:
                raise ExportError("%s == 0: actnorm never data-initialised (not a trained model)" % k)
            continue
        if s != shape:
            raise ExportError("inconsistent shape of %s: %s, expected %s" % (k, s, shape))
        if not np.all(np.isfinite(np.asarray(sd[k], dtype=np.float64))):
            raise ExportError("non-finite values in %s" % k)


def infer_rosinality(sd):
    """Structure of a rosinality state_dict; checks the key set and shapes."""
    blocks = {}
    for k in sd:
        m = re.match(r"blocks\.(\d+)\.flows\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        else:
            m = re.match(r"blocks\.(\d+)\.prior\.", k)
            if m:
                blocks.setdefault(int(m.group(1)), set())
            else:
                raise ExportError("unexpected key %s" % k)
    if not blocks:
        raise ExportError("no blocks.* keys: not a rosinality Glow state_dict")
    n_block = max(blocks) + 1
    if sorted(blocks) != list(range(n_block)):
        raise ExportError("missing keys: blocks are %s" % sorted(blocks))
    n_flow = len(blocks[0])
    for i, f in blocks.items():
        if sorted(f) != list(range(n_flow)) or n_flow == 0:
            raise ExportError("missing keys: block %d has flows %s, block 0 has %d" % (i, sorted(f), n_flow))
    k0 = "blocks.0.flows.0.actnorm.loc"
    if k0 not in sd:
        raise ExportError("missing key " + k0)
    if sd[k0].ndim != 4 or sd[k0].shape[1] % 4:
        raise ExportError("inconsistent shape of %s: %s" % (k0, sd[k0].shape))
    c_in = sd[k0].shape[1] // 4
    kw = "blocks.0.flows.0.coupling.net.0.weight"
    if kw not in sd:
        raise ExportError("missing key " + kw)
    hidden = sd[kw].shape[0]
    k4 = "blocks.0.flows.0.coupling.net.4.conv.weight"
    if k4 not in sd:
        raise ExportError("missing key " + k4)
    c0 = 4 * c_in
    if sd[k4].shape[0] == c0:
        affine = True
    elif sd[k4].shape[0] == c0 // 2:
        affine = False
    else:
        raise ExportError("inconsistent shape of %s: %s" % (k4, sd[k4].shape))

    expected = {}
    lu_flags = []
    c = c_in
    for i in range(n_block):
        C = 4 * c
        last = i == n_block - 1
        row = []
        for j in range(n_flow):
            p = "blocks.%d.flows.%d." % (i, j)
            expected[p + "actnorm.loc"] = (1, C, 1, 1)
            expected[p + "actnorm.scale"] = (1, C, 1, 1)
            expected[p + "actnorm.initialized"] = ()
            lu = (p + "invconv.w_s") in sd
            row.append(lu)
            if lu:
                for k in LU_KEYS:
                    expected[p + "invconv." + k] = (C,) if k in ("s_sign", "w_s") else (C, C)
            else:
                expected[p + "invconv.weight"] = (C, C, 1, 1)
            q = p + "coupling.net."
            expected[q + "0.weight"] = (hidden, C // 2, 3, 3)
            expected[q + "0.bias"] = (hidden,)
            expected[q + "2.weight"] = (hidden, hidden, 1, 1)
            expected[q + "2.bias"] = (hidden,)
            co = C if affine else C // 2
            expected[q + "4.conv.weight"] = (co, hidden, 3, 3)
            expected[q + "4.conv.bias"] = (co,)
            expected[q + "4.scale"] = (1, co, 1, 1)
        lu_flags.append(row)
        p = "blocks.%d.prior." % i
        pin, pout = (C, 2 * C) if last else (C // 2, C)
        expected[p + "conv.weight"] = (pout, pin, 3, 3)
        expected[p + "conv.bias"] = (pout,)
        expected[p + "scale"] = (1, pout, 1, 1)
        c = C // 2
    check_keys(sd, expected, "initialized")
    if all(all(r) for r in lu_flags):
        invconv = "lu"
    elif not any(any(r) for r in lu_flags):
        invconv = "plain"
    else:
        invconv = "mixed"
    return dict(in_channels=c_in, n_block=n_block, n_flow=n_flow, hidden=hidden,
                affine=affine, invconv=invconv, lu_flags=lu_flags)


def lu_weight(P, L, U, sign, log_s, names, masks=()):
    """(W, ln|det W|) of an LU-parameterised 1x1 conv, every source's variant:
    W = P (L strict-lower + I) (U strict-upper + diag(sign exp(log_s))), log-det
    sum(log_s). The log-det holds only for a permutation P and signs of +-1
    (untrainable upstream, so always so in real checkpoints; else log_p is no
    density): anything else is refused. names: the checkpoint's names of P and
    sign, for the message. masks: the masks a checkpoint stores, as (name,
    array or None, "lower" | "upper" | "eye"); upstream registers them as the
    strict triangles and the identity, and any other value (a corrupted file)
    would change det W without changing the log-det: refused too."""
    if not (np.all((P == 0) | (P == 1)) and np.all(P.sum(0) == 1) and np.all(P.sum(1) == 1)):
        raise ExportError("%s is not a permutation matrix" % names[0])
    if not np.all(np.abs(sign) == 1):
        raise ExportError("%s is not all +-1" % names[1])
    C = P.shape[0]
    want = {"lower": np.tril(np.ones((C, C)), -1), "upper": np.triu(np.ones((C, C)), 1), "eye": np.eye(C)}
    what = {"lower": "the strict lower triangle", "upper": "the strict upper triangle", "eye": "the identity"}
    for name, stored, kind in masks:
        if stored is not None and not np.array_equal(stored, want[kind]):
            raise ExportError("%s is not %s (as upstream registers it)" % (name, what[kind]))
    return P @ (L * want["lower"] + want["eye"]) @ (U * want["upper"] + np.diag(sign * np.exp(log_s))), float(np.sum(log_s))


def lu_matrix(sd, p):
    g = lambda k: sd[p + "invconv." + k]  # noqa: E731
    return lu_weight(g("w_p"), g("w_l"), g("w_u"), g("s_sign"), g("w_s"), (p + "invconv.w_p", p + "invconv.s_sign"),
                     [(p + "invconv." + k, g(k), kind) for k, kind in
                      (("l_mask", "lower"), ("u_mask", "upper"), ("l_eye", "eye"))])


def affine_op(add, pre, p, A, b, logdet_px):
    """The AFFINE op of step p (tensors named pre + A, b, A_inv, b_inv; add stores them):
    y = A x + b and its inverse; ExportError where A has no inverse (exactly singular,
    as where an exp() of a scale underflows to 0, or one that is not finite), and where
    the fold itself overflowed."""
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
        raise ExportError("%s: the actnorm folded into the 1x1 conv overflows" % p)
    try:
        A_inv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        A_inv = None
    if A_inv is None or not np.all(np.isfinite(A_inv)):
        raise ExportError("%s: 1x1 conv not invertible" % p)
    return (OP_AFFINE, [A.shape[0]], [float(logdet_px)],
            [add(pre + "A", A), add(pre + "b", b), add(pre + "A_inv", A_inv), add(pre + "b_inv", -A_inv @ b)])


def edge_table(w):
    """rosinality pad-with-1: edge[3*ky+kx][o] = sum_i w[o][i][ky][kx]; w [O, I, 3, 3]."""
    return w.sum(1).reshape(w.shape[0], 9).T.copy()


def zero_conv(sd, p):
    """A ZeroConv2d with its exp(3*scale) folded into weight and bias."""
    f = np.exp(3.0 * sd[p + "scale"].reshape(-1))
    w = sd[p + "conv.weight"] * f[:, None, None, None]
    b = sd[p + "conv.bias"] * f
    return w, b, edge_table(w)


def build_rosinality(sd, info):
    """-> (tensors [(name, float64 array)], ops [(code, ints, f64s, names)])."""
    tensors, ops = [], []

    def add(name, arr):
        tensors.append((name, arr))
        return name

    c = info["in_channels"]
    hid = info["hidden"]
    kind = 0 if info["affine"] else 1
    for i in range(info["n_block"]):
        ops.append((OP_SQUEEZE, [c], [], []))
        C = 4 * c
        for j in range(info["n_flow"]):
            p = "blocks.%d.flows.%d." % (i, j)
            pre = "b%d.f%d." % (i, j)
            scale = sd[p + "actnorm.scale"].reshape(-1)
            loc = sd[p + "actnorm.loc"].reshape(-1)
            if info["lu_flags"][i][j]:
                W, logdet_w = lu_matrix(sd, p)
            else:
                W = sd[p + "invconv.weight"].reshape(C, C)
                sign, logdet_w = np.linalg.slogdet(W)
                if sign == 0:
                    raise ExportError("%sinvconv.weight is singular" % p)
            if np.any(scale == 0):
                raise ExportError("%sactnorm.scale has zeros" % p)
            A = W @ np.diag(scale)
            b = W @ (scale * loc)
            ops.append(affine_op(add, pre, p, A, b, np.sum(np.log(np.abs(scale))) + logdet_w))
            q = p + "coupling.net."
            w3, b3, e3 = zero_conv(sd, q + "4.")
            if info["affine"]:
                b3 = b3.copy()
                b3[:C // 2] += 2.0  # sigmoid(log_s + 2), log_s = first C/2 channels
            ops.append((OP_COUPLING, [C, hid, kind, 0], [],
                        [add(pre + "w1", sd[q + "0.weight"]), add(pre + "b1", sd[q + "0.bias"]), None,
                         add(pre + "w2", sd[q + "2.weight"]), add(pre + "b2", sd[q + "2.bias"]),
                         add(pre + "w3", w3), add(pre + "b3", b3), add(pre + "e3", e3)]))
        w, b, e = zero_conv(sd, "blocks.%d.prior." % i)
        if i < info["n_block"] - 1:
            ops.append((OP_SPLIT, [C, 0], [],
                        [add("b%d.split.w" % i, w), add("b%d.split.b" % i, b), add("b%d.split.e" % i, e)]))
            c = C // 2
        else:
            ops.append((OP_TOP_PRIOR, [C, 0, 1], [], [add("top.b", b), add("top.e", e)]))
    return tensors, ops


# ---- y0ast/Glow-PyTorch and its ancestor chaiyujin/glow-pytorch ------------
Y0AST_PERMS = ("invconv", "shuffle", "reverse")
# The two share the model and its math; their state_dicts differ in names only.
# net: a step's coupling network; conv: the weight of its Conv (+ ActNorm) layers;
# zeros: a Conv2dZeros' conv (chaiyujin's Conv2d/Conv2dZeros are nn.Conv2d
# subclasses); lower/upper: the LU factors; top: learn_top's Conv2dZeros;
# prior_batch: prior_h is [batch_size, 2C, h, w] (else [1, 2C, h, w]);
# input_map: (a, c) with the source's input x' = a x + c for glowrt's x, or None.
# chaiyujin trains on ToTensor's u/255 in [0, 1]: x' = 256/255 x + 0.5 is
# the same pixel u as glowrt's x = (u + 0.5)/256 - 0.5.
# linear: a LinearZeros' nn.Linear (y_condition's project_ycond / project_class;
# chaiyujin's LinearZeros subclasses nn.Linear).
Y0AST_LAYOUTS = {
    "y0ast": dict(net="block.", conv="conv.", zeros="conv.", lower="lower", upper="upper",
                  top="learn_top_fn.", prior_batch=False, input_map=None, linear="linear."),
    "chaiyujin": dict(net="f.", conv="", zeros="", lower="l", upper="u",
                      top="learn_top.", prior_batch=True, input_map=(256.0 / 255.0, 0.5), linear=""),
}
Y0AST_COND = ("project_ycond.", "project_class.")


def _an_keys(expected, p, c, inited):
    """An ActNorm2d's keys: bias, logs [1, C, 1, 1] (+ the `inited` flag if stored)."""
    expected[p + "bias"] = (1, c, 1, 1)
    expected[p + "logs"] = (1, c, 1, 1)
    if inited:
        expected[p + "inited"] = ()


def _zeros_keys(expected, p, cin, cout, L):
    """A Conv2dZeros: (conv.)weight, (conv.)bias, logs [Co, 1, 1]."""
    expected[p + L["zeros"] + "weight"] = (cout, cin, 3, 3)
    expected[p + L["zeros"] + "bias"] = (cout,)
    expected[p + "logs"] = (cout, 1, 1)


def check_class(n_y, label, what):
    """A class-conditional model (n_y classes; 0: unconditional) needs --class K,
    0 <= K < n_y; an unconditional one takes none. what: the source's switch."""
    if n_y and label is None:
        raise ExportError("class-conditional model (%s, %d classes): pass --class K to export log p(x | y = K)"
                          % (what, n_y))
    if label is not None and not (n_y and 0 <= label < n_y):
        raise ExportError("--class %d: the model %s" % (label, "has %d classes" % n_y if n_y
                                                         else "is not class-conditional"))


def _linear_zeros_keys(expected, p, cin, cout, L):
    """A LinearZeros: (linear.)weight [out, in], (linear.)bias, logs [out]."""
    expected[p + L["linear"] + "weight"] = (cout, cin)
    expected[p + L["linear"] + "bias"] = (cout,)
    expected[p + "logs"] = (cout,)


def infer_y0ast(sd, flow_permutation=None, layout="y0ast", label=None):
    """Structure of a y0ast/Glow-PyTorch (or, with layout="chaiyujin", a
    chaiyujin/glow-pytorch) state_dict; checks the key set and shapes.
    flow_permutation: what to assume when the steps store no permutation keys
    (upstream keeps Permute2d's indices as plain attributes). label: --class,
    required by a class-conditional (y_condition) model and refused otherwise."""
    L = Y0AST_LAYOUTS[layout]
    for other, M in Y0AST_LAYOUTS.items():
        net = [k for k in sd if other != layout and re.match(r"flow\.layers\.\d+\.%s\.0\." % M["net"][:-1], k)]
        if net:
            raise ExportError("%s is a key of %s's layout: export the checkpoint as %s" % (net[0], other, other))
    steps, splits = set(), set()
    for k in sd:
        m = re.match(r"flow\.layers\.(\d+)\.(.*)$", k)
        if m:
            (splits if m.group(2).startswith("conv.") else steps).add(int(m.group(1)))
        elif not (k == "prior_h" or k.startswith((L["top"],) + Y0AST_COND)):
            raise ExportError("unexpected key %s" % k)
    if not steps:
        raise ExportError("no flow.layers.* keys: not a %s Glow state_dict" % layout)
    n_block = len(splits) + 1
    if len(steps) % n_block:
        raise ExportError("missing keys: %d flow steps for %d levels" % (len(steps), n_block))
    n_flow = len(steps) // n_block
    # layer j: level i = [squeeze, K steps, split (not after the last level)]
    want_steps = {i * (n_flow + 2) + 1 + k for i in range(n_block) for k in range(n_flow)}
    want_splits = {i * (n_flow + 2) + n_flow + 1 for i in range(n_block - 1)}
    if steps != want_steps or splits != want_splits:
        bad = sorted((steps ^ want_steps) | (splits ^ want_splits))
        raise ExportError("missing keys: layer %d does not fit L=%d K=%d" % (bad[0], n_block, n_flow))
    j0 = min(steps)
    k0 = "flow.layers.%d.actnorm.bias" % j0
    if k0 not in sd:
        raise ExportError("missing key " + k0)
    if sd[k0].ndim != 4 or sd[k0].shape[1] % 4:
        raise ExportError("inconsistent shape of %s: %s" % (k0, sd[k0].shape))
    c_in = sd[k0].shape[1] // 4
    kw = "flow.layers.%d.%s0.%sweight" % (j0, L["net"], L["conv"])
    k4 = "flow.layers.%d.%s4.%sweight" % (j0, L["net"], L["zeros"])
    for k in (kw, k4):
        if k not in sd:
            raise ExportError("missing key " + k)
    hidden = sd[kw].shape[0]
    if sd[k4].shape[0] == 4 * c_in:
        affine = True
    elif sd[k4].shape[0] == 2 * c_in:
        affine = False
    else:
        raise ExportError("inconsistent shape of %s: %s" % (k4, sd[k4].shape))
    inited = k0[:-len("bias")] + "inited" in sd

    # permutation of each step, from its keys; upstream uses one kind throughout
    kinds = set()
    for j in steps:
        p = "flow.layers.%d." % j
        if p + "invconv." + L["lower"] in sd:
            kinds.add("lu")
        elif p + "invconv.weight" in sd:
            kinds.add("plain")
        elif p + "shuffle.indices" in sd:
            kinds.add("shuffle")
        elif p + "reverse.indices" in sd:
            kinds.add("reverse")
        else:
            kinds.add(None)
    if len(kinds) != 1:
        raise ExportError("steps mix permutations (%s)" % ", ".join(sorted(str(k) for k in kinds)))
    perm = kinds.pop()
    perm_buffers = perm in ("shuffle", "reverse")
    if perm is None:
        # upstream does not save Permute2d's indices: reverse order is known, a shuffle is lost
        if flow_permutation != "reverse":
            raise ExportError("the steps store no permutation (upstream does not save Permute2d indices): "
                              "pass --flow-permutation reverse for a 'reverse' model; a 'shuffle' model's "
                              "order is lost and cannot be exported")
        perm = "reverse"
    elif flow_permutation is not None and flow_permutation != {"lu": "invconv", "plain": "invconv"}.get(perm, perm):
        raise ExportError("--flow-permutation %s, but the checkpoint's steps are %s" % (flow_permutation, perm))
    lu_masks = perm == "lu" and ("flow.layers.%d.invconv.l_mask" % j0) in sd

    expected = {}
    c = c_in
    for i in range(n_block):
        C = 4 * c
        co = C if affine else C // 2
        for k in range(n_flow):
            p = "flow.layers.%d." % (i * (n_flow + 2) + 1 + k)
            _an_keys(expected, p + "actnorm.", C, inited)
            if perm == "lu":
                if layout == "chaiyujin" and p + "invconv.p" not in sd and p + "invconv.sign_s" not in sd:
                    raise ExportError("missing keys %sinvconv.p, sign_s: chaiyujin/glow-pytorch before 840971f "
                                      "(April 2019) did not save an LU step's permutation, so it is lost" % p)
                for n, s in (("p", (C, C)), ("sign_s", (C,)), (L["lower"], (C, C)), (L["upper"], (C, C)),
                             ("log_s", (C,))):
                    expected[p + "invconv." + n] = s
                if lu_masks:
                    expected[p + "invconv.l_mask"] = (C, C)
                    expected[p + "invconv.eye"] = (C, C)
            elif perm == "plain":
                # upstream stores [C, C]; accept the conv-shaped [C, C, 1, 1] too
                w = sd.get(p + "invconv.weight")
                expected[p + "invconv.weight"] = (C, C, 1, 1) if w is not None and w.ndim == 4 else (C, C)
            elif perm_buffers:
                expected[p + perm + ".indices"] = (C,)
                if p + perm + ".indices_inverse" in sd:
                    expected[p + perm + ".indices_inverse"] = (C,)
            q = p + L["net"]
            expected[q + "0." + L["conv"] + "weight"] = (hidden, C // 2, 3, 3)
            _an_keys(expected, q + "0.actnorm.", hidden, inited)
            expected[q + "2." + L["conv"] + "weight"] = (hidden, hidden, 1, 1)
            _an_keys(expected, q + "2.actnorm.", hidden, inited)
            _zeros_keys(expected, q + "4.", hidden, co, L)
        if i < n_block - 1:
            _zeros_keys(expected, "flow.layers.%d.conv." % (i * (n_flow + 2) + n_flow + 1), C // 2, C, L)
            c = C // 2
        else:
            c = C
    learn_top = any(k.startswith(L["top"]) for k in sd)
    if learn_top:
        _zeros_keys(expected, L["top"], 2 * c, 2 * c, L)
    # y_condition: project_ycond LinearZeros(y_classes, 2C), project_class LinearZeros(C, y_classes)
    n_y = 0
    if any(k.startswith(Y0AST_COND) for k in sd):
        ky = "project_ycond." + L["linear"] + "weight"
        if ky not in sd:
            raise ExportError("missing key " + ky)
        if sd[ky].ndim != 2 or sd[ky].shape[1] < 1:
            raise ExportError("inconsistent shape of %s: %s" % (ky, tuple(sd[ky].shape)))
        n_y = int(sd[ky].shape[1])
        _linear_zeros_keys(expected, "project_ycond.", n_y, 2 * c, L)
        _linear_zeros_keys(expected, "project_class.", c, n_y, L)
    ph = sd.get("prior_h")
    ok4 = ph is not None and ph.ndim == 4 and ph.shape[0] >= 1
    # chaiyujin: one all-zero row per image of its training batch (batch_size / number of GPUs)
    expected["prior_h"] = ((ph.shape[0] if ok4 and L["prior_batch"] else 1), 2 * c) + \
        (tuple(ph.shape[2:]) if ok4 else (1, 1))
    check_keys(sd, expected, "inited")
    for k, shape in expected.items():
        if k.endswith("indices") or k.endswith("indices_inverse"):
            if sorted(np.asarray(sd[k]).astype(np.int64).tolist()) != list(range(shape[0])):
                raise ExportError("%s is not a permutation" % k)
    for j in steps:
        q = "flow.layers.%d.%s." % (j, perm)
        if q + "indices_inverse" in sd and not np.array_equal(
                np.argsort(np.asarray(sd[q + "indices"])), np.asarray(sd[q + "indices_inverse"])):
            raise ExportError("%sindices_inverse does not invert %sindices" % (q, q))
    if np.any(sd["prior_h"] != 0):
        raise ExportError("prior_h is not zero: a spatially varying top prior is not supported")
    check_class(n_y, label, "y_condition")
    return dict(in_channels=c_in, n_block=n_block, n_flow=n_flow, hidden=hidden, affine=affine,
                perm=perm, lu_masks=lu_masks, perm_buffers=perm_buffers, inited=inited,
                learn_top=learn_top, top_hw=tuple(sd["prior_h"].shape[2:]), prior_batch=sd["prior_h"].shape[0],
                invconv={"lu": "lu", "plain": "plain"}.get(perm, "permutation"), layout=layout, n_y=n_y)


def y0ast_zeros(sd, p, L):
    """A Conv2dZeros (zero padding, so no edge table) with exp(3*logs) folded in."""
    f = np.exp(3.0 * sd[p + "logs"].reshape(-1))
    return sd[p + L["zeros"] + "weight"] * f[:, None, None, None], sd[p + L["zeros"] + "bias"] * f


def y0ast_conv_actnorm(sd, p, L):
    """Conv (no bias) + ActNorm2d: (conv(x) + bias) * exp(logs) as one conv + bias."""
    s = np.exp(sd[p + "actnorm.logs"].reshape(-1))
    return sd[p + L["conv"] + "weight"] * s[:, None, None, None], sd[p + "actnorm.bias"].reshape(-1) * s


def y0ast_perm_matrix(sd, p, perm, C, L):
    """(W, ln|det W|) of a step's permutation: y = W x per pixel."""
    if perm == "lu":
        q = p + "invconv."
        return lu_weight(sd[q + "p"], sd[q + L["lower"]], sd[q + L["upper"]], sd[q + "sign_s"], sd[q + "log_s"],
                         (q + "p", q + "sign_s"), [(q + "l_mask", sd.get(q + "l_mask"), "lower"),
                                                   (q + "eye", sd.get(q + "eye"), "eye")])
    if perm == "plain":
        W = sd[p + "invconv.weight"].reshape(C, C)
        sign, logdet = np.linalg.slogdet(W)
        if sign == 0:
            raise ExportError("%sinvconv.weight is singular" % p)
        return W, float(logdet)
    key = p + perm + ".indices"
    idx = np.asarray(sd[key]).astype(np.int64) if key in sd else np.arange(C - 1, -1, -1)
    W = np.zeros((C, C))
    W[np.arange(C), idx] = 1.0  # y[i] = x[idx[i]]
    return W, 0.0


def build_y0ast(sd, info, label=None):
    """-> (tensors [(name, float64 array)], ops [(code, ints, f64s, names)]).
    label: the class K of a class-conditional model."""
    tensors, ops = [], []

    def add(name, arr):
        tensors.append((name, arr))
        return name

    L = Y0AST_LAYOUTS[info["layout"]]
    c = info["in_channels"]
    hid, K = info["hidden"], info["n_flow"]
    for i in range(info["n_block"]):
        ops.append((OP_SQUEEZE, [c], [], []))
        C = 4 * c
        for k in range(K):
            p = "flow.layers.%d." % (i * (K + 2) + 1 + k)
            pre = "b%d.f%d." % (i, k)
            logs = sd[p + "actnorm.logs"].reshape(-1)
            bias = sd[p + "actnorm.bias"].reshape(-1)
            s = np.exp(logs)
            W, logdet_w = y0ast_perm_matrix(sd, p, info["perm"], C, L)
            A = W @ np.diag(s)
            b = W @ (s * bias)
            if L["input_map"] and i == 0 and k == 0:
                # the source sees x' = a x + c: A x' + b = (a A) x + (b + c A 1); det gains a^C
                a, c0 = L["input_map"]
                b = b + c0 * A.sum(axis=1)
                A = a * A
                logdet_w += C * np.log(a)
            ops.append(affine_op(add, pre, p, A, b, np.sum(logs) + logdet_w))
            q = p + L["net"]
            w1, b1 = y0ast_conv_actnorm(sd, q + "0.", L)
            w2, b2 = y0ast_conv_actnorm(sd, q + "2.", L)
            w3, b3 = y0ast_zeros(sd, q + "4.", L)
            if info["affine"]:
                b3 = b3.copy()
                b3[1::2] += 2.0  # sigmoid(h[1::2] + 2): scale channels interleaved ("cross")
            ops.append((OP_COUPLING, [C, hid, 0 if info["affine"] else 1, 1 if info["affine"] else 0], [],
                        [add(pre + "w1", w1), add(pre + "b1", b1), None, add(pre + "w2", w2),
                         add(pre + "b2", b2), add(pre + "w3", w3), add(pre + "b3", b3), None]))
        if i < info["n_block"] - 1:
            w, b = y0ast_zeros(sd, "flow.layers.%d.conv." % (i * (K + 2) + K + 1), L)
            ops.append((OP_SPLIT, [C, 1], [], [add("b%d.split.w" % i, w), add("b%d.split.b" % i, b), None]))
            c = C // 2
        elif info["learn_top"] or info["n_y"]:
            # Conv2dZeros over the all-zero prior_h, zero padded: its bias everywhere
            b = y0ast_zeros(sd, L["top"], L)[1] if info["learn_top"] else np.zeros(2 * C)
            if info["n_y"]:
                # y_condition: h += project_ycond(one_hot(K)) after learn_top, the same at every
                # position: LinearZeros (W[:, K] + bias) * exp(3 * logs)
                q = "project_ycond."
                b = b + (sd[q + L["linear"] + "weight"][:, label] + sd[q + L["linear"] + "bias"]) * \
                    np.exp(3.0 * sd[q + "logs"])
            # zero edge table: taps outside read zeros (glowfile.Plan wants the tensor present)
            ops.append((OP_TOP_PRIOR, [C, 0, 1], [], [add("top.b", b), add("top.e", np.zeros((9, 2 * C)))]))
        else:
            ops.append((OP_TOP_PRIOR, [C, 0, 0], [], [None, None]))
    return tensors, ops


# ---- openai/glow (TensorFlow) -----------------------------------------------
def load_openai(path, ema=False, label=None):
    """(variables {name: float64 / int64 array}, info, hps) of an openai/glow checkpoint."""
    import tfckpt
    try:
        prefix = tfckpt.resolve_prefix(path)
        listed = tfckpt.list_variables(prefix)
        hps = glow_openai.logdir_hps(prefix)
        info = glow_openai.infer({k: tuple(v[1]) for k, v in listed.items()}, hps)
        sel = glow_openai.select(listed, info, ema)
        stored = tfckpt.read_variables(prefix, sorted(set(sel.values())))
    except (tfckpt.CheckpointError, glow_openai.LayoutError) as e:
        raise ExportError(str(e))
    check_class(info["n_y"], label, "ycond")
    var = {}
    for k, shape in glow_openai.expected_variables(info).items():
        v = np.asarray(stored[sel[k]])
        if tuple(v.shape) != shape:
            raise ExportError("%s has shape %s, expected %s" % (sel[k], tuple(v.shape), shape))
        if k.endswith(("indices", "indices_inverse")):
            if v.dtype.kind not in "iu" or sorted(v.astype(np.int64).tolist()) != list(range(shape[0])):
                raise ExportError("%s is not a permutation" % sel[k])
            var[k] = v.astype(np.int64)
            continue
        if v.dtype.kind != "f":
            raise ExportError("%s is %s, not floating point" % (sel[k], v.dtype))
        var[k] = v.astype(np.float64)
        if not np.all(np.isfinite(var[k])):
            raise ExportError("non-finite values in %s" % sel[k])
    for k in var:
        if k.endswith("indices") and not np.array_equal(np.argsort(var[k]), var[k + "_inverse"]):
            raise ExportError("%s_inverse does not invert %s" % (sel[k], sel[k]))
    return var, dict(info, prefix=prefix), hps


def openai_conv(var, p, cin, scale):
    """A TF 3x3 edge-bias conv [3, 3, cin + 1, out] times scale per output ->
    (w [out, cin, 3, 3], edge table [9, out]): the extra input channel is 1 on
    the padded border ring, so its taps are the edge table."""
    W = var[p + "W"] * scale
    return W[:, :, :cin, :].transpose(3, 2, 0, 1).copy(), W[:, :, cin, :].reshape(9, -1).copy()


def openai_conv_actnorm(var, p, cin):
    """conv + ActNorm: ((conv(x) + b) * exp(3 logs)) as one conv + bias (+ edge table)."""
    s = np.exp(3.0 * var[p + "actnorm_scale/logs"].reshape(-1))
    b = var[p + "actnorm_center/b"].reshape(-1) * s
    if var[p + "W"].shape[0] == 1:
        return (var[p + "W"][0, 0] * s).T[:, :, None, None].copy(), b, None
    w, e = openai_conv(var, p, cin, s)
    return w, b, e


def openai_zeros(var, p, cin):
    """conv2d_zeros: (conv(x) + b) * exp(3 logs) -> (w, b, edge table)."""
    f = np.exp(3.0 * var[p + "logs"].reshape(-1))
    w, e = openai_conv(var, p, cin, f)
    return w, var[p + "b"].reshape(-1) * f, e


def openai_perm_matrix(var, p, perm, C):
    """(W, ln|det W|) of a step's permutation, y = W x per pixel (openai's x W)."""
    if perm == "invconv":
        Wt = var[p + "invconv/W"]
        sign, logdet = np.linalg.slogdet(Wt)
        if sign == 0:
            raise ExportError("%sinvconv/W is singular" % p)
        return Wt.T, float(logdet)
    if perm == "lu":
        q = p + "invconv/"
        W, logdet = lu_weight(var[q + "P"], var[q + "L"], var[q + "U"], var[q + "sign_S"], var[q + "log_S"],
                              (q + "P", q + "sign_S"))
        return W.T, logdet
    idx = var[p + "shuffle/indices"] if perm == "shuffle" else np.arange(C - 1, -1, -1)
    W = np.zeros((C, C))
    W[np.arange(C), idx] = 1.0  # y[i] = x[idx[i]]
    return W, 0.0


def build_openai(var, info, label=None):
    """-> (tensors [(name, float64 array)], ops [(code, ints, f64s, names)])."""
    tensors, ops = [], []

    def add(name, arr):
        tensors.append((name, arr))
        return name

    c, hid = info["in_channels"], info["width"]
    for i in range(info["n_levels"]):
        ops.append((OP_SQUEEZE, [c], [], []))
        C = 4 * c
        for k in range(info["depth"]):
            p = "model/%d/%d/" % (i, k)
            pre = "b%d.f%d." % (i, k)
            logs = 3.0 * var[p + "actnorm_scale/logs"].reshape(-1)
            s = np.exp(logs)
            W, logdet_w = openai_perm_matrix(var, p, info["perm"], C)
            A = W @ np.diag(s)
            b = W @ (s * var[p + "actnorm_center/b"].reshape(-1))
            ops.append(affine_op(add, pre, p, A, b, np.sum(logs) + logdet_w))
            q = p + "f1/"
            w1, b1, e1 = openai_conv_actnorm(var, q + "l_1/", C // 2)
            w2, b2, _ = openai_conv_actnorm(var, q + "l_2/", hid)
            w3, b3, e3 = openai_zeros(var, q + "l_last/", hid)
            if info["affine"]:
                b3[1::2] += 2.0  # scale = sigmoid(h[1::2] + 2), shift = h[0::2]
            ops.append((OP_COUPLING, [C, hid, 0 if info["affine"] else 1, 1 if info["affine"] else 0], [],
                        [add(pre + "w1", w1), add(pre + "b1", b1), add(pre + "e1", e1), add(pre + "w2", w2),
                         add(pre + "b2", b2), add(pre + "w3", w3), add(pre + "b3", b3), add(pre + "e3", e3)]))
        if i < info["n_levels"] - 1:
            w, b, e = openai_zeros(var, "model/pool%d/conv/" % i, C // 2)
            ops.append((OP_SPLIT, [C, 1], [], [add("b%d.split.w" % i, w), add("b%d.split.b" % i, b),
                                               add("b%d.split.e" % i, e)]))
            c = C // 2
        else:
            # the prior conv sees zeros: its bias everywhere plus its edge channel's taps;
            # a class-conditional model adds its class embedding to every position
            b, e = np.zeros(2 * C), np.zeros((9, 2 * C))
            if info["learntop"]:
                _, b, e = openai_zeros(var, "model/prior/p/", 2 * C)
            if info["n_y"]:
                b = b + (var["model/prior/y_emb/W"][label] + var["model/prior/y_emb/b"][0]) * \
                    np.exp(3.0 * var["model/prior/y_emb/logs"][0])
            if info["learntop"] or info["n_y"]:
                ops.append((OP_TOP_PRIOR, [C, 0, 1], [], [add("top.b", b), add("top.e", e)]))
            else:
                ops.append((OP_TOP_PRIOR, [C, 0, 0], [], [None, None]))
    return tensors, ops


def self_check_openai(path, var, info, label, height, width, n=2):
    """Re-read the file (all CRCs) and run its plan in float64 against openai's
    model run literally (models/glow_openai.py) in float64."""
    g = glowfile.read_glow(path, verify=True)
    return compare_plan(g, glow_openai.OpenaiGlow(var, info, label), info["in_channels"], height, width, n)


def compare_plan(g, model, channels, height, width, n):
    """The file's plan (glowfile, float64) against the float64 module on n
    random inputs: log_p and eps; raises ExportError beyond the tolerances."""
    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, height, width, generator=gen, dtype=torch.float64) - 0.5
    with torch.no_grad():
        ref = model.log_prob(x)
        ref_eps = model.encode(x)
        ll, eps = glowfile.Plan(g).forward(x)
    d_ll = (ll - ref).abs().max().item()
    d_eps = (eps - ref_eps).abs().max().item()
    tol = 1e-4 * ref.abs().max().item() + 1e-2
    if not (d_ll <= tol and d_eps <= 1e-3):
        raise ExportError("self-check failed: max|dlog_p| %.3g, max|deps| %.3g" % (d_ll, d_eps))
    return d_ll, d_eps


def rosinality_module(info):
    """models/glow.py's Glow with the structure infer_rosinality found,
    each flow's 1x1 conv in its own variant (LU or plain); not loaded."""
    from glow import Glow, InvConv2d
    model = Glow(info["in_channels"], info["n_flow"], info["n_block"], affine=info["affine"],
                 conv_lu=True, hidden=info["hidden"])
    for i, row in enumerate(info["lu_flags"]):
        for j, lu in enumerate(row):
            if not lu:
                model.blocks[i].flows[j].invconv = InvConv2d(model.blocks[i].flows[j].actnorm.loc.shape[1])
    return model


def self_check_y0ast(path, sd, info, height, width, n=2, label=None):
    """Re-read the file (all CRCs) and run its plan in float64 against
    models/glow_y0ast.py (loaded strictly with the state_dict) in float64;
    a class-conditional model's log p(x | y = label)."""
    import torch
    from glow_y0ast import Glow as Y0astGlow
    g = glowfile.read_glow(path, verify=True)
    perm = "invconv" if info["perm"] in ("lu", "plain") else info["perm"]
    bufs = [b for b, on in (("inited", info["inited"]), ("lu_masks", info["lu_masks"]),
                            ("perm", info["perm_buffers"])) if on]
    model = Y0astGlow(info["in_channels"], info["hidden"], info["n_flow"], info["n_block"], perm,
                      "affine" if info["affine"] else "additive", info["perm"] == "lu", info["learn_top"],
                      info["top_hw"], bufs, layout=info["layout"], prior_batch=info["prior_batch"],
                      y_classes=info["n_y"])
    model = model.double().eval()
    msd = model.state_dict()
    # plain weights may be stored conv-shaped; everything else loads as is (strict)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)).reshape(msd[k].shape).to(msd[k].dtype)
                           for k, v in sd.items()})
    model.mark_initialized()
    return compare_plan(g, model.given(label) if info["n_y"] else model, info["in_channels"], height, width, n)


def train_progress(ckpt):
    """models/train.py's progress.json beside the checkpoint, as a dict ({} when there is none)."""
    prog = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "progress.json")
    try:
        d = json.load(open(prog))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def train_info(ckpt):
    """train.* metadata from progress.json beside the checkpoint (models/train.py)."""
    d = train_progress(ckpt)
    if not d:
        return []
    m = re.search(r"(\d+)\.pt$", os.path.basename(ckpt))
    if not m:
        return []
    step = int(m.group(1))
    out = [("train.step", step)]
    hist = [h for h in d.get("history", []) if h.get("step", 0) <= step]
    if hist:
        recent = [h["train_bpd"] for h in hist[-10:]]
        out.append(("train.bpd", float(sum(recent) / len(recent))))
        out.append(("train.epochs", float(hist[-1].get("epoch", 0.0))))
    if d.get("test_bpd") is not None and d.get("test_step") == step:
        out.append(("train.test_bpd", float(d["test_bpd"])))
        out.append(("train.test_images", int(d.get("test_n", 0))))
    if isinstance(d.get("config", {}).get("holdout_class"), int):
        out.append(("train.holdout_class", int(d["config"]["holdout_class"])))
    return out


def trained_n_bits(ckpt):
    """n_bits from models/train.py's progress.json beside the checkpoint, or None."""
    config = train_progress(ckpt).get("config")
    v = config.get("n_bits") if isinstance(config, dict) else None
    return v if isinstance(v, int) else None


QUIET = False


def progress(msg):
    """A progress line on stderr, only for a person watching (a terminal; not with -q):
    an error stays the one line on stderr that scripts read."""
    if not QUIET and sys.stderr.isatty():
        print("export: " + msg, file=sys.stderr, flush=True)


def parse_size(s):
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", s)
    if not m:
        raise ExportError("bad --image-size %r (S or HxW)" % s)
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    return h, w


def self_check(path, sd, info, height, width, n=2):
    """Re-read the file (all CRCs) and run its plan in float64 against the
    state_dict's own model (models/glow.py) in float64."""
    import torch
    g = glowfile.read_glow(path, verify=True)
    model = rosinality_module(info)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    model = model.double().eval()
    return compare_plan(g, model, info["in_channels"], height, width, n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source_format", choices=["rosinality", "y0ast", "chaiyujin", "openai"])
    ap.add_argument("checkpoint")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--image-size", help="S or HxW (default size stored in the file); required but for openai, "
                    "where train.txt beside the checkpoint gives it")
    ap.add_argument("--n-bits", type=int,
                    help="bits per pixel the model was trained at: a state_dict does not record it "
                         "(rosinality's train.py: 5 by default; y0ast's and models/train.py: 8); "
                         "read from models/train.py's progress.json beside the checkpoint when there; "
                         "chaiyujin: 8 (its only setting), the default; openai: n_bits_x in train.txt "
                         "beside the checkpoint")
    ap.add_argument("--alignment", type=int, default=64)
    ap.add_argument("--flow-permutation", choices=Y0AST_PERMS,
                    help="y0ast, chaiyujin: the model's flow_permutation, needed when its steps store no "
                         "permutation keys")
    ap.add_argument("--ema", action="store_true",
                    help="openai: export the polyak averages (.../ExponentialMovingAverage) instead of the weights "
                         "(upstream's train.py evaluates and samples with the weights)")
    ap.add_argument("--class", dest="label", type=int,
                    help="openai, y0ast, chaiyujin: the class K (0-based) of a class-conditional model (openai's "
                         "ycond, y0ast's and chaiyujin's y_condition), required for one and refused otherwise; "
                         "the file gives log p(x | y = K) (its one-hot class vector; the classifier head is "
                         "not used)")
    ap.add_argument("--no-check", action="store_true", help="skip the float64 self-check")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    global QUIET
    QUIET = a.quiet
    try:
        glowfile.output_target(a.output)  # refused now, not after the checkpoint is read and folded
        if a.source_format != "openai" and a.ema:
            raise ExportError("--ema is for openai checkpoints")
        if a.source_format == "rosinality" and a.label is not None:
            raise ExportError("--class is for class-conditional openai, y0ast and chaiyujin checkpoints "
                              "(rosinality's Glow has no classes)")
        if not (64 <= a.alignment <= MAX_ALIGNMENT and a.alignment & (a.alignment - 1) == 0):
            raise ExportError("--alignment %d: a power of two from 64 to %d (what glowrt loads)"
                              % (a.alignment, MAX_ALIGNMENT))
        progress("reading %s" % a.checkpoint)
        if a.source_format == "openai":
            var, info, hps = load_openai(a.checkpoint, a.ema, a.label)
            # train.py writes both as positive ints; anything else is not its train.txt
            known, size = hps.get("n_bits_x"), hps.get("image_size")
            if known is not None and (type(known) is not int or not 1 <= known <= 8):
                raise ExportError("train.txt beside the checkpoint: n_bits_x %.40s is not an integer in 1..8"
                                  % repr(known))
            if a.image_size is None and size is not None:
                if type(size) is not int or size < 1:
                    raise ExportError("train.txt beside the checkpoint: image_size %.40s is not a positive integer "
                                      "(give --image-size)" % repr(size))
                a.image_size = str(size)
        else:
            known = trained_n_bits(a.checkpoint)
        if a.image_size is None:
            raise ExportError("--image-size is required" + (" (no train.txt beside the checkpoint gives it)"
                                                            if a.source_format == "openai" else ""))
        if a.source_format == "chaiyujin":
            # its data pipeline is fixed: ToTensor (u/255), noise N(0, 1/256^2), -log(256) per pixel
            if a.n_bits not in (None, 8):
                raise ExportError("--n-bits %d: chaiyujin/glow-pytorch trains on 8-bit images only" % a.n_bits)
            a.n_bits = 8
        if a.n_bits is None and known is None:
            raise ExportError("--n-bits is required: a %s does not record the bits per pixel the model "
                              "was trained at (rosinality's train.py defaults to 5, y0ast's to 8, openai's to 8)"
                              % ("checkpoint" if a.source_format == "openai" else "state_dict"))
        if a.n_bits is not None and known is not None and a.n_bits != known:
            raise ExportError("--n-bits %d contradicts n_bits %d in the checkpoint's %s"
                              % (a.n_bits, known, "train.txt" if a.source_format == "openai" else "progress.json"))
        a.n_bits = a.n_bits if a.n_bits is not None else known
        if not 1 <= a.n_bits <= 8:
            raise ExportError("--n-bits must be 1..8")
        h, w = parse_size(a.image_size)
        if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
            raise ExportError("image size %.24sx%.24s is out of range (1..%d: glowrt refuses to load beyond)"
                              % (h, w, MAX_IMAGE_SIDE))
        y0ast = a.source_format in ("y0ast", "chaiyujin")
        if a.source_format == "openai":
            info = dict(info, n_block=info["n_levels"], n_flow=info["depth"], hidden=info["width"],
                        invconv={"invconv": "plain", "lu": "lu"}.get(info["perm"], "permutation"))
        else:
            sd = load_state_dict(a.checkpoint)
            info = infer_y0ast(sd, a.flow_permutation, a.source_format, a.label) if y0ast else infer_rosinality(sd)
        f = 2 ** info["n_block"]
        if h % f or w % f or h < f or w < f:
            raise ExportError("image size %dx%d not divisible by 2^n_block = %d" % (h, w, f))
        progress("folding %s: L=%d K=%d width %d, in float64" % (a.source_format, info["n_block"], info["n_flow"],
                                                                  info["hidden"]))
        with np.errstate(all="ignore"):  # (what overflows is refused below, in one line)
            if a.source_format == "openai":
                tensors, ops = build_openai(var, info, a.label)
            else:
                tensors, ops = build_y0ast(sd, info, a.label) if y0ast else build_rosinality(sd, info)
            for name, arr in tensors:
                if not np.all(np.isfinite(np.asarray(arr, dtype=np.float32))):
                    raise ExportError("tensor %s is not finite in float32 once folded (weights or scales too "
                                      "large)" % name)
            for op in ops:
                if not all(np.isfinite(op[2])):
                    raise ExportError("plan op %s: log-det not finite once folded" % glowfile.OP_NAMES[op[0]])
        kv = [("glow.in_channels", info["in_channels"]), ("glow.image_height", h), ("glow.image_width", w),
              ("glow.n_levels", info["n_block"]), ("glow.n_flow", info["n_flow"]),
              ("glow.hidden", info["hidden"]), ("glow.coupling", "affine" if info["affine"] else "additive"),
              ("glow.invconv", info["invconv"]), ("glow.n_bits", a.n_bits),
              ("source.format", a.source_format), ("source.file", os.path.basename(info.get("prefix", a.checkpoint))),
              ("exporter.version", EXPORTER_VERSION)]
        imap = Y0AST_LAYOUTS[a.source_format]["input_map"] if y0ast else None
        if imap:
            kv.append(("source.input_map", "x' = %s x + %s: the source's input of glowrt's x, folded into the "
                       "first affine" % (Fraction(imap[0]).limit_denominator(4096), imap[1])))
        if a.source_format == "openai":
            kv.append(("source.weights", "polyak averages" if a.ema else "weights"))
            if a.label is not None:
                kv.append(("source.class", a.label))
            if info["perm"] in ("shuffle", "reverse"):
                kv.append(("source.flow_permutation", info["perm"]))
        else:
            if y0ast and info["n_y"]:
                kv.append(("source.class", a.label))
            kv += train_info(a.checkpoint)
        progress("writing %s (%d tensors)" % (a.output, len(tensors)))
        size = glowfile.write_glow(a.output, kv, tensors, ops, alignment=a.alignment)
        msg = ""
        if not a.no_check:
            # The network is convolutional and the edge tables hold the border: an image of
            # 2 * 2^L pixels (each level >= 2 wide, interiors from level L-2 down) runs every
            # weight of the file, at a fraction of a big image's float64 cost.
            ch, cw = min(h, 2 * f), min(w, 2 * f)
            progress("self-check: the file's plan against the checkpoint's model in float64, 2 images at %dx%d"
                     % (ch, cw))
            try:
                if a.source_format == "openai":
                    d_ll, d_eps = self_check_openai(a.output, var, info, a.label, ch, cw)
                elif y0ast:
                    d_ll, d_eps = self_check_y0ast(a.output, sd, info, ch, cw, label=a.label)
                else:
                    d_ll, d_eps = self_check(a.output, sd, info, ch, cw)
            except (ExportError, glowfile.GlowFileError) as e:
                os.remove(a.output)
                raise ExportError(str(e))
            msg = ", self-check max|dlog_p| %.2g max|deps| %.2g" % (d_ll, d_eps)
    except (ExportError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, ExportError):
            e = "%s: %s" % (e.filename or a.output, e.strerror or e)
        print("export: error: %s" % e, file=sys.stderr)
        tmp = os.path.realpath(a.output) + ".tmp"
        if os.path.isfile(tmp):
            os.remove(tmp)
        return 2
    if not a.quiet:
        print("wrote %s: %d bytes, %d tensors, %d ops (C=%d L=%d K=%d hidden=%d %s %s)%s"
              % (a.output, size, len(tensors), len(ops), info["in_channels"], info["n_block"], info["n_flow"],
                 info["hidden"], "affine" if info["affine"] else "additive", info["invconv"], msg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
