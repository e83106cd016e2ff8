"""Shared helpers of bench/compare: build the PyTorch Glow of a state_dict
(models/glow.py, rosinality layout) and its variant with precomputed 1x1
convolutions (W and W^-1 from float64), used for the ONNX export and for the
"PyTorch, W^-1 precomputed" peer."""
import os
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(os.path.dirname(HERE), "models")
sys.path.insert(0, MODELS)

from glow import InvConv2d, InvConv2dLU  # noqa: E402


def load_sd(path):
    import export  # models/export.py: the exporter's loader, keeping torch tensors
    return export.load_state_dict(path, as_torch=True)


def infer(sd):
    """C, L, K, hidden, affine, per-flow LU flags of a rosinality state_dict."""
    import export  # models/export.py: the same inference the exporter uses
    np_sd = {k: (v.detach().double().numpy() if v.dtype.is_floating_point else v.detach().numpy())
             for k, v in sd.items()}
    return export.infer_rosinality(np_sd)


def build_model(sd_path):
    """The module as users run it (rosinality-style code, LU computed per call)."""
    sd = load_sd(sd_path)
    info = infer(sd)
    import export  # models/export.py: the module of the structure it inferred
    m = export.rosinality_module(info)
    m.load_state_dict(sd)
    m.eval()
    return m, info


class FixedInvConv(nn.Module):
    """A 1x1 conv with W precomputed (from float64) and W^-1 computed in float64."""

    def __init__(self, w64, logdet_per_pixel):
        super().__init__()
        c = w64.shape[0]
        self.register_buffer("weight", w64.float().reshape(c, c, 1, 1).contiguous())
        self.register_buffer("weight_inv", torch.inverse(w64).float().reshape(c, c, 1, 1).contiguous())
        self.register_buffer("ld", torch.tensor(float(logdet_per_pixel), dtype=torch.float32))

    def forward(self, x):
        out = F.conv2d(x, self.weight)
        return out, x.shape[2] * x.shape[3] * self.ld

    def reverse(self, y):
        return F.conv2d(y, self.weight_inv)


def lu_matrix64(ic):
    d = lambda t: t.detach().double()  # noqa: E731
    return d(ic.w_p) @ (d(ic.w_l) * d(ic.l_mask) + d(ic.l_eye)) @ (
        d(ic.w_u) * d(ic.u_mask) + torch.diag(d(ic.s_sign) * torch.exp(d(ic.w_s))))


def precompute(model):
    """Replace every 1x1 conv (LU or plain) in place by FixedInvConv."""
    with torch.no_grad():
        for block in model.blocks:
            for flow in block.flows:
                ic = flow.invconv
                if isinstance(ic, InvConv2dLU):
                    w = lu_matrix64(ic)
                    ld = float(ic.w_s.detach().double().sum())
                elif isinstance(ic, InvConv2d):
                    w = ic.weight.detach().double().squeeze(3).squeeze(2)
                    ld = float(torch.slogdet(w)[1])
                else:
                    continue
                flow.invconv = FixedInvConv(w, ld)
    model.eval()
    return model


class Density(nn.Module):
    """x [N, C, H, W] (model space) -> log_p [N] = log p(z) + logdet (nats)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        log_p, logdet, _ = self.model(x)
        return log_p + logdet


class Sampler(nn.Module):
    """eps [N, D] (standardised latents, finest level first) -> x [N, C, H, W]."""

    def __init__(self, model, height, width):
        super().__init__()
        self.model = model
        self.h, self.w = height, width

    def forward(self, eps):
        return self.model.decode(eps, self.h, self.w, temp=1.0)


def flops_per_image(info, height, width):
    """FLOPs per image per direction, counted as glowrt info counts them
    (runtime/model.c): 2 FLOP per multiply-add of the 1x1 convs, the three
    coupling convs and the split priors; element-wise work not counted."""
    c, h, w = info["in_channels"], height, width
    hid = info["hidden"]
    total = 0.0
    for lvl in range(info["n_block"]):
        c, h, w = c * 4, h // 2, w // 2
        hw = h * w
        cout = c if info["affine"] else c // 2
        step = 2.0 * c * c * hw + 2.0 * hw * (hid * (c // 2) * 9 + hid * hid + cout * hid * 9)
        total += info["n_flow"] * step
        if lvl < info["n_block"] - 1:
            total += 2.0 * hw * c * (c // 2) * 9
            c //= 2
    return total


def read_f32(path, shape):
    return np.fromfile(path, dtype=np.float32).reshape(shape)
