"""A PyTorch Glow in the state_dict layout of y0ast/Glow-PyTorch or of its
ancestor chaiyujin/glow-pytorch (`layout`), written from a description of those
layouts; the reference that models/export.py's `y0ast` and `chaiyujin` sources
are checked against.

    m = Glow(in_channels, hidden, K, L, flow_permutation="invconv", flow_coupling="affine",
             lu_decomposed=True, learn_top=True, top_hw=(4, 4), layout="y0ast")
    ll = m.log_prob(x)     # log p(z) + logdet per image, nats, no dequantisation noise
    eps = m.encode(x)      # [N, D] standardised latents, finest level first

Class-conditional models (upstream's `y_condition`, `y_classes=n`): Glow(...,
y_classes=n) adds project_ycond (n -> 2C) and project_class (C -> n), both
LinearZeros (a linear layer times exp(3 * logs)); then log_prob(x, y) and
encode(x, y) take the class y, an int K (one-hot) or an [N, n] tensor (upstream's
y_onehot), and the top prior's h (learn_top's output over the all-zero prior_h,
else zero) gains project_ycond(y) at every position before it is split into
mean and log-sd. `given(y)` is the same model with y fixed (log_prob(x),
encode(x)). project_class, the classifier head, only feeds upstream's class
loss; it is here for the key set and never enters log p(x | y).

x is in glowrt's model space (pixels at x = (u + 0.5)/256 - 0.5). The y0ast
layout models that space itself. chaiyujin's models see ToTensor's x' = u/255
in [0, 1], so with layout="chaiyujin" the module first maps x' = 256/255 x + 0.5
(the same pixel) and adds that map's log-Jacobian, D ln(256/255): log_prob is
then the density of glowrt's x, upstream's log p(x') + D ln(256/255).

Keys: flow.layers.{j}.actnorm.{bias,logs}, .invconv.{weight | p,sign_s,lower,upper,log_s},
.shuffle.indices / .reverse.indices (+ indices_inverse), .block.{0,2}.conv.weight,
.block.{0,2}.actnorm.{bias,logs}, .block.4.conv.{weight,bias}, .block.4.logs;
splits flow.layers.{j}.conv.conv.{weight,bias}, .conv.logs; prior_h,
learn_top_fn.conv.{weight,bias}, learn_top_fn.logs. Layer j: per level a squeeze
(no keys), K steps, then a split except after the last level.

Upstream keeps the LU masks (l_mask, eye), the permutation indices and the
actnorm `inited` flag as plain attributes, so they are not in its state_dict;
`buffers` names which of them this module registers ("lu_masks", "perm",
"inited"), to mimic forks that do.

chaiyujin/glow-pytorch's keys differ only in names (its Conv2d and Conv2dZeros
are nn.Conv2d subclasses, so no `.conv.`): flow.layers.{j}.f.{0,2}.weight,
.f.{0,2}.actnorm.{bias,logs}, .f.4.{weight,bias,logs}, LU .invconv.{p,sign_s,l,u,log_s};
splits flow.layers.{j}.conv.{weight,bias,logs}; learn_top.{weight,bias,logs};
prior_h an all-zero nn.Parameter [batch_size, 2C, h, w] (`prior_batch`).

y_condition keys: y0ast project_ycond.linear.{weight,bias}, project_ycond.logs
(and project_class.*, the same); chaiyujin (LinearZeros an nn.Linear subclass)
project_ycond.{weight,bias,logs}, project_class.{weight,bias,logs}.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)
LAYOUTS = ("y0ast", "chaiyujin")
# chaiyujin: x' = INPUT_SCALE * x + INPUT_SHIFT maps glowrt's pixel (u + 0.5)/256 - 0.5 to u/255
INPUT_SCALE, INPUT_SHIFT = 256.0 / 255.0, 0.5


def gaussian_log_p(x, mean, logs):
    return -0.5 * (LOG_2PI + 2.0 * logs + (x - mean) ** 2 * torch.exp(-2.0 * logs))


def squeeze2(x):
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.contiguous().view(b, c * 4, h // 2, w // 2)


class ActNorm(nn.Module):
    """y = (x + bias) * exp(logs); data-initialised on the first forward."""

    def __init__(self, c, inited_buffer=False):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.done = False
        self.inited_buffer = inited_buffer
        if inited_buffer:
            self.register_buffer("inited", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x):
        if not self.done:
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                std = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
                self.bias.copy_(-mean)
                self.logs.copy_(torch.log(1.0 / (std + 1e-6)))
            self.mark_done()
        h, w = x.shape[2:]
        return (x + self.bias) * torch.exp(self.logs), h * w * self.logs.sum()

    def mark_done(self):
        self.done = True
        if self.inited_buffer:
            self.inited.fill_(1)


class InvConv(nn.Module):
    """Invertible 1x1 conv: plain `weight` [C, C] or LU W = p (lower*l_mask + eye)
    (upper*l_mask^T + diag(sign_s*exp(log_s)))."""

    def __init__(self, c, lu, lu_masks=False, generator=None, names=("lower", "upper")):
        super().__init__()
        self.lu = lu
        self.names = names  # the L and U parameters: y0ast lower/upper, chaiyujin l/u
        q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))
        if not lu:
            self.weight = nn.Parameter(q.float())
            return
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        setattr(self, names[0], nn.Parameter(lower.float()))
        self.log_s = nn.Parameter(torch.log(s.abs()).float())
        setattr(self, names[1], nn.Parameter(torch.triu(upper, 1).float()))
        l_mask, eye = torch.tril(torch.ones(c, c), -1), torch.eye(c)
        if lu_masks:
            self.register_buffer("l_mask", l_mask)
            self.register_buffer("eye", eye)
        else:
            self.l_mask, self.eye = l_mask, eye

    def matrix(self):
        if not self.lu:
            return self.weight
        lower, upper = getattr(self, self.names[0]), getattr(self, self.names[1])
        l_mask, eye = self.l_mask.to(lower.dtype), self.eye.to(lower.dtype)
        lower = lower * l_mask + eye
        upper = upper * l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x):
        h, w = x.shape[2:]
        W = self.matrix()
        logdet = self.log_s.sum() if self.lu else torch.slogdet(W)[1]
        return F.conv2d(x, W.view(*W.shape, 1, 1)), h * w * logdet


class Permute(nn.Module):
    """y = x[:, indices]: a random shuffle or the reversed channel order."""

    def __init__(self, c, shuffle, buffers=False, generator=None):
        super().__init__()
        idx = torch.randperm(c, generator=generator) if shuffle else torch.arange(c - 1, -1, -1)
        inv = torch.argsort(idx)
        if buffers:
            self.register_buffer("indices", idx)
            self.register_buffer("indices_inverse", inv)
        else:
            self.indices, self.indices_inverse = idx, inv

    def forward(self, x):
        return x[:, self.indices], 0.0


class ConvActNorm(nn.Module):
    """Conv (zero padding, no bias) followed by an actnorm."""

    def __init__(self, cin, cout, k, inited_buffer):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.actnorm = ActNorm(cout, inited_buffer)

    def forward(self, x):
        return self.actnorm(self.conv(x))[0]


class ConvActNormFlat(nn.Conv2d):
    """chaiyujin layout: the conv is the module itself (`weight`), the actnorm its child."""

    def __init__(self, cin, cout, k, inited_buffer):
        super().__init__(cin, cout, k, padding=k // 2, bias=False)
        self.actnorm = ActNorm(cout, inited_buffer)

    def forward(self, x):
        return self.actnorm(super().forward(x))[0]


class Conv2dZeros(nn.Module):
    """3x3 conv (zero padding) + bias, times exp(3 * logs); logs [Co, 1, 1]."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv.weight.data.zero_()
        self.conv.bias.data.zero_()
        self.logs = nn.Parameter(torch.zeros(cout, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(3.0 * self.logs)


class Conv2dZerosFlat(nn.Conv2d):
    """chaiyujin layout of Conv2dZeros: weight, bias, logs on the module itself."""

    def __init__(self, cin, cout):
        super().__init__(cin, cout, 3, padding=1)
        self.weight.data.zero_()
        self.bias.data.zero_()
        self.logs = nn.Parameter(torch.zeros(cout, 1, 1))

    def forward(self, x):
        return super().forward(x) * torch.exp(3.0 * self.logs)


class LinearZeros(nn.Module):
    """y0ast layout: nn.Linear `linear` (in -> out), output times exp(3 * logs); logs [out]."""

    def __init__(self, cin, cout):
        super().__init__()
        self.linear = nn.Linear(cin, cout)
        self.linear.weight.data.zero_()
        self.linear.bias.data.zero_()
        self.logs = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return self.linear(x) * torch.exp(3.0 * self.logs)


class LinearZerosFlat(nn.Linear):
    """chaiyujin layout of LinearZeros: weight, bias, logs on the module itself."""

    def __init__(self, cin, cout):
        super().__init__(cin, cout)
        self.weight.data.zero_()
        self.bias.data.zero_()
        self.logs = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return super().forward(x) * torch.exp(3.0 * self.logs)


def conv_classes(layout):
    """(Conv + ActNorm, Conv2dZeros) of a layout."""
    if layout not in LAYOUTS:
        raise ValueError("layout " + layout)
    return (ConvActNorm, Conv2dZeros) if layout == "y0ast" else (ConvActNormFlat, Conv2dZerosFlat)


class FlowStep(nn.Module):
    def __init__(self, c, hidden, perm, coupling, lu, buffers, generator, layout="y0ast"):
        super().__init__()
        inited = "inited" in buffers
        self.affine = coupling == "affine"
        self.actnorm = ActNorm(c, inited)
        if perm == "invconv":
            self.invconv = InvConv(c, lu, "lu_masks" in buffers, generator,
                                   ("lower", "upper") if layout == "y0ast" else ("l", "u"))
        elif perm == "shuffle":
            self.shuffle = Permute(c, True, "perm" in buffers, generator)
        elif perm == "reverse":
            self.reverse = Permute(c, False, "perm" in buffers)
        else:
            raise ValueError("flow_permutation " + perm)
        self.perm = perm  # the submodule's name, as upstream keys it
        conv, zeros = conv_classes(layout)
        self.net_name = "block" if layout == "y0ast" else "f"  # the coupling network's name
        setattr(self, self.net_name, nn.Sequential(conv(c // 2, hidden, 3, inited), nn.ReLU(),
                                                   conv(hidden, hidden, 1, inited), nn.ReLU(),
                                                   zeros(hidden, c if self.affine else c // 2)))

    def forward(self, x):
        z, logdet = self.actnorm(x)
        z, d = getattr(self, self.perm)(z)
        logdet = logdet + d
        c = z.shape[1]
        z1, z2 = z[:, :c // 2], z[:, c // 2:]
        h = getattr(self, self.net_name)(z1)
        if self.affine:
            shift, scale = h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)
            z2 = (z2 + shift) * scale
            logdet = logdet + torch.log(scale).flatten(1).sum(1)
        else:
            z2 = z2 + h
        return torch.cat([z1, z2], 1), logdet


class Split2d(nn.Module):
    def __init__(self, c, layout="y0ast"):
        super().__init__()
        self.conv = conv_classes(layout)[1](c // 2, c)

    def prior(self, z1):
        h = self.conv(z1)
        return h[:, 0::2], h[:, 1::2]


class Squeeze(nn.Module):
    pass


class FlowNet(nn.Module):
    def __init__(self, c, hidden, K, L, perm, coupling, lu, buffers, generator, layout):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(L):
            c *= 4
            self.layers.append(Squeeze())
            for _ in range(K):
                self.layers.append(FlowStep(c, hidden, perm, coupling, lu, buffers, generator, layout))
            if i < L - 1:
                self.layers.append(Split2d(c, layout))
                c //= 2
        self.top_c = c


class Glow(nn.Module):
    def __init__(self, in_channels, hidden, K, L, flow_permutation="invconv", flow_coupling="affine",
                 lu_decomposed=True, learn_top=True, top_hw=(4, 4), buffers=(), seed=0, layout="y0ast",
                 prior_batch=1, y_classes=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.in_channels = in_channels
        self.layout = layout
        self.flow = FlowNet(in_channels, hidden, K, L, flow_permutation, flow_coupling, lu_decomposed,
                            set(buffers), g, layout)
        c = self.flow.top_c
        self.has_top = learn_top
        self.top_name = "learn_top_fn" if layout == "y0ast" else "learn_top"
        if learn_top:
            setattr(self, self.top_name, conv_classes(layout)[1](2 * c, 2 * c))
        self.y_classes = y_classes  # 0: unconditional
        if y_classes:
            lin = LinearZeros if layout == "y0ast" else LinearZerosFlat
            self.project_ycond = lin(y_classes, 2 * c)  # class -> (mean, log-sd) of the top prior
            self.project_class = lin(c, y_classes)  # classifier head: not part of log p(x | y)
        if layout == "y0ast":
            self.register_buffer("prior_h", torch.zeros(1, 2 * c, *top_hw))
        else:  # a parameter, one row per image of a training batch (never trained: detached)
            self.prior_h = nn.Parameter(torch.zeros(prior_batch, 2 * c, *top_hw))

    def mark_initialized(self):
        """After loading a trained state_dict: no actnorm data-initialisation."""
        for m in self.modules():
            if isinstance(m, ActNorm):
                m.mark_done()

    def one_hot(self, y, n):
        """y (None, a class index, or an [N, y_classes] tensor) as [n, y_classes] in float64."""
        if not self.y_classes:
            if y is not None:
                raise ValueError("a class given to an unconditional model")
            return None
        if y is None:
            raise ValueError("a class-conditional model needs y")
        if isinstance(y, int):
            if not 0 <= y < self.y_classes:
                raise ValueError("class %d of %d" % (y, self.y_classes))
            out = torch.zeros(n, self.y_classes, dtype=torch.float64)
            out[:, y] = 1.0
            return out
        return torch.as_tensor(y, dtype=torch.float64).reshape(n, self.y_classes)

    def top_prior(self, z, y=None):
        n, c, h, w = z.shape
        p = torch.zeros(n, 2 * c, h, w, dtype=z.dtype)  # prior_h, at this image size
        if self.has_top:
            p = getattr(self, self.top_name)(p)
        yv = self.one_hot(y, n)
        if yv is not None:  # after learn_top: the same offset at every position
            p = p + self.project_ycond(yv.to(z.dtype)).view(n, 2 * c, 1, 1)
        return p[:, :c], p[:, c:]

    def _run(self, x, y=None):
        """-> (log p(z) + logdet [N], eps per level); y: the class of a conditional model."""
        n = x.shape[0]
        ll = torch.zeros(n, dtype=x.dtype)
        eps = []
        z = x
        if self.layout == "chaiyujin":  # glowrt's model space -> upstream's [0, 1]
            z = INPUT_SCALE * x + INPUT_SHIFT
            ll = ll + x[0].numel() * math.log(INPUT_SCALE)
        for layer in self.flow.layers:
            if isinstance(layer, Squeeze):
                z = squeeze2(z)
            elif isinstance(layer, FlowStep):
                z, d = layer(z)
                ll = ll + d
            else:
                c = z.shape[1]
                z, z2 = z[:, :c // 2], z[:, c // 2:]
                mean, logs = layer.prior(z)
                ll = ll + gaussian_log_p(z2, mean, logs).flatten(1).sum(1)
                eps.append(((z2 - mean) * torch.exp(-logs)).flatten(1))
        mean, logs = self.top_prior(z, y)
        ll = ll + gaussian_log_p(z, mean, logs).flatten(1).sum(1)
        eps.append(((z - mean) * torch.exp(-logs)).flatten(1))
        return ll, eps

    def log_prob(self, x, y=None):
        """log p(x) (log p(x | y) for a conditional model), nats per image."""
        return self._run(x, y)[0]

    def encode(self, x, y=None):
        return torch.cat(self._run(x, y)[1], 1)

    def given(self, y):
        """This model with the class fixed: an object with log_prob(x) and encode(x)."""
        return _Given(self, y)


class _Given:
    def __init__(self, model, y):
        self.model, self.y = model, y

    def log_prob(self, x):
        return self.model.log_prob(x, self.y)

    def encode(self, x):
        return self.model.encode(x, self.y)


def random_model(in_channels, hidden, K, L, flow_permutation="invconv", flow_coupling="affine",
                 lu_decomposed=True, learn_top=True, height=8, width=8, buffers=(), seed=0, noise=1.0,
                 layout="y0ast", prior_batch=1, y_classes=0):
    """A Glow of the given layout with every actnorm data-initialised on random model-space
    data (in layer order, as the first training batch does) and every other
    parameter perturbed, Conv2dZeros and LinearZeros included (y_classes > 0: a
    class-conditional model, its project_ycond / project_class weights, biases and
    logs all non-zero), so couplings and priors are non-trivial."""
    f = 2 ** L
    m = Glow(in_channels, hidden, K, L, flow_permutation, flow_coupling, lu_decomposed, learn_top,
             (height // f, width // f), buffers, seed, layout, prior_batch, y_classes)
    g = torch.Generator().manual_seed(seed + 1)

    def rnd(shape, std):
        return torch.randn(*shape, generator=g) * std

    with torch.no_grad():
        # by module type, in named_parameters() order (the same draws in both layouts)
        for mod in m.modules():
            for name, p in mod._parameters.items():
                if p is None or isinstance(mod, (ActNorm, Glow)):  # actnorms: data; prior_h stays zero
                    continue
                fan_in = p[0].numel() if p.dim() == 4 else 1
                if isinstance(mod, InvConv):
                    if name == "weight":  # stays near-orthogonal
                        p.add_(rnd(p.shape, 0.02 * noise / p.shape[0] ** 0.5))
                    elif name == "log_s":
                        p.add_(rnd(p.shape, 0.02 * noise))
                    else:  # L and U
                        p.mul_(1 + rnd(p.shape, 0.01 * noise))
                        p.add_(rnd(p.shape, 0.001 * noise / p.shape[0]))
                elif isinstance(mod, ConvActNormFlat) or (isinstance(mod, nn.Conv2d) and p.dim() == 4
                                                          and mod.bias is None):
                    p.copy_(rnd(p.shape, (2.0 / fan_in) ** 0.5))  # the convs before an actnorm
                elif name == "weight":  # Conv2dZeros (coupling output, split and top priors), LinearZeros
                    p.copy_(rnd(p.shape, 0.3 * noise / fan_in ** 0.5))
                elif name in ("bias", "logs"):
                    p.copy_(rnd(p.shape, 0.05 * noise))
                else:
                    raise RuntimeError("random_model: unhandled parameter %s of %s" % (name, type(mod).__name__))
        x = torch.rand(16, in_channels, height, width, generator=g) - 0.5
        m.log_prob(x, 0 if y_classes else None)  # data-dependent actnorm init (the prior plays no part)
        for name, p in m.named_parameters():
            if name.endswith("actnorm.bias"):
                p.add_(rnd(p.shape, 0.02 * noise))
            elif name.endswith("actnorm.logs"):
                p.add_(rnd(p.shape, 0.02 * noise))
    m.eval()
    return m
