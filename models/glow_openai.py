"""openai/glow (TensorFlow) checkpoints: their variable layout, and their
model run literally in float64 with torch, as the exporter's self-check and
the tests' reference.

Layout facts are from openai/glow's model.py and tfops.py (../shared/GLOW_REFERENCE.md
has the math): everything under the variable scope "model", NHWC tensors, TF conv
filters [kh, kw, in, out]. Per level i and step k, scope "model/i/k":
  actnorm_center/b, actnorm_scale/logs        y = (x + b) * exp(3 logs)
  invconv/W [C, C] (y = x W, i.e. W_rosinality = W^T), or the LU variant
  invconv/{P, L, U, sign_S, log_S}, or shuffle/{indices, indices_inverse}, or
  nothing (flow_permutation 0 reverses the channels)
  f1/l_1/W [3, 3, C/2 + 1, width] + actnorm    (the +1 is the edge-bias channel:
  f1/l_2/W [1, 1, width, width] + actnorm       1 on the zero-padded border ring)
  f1/l_last/{W [3, 3, width + 1, n_out], b, logs}  (b + conv) * exp(3 logs)
then "model/pool{i}/conv/{W, b, logs}" (the split prior, mean = h[0::2],
logs = h[1::2]), and "model/prior/p/{W, b, logs}" (learntop: the same conv on
zeros; mean = h[:C], logs = h[C:]) with "model/prior/y_emb/{W, b, logs}" when
class-conditional (ycond). Affine couplings: shift = h[0::2], scale =
sigmoid(h[1::2] + 2); additive: z2 += h. train.py saves every variable, with
the polyak averages under ".../ExponentialMovingAverage" and the optimizer's
slots as top-level "Variable_N".
"""
import json
import os
import re

import numpy as np

PERMS = ("reverse", "shuffle", "invconv")  # openai's --flow_permutation 0, 1, 2
EMA = "/ExponentialMovingAverage"
# Variables train.py creates with trainable=False (shuffle_features' int32 indices, the
# LU variant's P and sign_S): its polyak averaging (optim.polyak: ExponentialMovingAverage
# over tf.trainable_variables()) gives them no average, so --ema reads them as they are.
NOT_AVERAGED = ("shuffle/indices", "shuffle/indices_inverse", "invconv/P", "invconv/sign_S")


class LayoutError(Exception):
    pass


def logdir_hps(ckpt_prefix):
    """openai train.py's hyperparameters: the first line of train.txt (or test.txt)
    in the checkpoint's directory, a JSON dict (ResultLogger). {} when absent."""
    d = os.path.dirname(os.path.abspath(ckpt_prefix))
    for name in ("train.txt", "test.txt"):
        path = os.path.join(d, name)
        if not os.path.isfile(path):  # (a named pipe would block open() for ever)
            continue
        try:
            with open(path) as f:
                h = json.loads(f.readline())
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # (json: nested too deep)
            continue
        if isinstance(h, dict) and "n_bits_x" in h:
            return h
    return {}


def expected_variables(info):
    """name -> TF shape of every variable the model reads."""
    c, width = info["in_channels"], info["width"]
    d = {}

    def actnorm(p, n):
        d[p + "actnorm_center/b"] = (1, 1, 1, n)
        d[p + "actnorm_scale/logs"] = (1, 1, 1, n)

    def zeros(p, cin, cout):
        d[p + "W"] = (3, 3, cin + 1, cout)
        d[p + "b"] = (1, 1, 1, cout)
        d[p + "logs"] = (1, cout)

    for i in range(info["n_levels"]):
        C = 4 * c
        for k in range(info["depth"]):
            p = "model/%d/%d/" % (i, k)
            actnorm(p, C)
            if info["perm"] == "invconv":
                d[p + "invconv/W"] = (C, C)
            elif info["perm"] == "lu":
                for n in ("P", "L", "U"):
                    d[p + "invconv/" + n] = (C, C)
                for n in ("sign_S", "log_S"):
                    d[p + "invconv/" + n] = (C,)
            elif info["perm"] == "shuffle":
                d[p + "shuffle/indices"] = (C,)
                d[p + "shuffle/indices_inverse"] = (C,)
            d[p + "f1/l_1/W"] = (3, 3, C // 2 + 1, width)
            actnorm(p + "f1/l_1/", width)
            d[p + "f1/l_2/W"] = (1, 1, width, width)
            actnorm(p + "f1/l_2/", width)
            zeros(p + "f1/l_last/", width, C if info["affine"] else C // 2)
        if i < info["n_levels"] - 1:
            zeros("model/pool%d/conv/" % i, C // 2, C)
            c = C // 2
        else:
            c = C
    if info["learntop"]:
        zeros("model/prior/p/", 2 * c, 2 * c)
    if info["n_y"]:
        d["model/prior/y_emb/W"] = (info["n_y"], 2 * c)
        d["model/prior/y_emb/b"] = (1, 2 * c)
        d["model/prior/y_emb/logs"] = (1, 2 * c)
    return d


def infer(shapes, hps=None):
    """The structure of a checkpoint from its variables' shapes (name -> shape),
    cross-checked with train.py's hyperparameters when known."""
    hps = hps or {}
    steps = {}
    for name in shapes:
        m = re.match(r"model/(\d+)/(\d+)/", name)
        if m:
            steps.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not steps:
        raise LayoutError("no model/<level>/<step>/ variables: not an openai/glow checkpoint")
    n_levels = max(steps) + 1
    depth = len(steps[0])
    for i in range(n_levels):
        if sorted(steps.get(i, ())) != list(range(depth)):
            raise LayoutError("level %d has steps %s, level 0 has %d" % (i, sorted(steps.get(i, ())), depth))
    k0 = "model/0/0/actnorm_center/b"
    if k0 not in shapes:
        raise LayoutError("missing variable " + k0)
    if len(shapes[k0]) != 4 or shapes[k0][3] % 4:
        raise LayoutError("%s has shape %s" % (k0, shapes[k0]))
    c_in = shapes[k0][3] // 4
    kw, kl = "model/0/0/f1/l_1/W", "model/0/0/f1/l_last/W"
    for k in (kw, kl):
        if k not in shapes or len(shapes[k]) != 4:
            raise LayoutError("missing variable %s" % k)
    width = shapes[kw][3]
    if shapes[kl][3] == 4 * c_in:
        affine = True
    elif shapes[kl][3] == 2 * c_in:
        affine = False
    else:
        raise LayoutError("%s has shape %s" % (kl, shapes[kl]))
    p = "model/0/0/"
    if p + "invconv/W" in shapes:
        perm = "invconv"
    elif p + "invconv/L" in shapes:
        perm = "lu"
    elif p + "shuffle/indices" in shapes:
        perm = "shuffle"
    else:
        perm = "reverse"
    ky = "model/prior/y_emb/W"
    if ky in shapes and len(shapes[ky]) != 2:
        raise LayoutError("%s has shape %s" % (ky, shapes[ky]))
    n_y = shapes.get(ky, (0,))[0]
    info = dict(in_channels=c_in, n_levels=n_levels, depth=depth, width=width, affine=affine, perm=perm,
                learntop="model/prior/p/W" in shapes, n_y=n_y)
    checks = [("n_levels", n_levels), ("depth", depth), ("width", width),
              ("flow_coupling", 1 if affine else 0), ("learntop", info["learntop"]), ("ycond", bool(n_y))]
    if perm != "lu":
        checks.append(("flow_permutation", PERMS.index(perm)))
    for key, have in checks:
        if key in hps and hps[key] != have:
            raise LayoutError("train.txt says %s=%r, the checkpoint's variables say %r" % (key, hps[key], have))
    return info


def select(names, info, ema=False):
    """Which stored variable holds each expected one ({expected: stored}): the
    variable itself, or its polyak average with ema (but for NOT_AVERAGED ones).
    Refuses what the model does not explain, under "model/" (a different
    architecture, say)."""
    want = expected_variables(info)
    out = {}
    for k in want:
        src = k + EMA if ema and not k.endswith(NOT_AVERAGED) else k
        if src not in names:
            raise LayoutError("missing variable %s%s" % (src, " (--ema: the checkpoint has no polyak averages)"
                                                         if ema and k in names else ""))
        out[k] = src
    known = set(want)
    for n in names:
        if not n.startswith("model/"):
            continue  # optimizer slots (Variable_N), global_step, ...
        base = n.split(EMA)[0]
        if base in known or (base.startswith("model/classifier/") and info["n_y"]):
            continue
        raise LayoutError("unexpected variable %s: not part of the Glow this checkpoint's other variables describe"
                          % n)
    return out


def edge_indicator(h, w):
    """openai's add_edge_padding channel for a 3x3 conv: [h + 2, w + 2], 1 on the padded ring."""
    m = np.zeros((h + 2, w + 2))
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 1.0
    return m


class OpenaiGlow:
    """openai/glow's forward (encoder and prior) in float64, NHWC as upstream
    computes it, from a dict of its variables (numpy arrays). label: the class
    of a class-conditional (ycond) model."""

    def __init__(self, var, info, label=None):
        import torch
        self.torch = torch
        self.info = info
        self.var = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in var.items()
                    if np.asarray(v).dtype.kind == "f"}
        self.idx = {k: np.asarray(v).astype(np.int64) for k, v in var.items() if np.asarray(v).dtype.kind in "iu"}
        self.label = label
        self.ddi = False

    def _actnorm(self, x, p):
        torch = self.torch
        if self.ddi:  # data-dependent init, as openai's first batch does
            b = -x.mean((0, 1, 2), keepdim=True)
            logs = torch.log(1.0 / (torch.sqrt(((x + b) ** 2).mean((0, 1, 2), keepdim=True)) + 1e-6)) / 3.0
            self.var[p + "actnorm_center/b"], self.var[p + "actnorm_scale/logs"] = b, logs
        logs = 3.0 * self.var[p + "actnorm_scale/logs"]
        x = (x + self.var[p + "actnorm_center/b"]) * torch.exp(logs)
        return x, x.shape[1] * x.shape[2] * logs.sum()

    def _conv(self, x, w):
        """tf.nn.conv2d of NHWC x with filter w [kh, kw, in, out]; a 3x3 one with
        openai's edge bias: zero padding plus the border-indicator channel."""
        torch = self.torch
        n, h, wd, _ = x.shape
        if w.shape[0] == 3:
            x = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1))
            ind = torch.as_tensor(edge_indicator(h, wd)).view(1, h + 2, wd + 2, 1).expand(n, -1, -1, 1)
            x = torch.cat([x, ind], 3)
        y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1))
        return y.permute(0, 2, 3, 1)

    def _conv_zeros(self, x, p):
        v = self.var
        return (self._conv(x, v[p + "W"]) + v[p + "b"].view(1, 1, 1, -1)) * self.torch.exp(3.0 * v[p + "logs"].view(1, 1, 1, -1))

    def _f(self, h, p):
        relu = self.torch.relu
        h = relu(self._actnorm(self._conv(h, self.var[p + "l_1/W"]), p + "l_1/")[0])
        h = relu(self._actnorm(self._conv(h, self.var[p + "l_2/W"]), p + "l_2/")[0])
        return self._conv_zeros(h, p + "l_last/")

    def _permute(self, z, p):
        torch = self.torch
        perm = self.info["perm"]
        C = z.shape[3]
        if perm == "reverse":
            return z.flip(3), 0.0
        if perm == "shuffle":
            return z[..., torch.as_tensor(self.idx[p + "shuffle/indices"])], 0.0
        v = self.var
        if perm == "invconv":
            w = v[p + "invconv/W"]
            logdet = torch.linalg.slogdet(w)[1]
        else:
            mask = torch.tril(torch.ones(C, C, dtype=torch.float64), -1)
            lower = v[p + "invconv/L"] * mask + torch.eye(C, dtype=torch.float64)
            upper = v[p + "invconv/U"] * mask.T + torch.diag(v[p + "invconv/sign_S"] * torch.exp(v[p + "invconv/log_S"]))
            w = v[p + "invconv/P"] @ lower @ upper
            logdet = v[p + "invconv/log_S"].sum()
        return torch.einsum("nhwi,io->nhwo", z, w), z.shape[1] * z.shape[2] * logdet

    @staticmethod
    def squeeze(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, 4 * c)

    def _logp(self, z, mean, logs):
        import math
        lp = -0.5 * (math.log(2 * math.pi) + 2.0 * logs + (z - mean) ** 2 / self.torch.exp(2.0 * logs))
        return lp.reshape(z.shape[0], -1).sum(1), (z - mean) / self.torch.exp(logs)

    def _run(self, x):
        """x [N, C, H, W] in model space -> (log p(z) + logdet [N], eps per level, NCHW)."""
        torch = self.torch
        z = torch.as_tensor(x, dtype=torch.float64).permute(0, 2, 3, 1)
        n = z.shape[0]
        obj = torch.zeros(n, dtype=torch.float64)
        eps = []
        z = self.squeeze(z)
        L = self.info["n_levels"]
        for i in range(L):
            for k in range(self.info["depth"]):
                p = "model/%d/%d/" % (i, k)
                z, ld = self._actnorm(z, p)
                obj = obj + ld
                z, ld = self._permute(z, p)
                obj = obj + ld
                c = z.shape[3]
                z1, z2 = z[..., :c // 2], z[..., c // 2:]
                h = self._f(z1, p + "f1/")
                if self.info["affine"]:
                    scale = torch.sigmoid(h[..., 1::2] + 2.0)
                    z2 = (z2 + h[..., 0::2]) * scale
                    obj = obj + torch.log(scale).reshape(n, -1).sum(1)
                else:
                    z2 = z2 + h
                z = torch.cat([z1, z2], 3)
            if i < L - 1:
                c = z.shape[3]
                z1, z2 = z[..., :c // 2], z[..., c // 2:]
                h = self._conv_zeros(z1, "model/pool%d/conv/" % i)
                lp, e = self._logp(z2, h[..., 0::2], h[..., 1::2])
                obj = obj + lp
                eps.append(e)
                z = self.squeeze(z1)
        c = z.shape[3]
        h = torch.zeros(n, z.shape[1], z.shape[2], 2 * c, dtype=torch.float64)
        if self.info["learntop"]:
            h = self._conv_zeros(h, "model/prior/p/")
        if self.info["n_y"]:
            v = self.var
            emb = (v["model/prior/y_emb/W"][self.label] + v["model/prior/y_emb/b"][0]) * \
                torch.exp(3.0 * v["model/prior/y_emb/logs"][0])
            h = h + emb.view(1, 1, 1, -1)
        lp, e = self._logp(z, h[..., :c], h[..., c:])
        eps.append(e)
        return obj + lp, [e.permute(0, 3, 1, 2).reshape(n, -1) for e in eps]

    def log_prob(self, x):
        return self._run(x)[0]

    def encode(self, x):
        return self.torch.cat(self._run(x)[1], 1)


def random_variables(info, height, width, seed=0, n_init=8):
    """A trained-looking openai/glow model's variables (float32, int32 indices):
    every weight drawn at random (the zero-initialised ones too, so couplings
    and priors are non-trivial), then every actnorm data-initialised on random
    model-space images in layer order, as openai's first batch does."""
    rng = np.random.RandomState(seed)
    var = {}
    for k, shape in expected_variables(info).items():
        if k.endswith("indices"):
            var[k] = rng.permutation(shape[0]).astype(np.int32)
        elif k.endswith("indices_inverse"):
            continue
        elif k.endswith("invconv/W"):
            # orthogonal, perturbed so that log|det| is not 0; scaled by 1/sqrt(C) to stay well conditioned
            q = np.linalg.qr(rng.randn(*shape))[0]
            var[k] = q + 0.3 / np.sqrt(shape[0]) * rng.randn(*shape)
        elif k.endswith("invconv/P"):
            var[k] = np.eye(shape[0])[rng.permutation(shape[0])]
        elif k.endswith(("invconv/L", "invconv/U")):
            var[k] = 0.6 / np.sqrt(shape[0]) * rng.randn(*shape)
        elif k.endswith("invconv/sign_S"):
            var[k] = rng.choice([-1.0, 1.0], size=shape)
        elif k.endswith("invconv/log_S"):
            var[k] = 0.2 * rng.randn(*shape)
        elif "actnorm" in k:
            var[k] = np.zeros(shape)  # set by the data-dependent init below
        elif k.endswith("logs"):
            var[k] = 0.1 * rng.randn(*shape)
        elif k.endswith("/b"):
            var[k] = 0.1 * rng.randn(*shape)
        elif "l_last" in k or "pool" in k or "prior" in k:
            var[k] = 0.1 * rng.randn(*shape) / np.sqrt(np.prod(shape[:3]))
        else:
            var[k] = 0.05 * rng.randn(*shape)  # openai's default_initializer
    for k in list(var):
        if k.endswith("shuffle/indices"):
            var[k[:-len("indices")] + "indices_inverse"] = np.argsort(var[k]).astype(np.int32)
    var = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in var.items()}
    m = OpenaiGlow(var, info, label=0)
    m.ddi = True
    x = rng.rand(n_init, info["in_channels"], height, width) - 0.5
    m._run(x)
    for k, v in m.var.items():
        if "actnorm" in k:
            var[k] = v.numpy().astype(np.float32)
    return var
