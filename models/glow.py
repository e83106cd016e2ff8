"""glowrt's own PyTorch Glow.

Same math and exactly the same state_dict layout as rosinality/glow-pytorch
(see /work/shared/GLOW_REFERENCE.md and docs/format.md), written from the
description of the math, with the hidden width as a parameter.

    model = Glow(in_channel, n_flow, n_block, affine=True, conv_lu=True, hidden=512)
    log_p, logdet, z_outs = model(x)        # like rosinality
    ll = model.log_prob(x)                  # log_p + logdet per image (nats)
    eps = model.encode(x)                   # [N, D] standardised latents
    x = model.decode(eps, H, W)             # exact inverse (W^-1 from float64)
    x = model.sample(n, H, W, temp=0.7)

Keys: blocks.{i}.flows.{j}.actnorm.{loc,scale,initialized},
      blocks.{i}.flows.{j}.invconv.{w_p,u_mask,l_mask,s_sign,l_eye,w_l,w_s,w_u}
      (or .invconv.weight [C,C,1,1] for the plain variant),
      blocks.{i}.flows.{j}.coupling.net.{0,2}.{weight,bias},
      blocks.{i}.flows.{j}.coupling.net.4.{conv.weight,conv.bias,scale},
      blocks.{i}.prior.{conv.weight,conv.bias,scale}
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_p(x, mean, log_sd):
    return -0.5 * LOG_2PI - log_sd - 0.5 * (x - mean) ** 2 / torch.exp(2 * log_sd)


def squeeze2(x):
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.contiguous().view(b, c * 4, h // 2, w // 2)


def unsqueeze2(x):
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.contiguous().view(b, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    def __init__(self, in_channel):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, in_channel, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, in_channel, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x):
        flat = x.permute(1, 0, 2, 3).contiguous().view(x.shape[1], -1)
        mean = flat.mean(1).view(1, -1, 1, 1)
        std = flat.std(1).view(1, -1, 1, 1)
        self.loc.data.copy_(-mean)
        self.scale.data.copy_(1 / (std + 1e-6))

    def forward(self, x):
        _, _, h, w = x.shape
        if self.initialized.item() == 0:
            self.initialize(x)
            self.initialized.fill_(1)
        logdet = h * w * torch.sum(torch.log(torch.abs(self.scale)))
        return self.scale * (x + self.loc), logdet

    def reverse(self, y):
        return y / self.scale - self.loc


class InvConv2d(nn.Module):
    """Plain invertible 1x1 conv: weight [C, C, 1, 1]."""

    def __init__(self, in_channel, generator=None):
        super().__init__()
        w = torch.randn(in_channel, in_channel, generator=generator)
        q, _ = torch.linalg.qr(w)
        self.weight = nn.Parameter(q.unsqueeze(2).unsqueeze(3))

    def matrix(self):
        return self.weight.squeeze(3).squeeze(2)

    def forward(self, x):
        _, _, h, w = x.shape
        out = F.conv2d(x, self.weight)
        logdet = h * w * torch.slogdet(self.matrix().double())[1].to(x.dtype)
        return out, logdet

    def reverse(self, y):
        inv = torch.inverse(self.matrix().detach().double()).to(y.dtype)
        return F.conv2d(y, inv.unsqueeze(2).unsqueeze(3))


class InvConv2dLU(nn.Module):
    """LU-parametrised 1x1 conv: W = P (L*l_mask + I) (U*u_mask + diag(sign*exp(w_s)))."""

    def __init__(self, in_channel, generator=None):
        super().__init__()
        w = torch.randn(in_channel, in_channel, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(w)
        p, l, u = torch.linalg.lu(q)
        s = torch.diagonal(u)
        u_mask = torch.triu(torch.ones(in_channel, in_channel), 1)
        self.register_buffer("w_p", p.float())
        self.register_buffer("u_mask", u_mask)
        self.register_buffer("l_mask", u_mask.T.contiguous())
        self.register_buffer("s_sign", torch.sign(s).float())
        self.register_buffer("l_eye", torch.eye(in_channel))
        self.w_l = nn.Parameter(l.float())
        self.w_s = nn.Parameter(torch.log(torch.abs(s)).float())
        self.w_u = nn.Parameter(torch.triu(u, 1).float())

    def matrix(self):
        return self.w_p @ (self.w_l * self.l_mask + self.l_eye) @ (
            self.w_u * self.u_mask + torch.diag(self.s_sign * torch.exp(self.w_s)))

    def forward(self, x):
        _, _, h, w = x.shape
        out = F.conv2d(x, self.matrix().unsqueeze(2).unsqueeze(3))
        logdet = h * w * torch.sum(self.w_s)
        return out, logdet

    def reverse(self, y):
        m = self.matrix().detach().double()
        inv = torch.inverse(m).to(y.dtype)
        return F.conv2d(y, inv.unsqueeze(2).unsqueeze(3))


class ZeroConv2d(nn.Module):
    """3x3 conv over the input padded with the constant 1, times exp(3*scale)."""

    def __init__(self, in_channel, out_channel):
        super().__init__()
        self.conv = nn.Conv2d(in_channel, out_channel, 3, padding=0)
        self.conv.weight.data.zero_()
        self.conv.bias.data.zero_()
        self.scale = nn.Parameter(torch.zeros(1, out_channel, 1, 1))

    def forward(self, x):
        out = F.pad(x, [1, 1, 1, 1], value=1)
        out = self.conv(out)
        return out * torch.exp(self.scale * 3)


class AffineCoupling(nn.Module):
    def __init__(self, in_channel, hidden=512, affine=True):
        super().__init__()
        self.affine = affine
        self.net = nn.Sequential(
            nn.Conv2d(in_channel // 2, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            ZeroConv2d(hidden, in_channel if affine else in_channel // 2),
        )
        self.net[0].weight.data.normal_(0, 0.05)
        self.net[0].bias.data.zero_()
        self.net[2].weight.data.normal_(0, 0.05)
        self.net[2].bias.data.zero_()

    def forward(self, x):
        in_a, in_b = x.chunk(2, 1)
        if self.affine:
            log_s, t = self.net(in_a).chunk(2, 1)
            s = torch.sigmoid(log_s + 2)
            out_b = (in_b + t) * s
            logdet = torch.sum(torch.log(s).view(x.shape[0], -1), 1)
        else:
            out_b = in_b + self.net(in_a)
            logdet = None
        return torch.cat([in_a, out_b], 1), logdet

    def reverse(self, y):
        out_a, out_b = y.chunk(2, 1)
        if self.affine:
            log_s, t = self.net(out_a).chunk(2, 1)
            s = torch.sigmoid(log_s + 2)
            in_b = out_b / s - t
        else:
            in_b = out_b - self.net(out_a)
        return torch.cat([out_a, in_b], 1)


class Flow(nn.Module):
    def __init__(self, in_channel, affine=True, conv_lu=True, hidden=512):
        super().__init__()
        self.actnorm = ActNorm(in_channel)
        self.invconv = InvConv2dLU(in_channel) if conv_lu else InvConv2d(in_channel)
        self.coupling = AffineCoupling(in_channel, hidden=hidden, affine=affine)

    def forward(self, x):
        out, logdet = self.actnorm(x)
        out, det1 = self.invconv(out)
        out, det2 = self.coupling(out)
        logdet = logdet + det1
        if det2 is not None:
            logdet = logdet + det2
        return out, logdet

    def reverse(self, y):
        x = self.coupling.reverse(y)
        x = self.invconv.reverse(x)
        return self.actnorm.reverse(x)


class Block(nn.Module):
    def __init__(self, in_channel, n_flow, split=True, affine=True, conv_lu=True, hidden=512):
        super().__init__()
        sq = in_channel * 4
        self.flows = nn.ModuleList(
            [Flow(sq, affine=affine, conv_lu=conv_lu, hidden=hidden) for _ in range(n_flow)])
        self.split = split
        if split:
            self.prior = ZeroConv2d(in_channel * 2, in_channel * 4)
        else:
            self.prior = ZeroConv2d(in_channel * 4, in_channel * 8)

    def prior_params(self, out):
        """mean, log_sd of the factored-out part given the kept part (split),
        or of the whole output (top; out is only used for its shape)."""
        if self.split:
            return self.prior(out).chunk(2, 1)
        return self.prior(torch.zeros_like(out)).chunk(2, 1)

    def forward(self, x):
        b = x.shape[0]
        out = squeeze2(x)
        logdet = 0
        for flow in self.flows:
            out, det = flow(out)
            logdet = logdet + det
        if self.split:
            out, z_new = out.chunk(2, 1)
            mean, log_sd = self.prior_params(out)
        else:
            z_new = out
            mean, log_sd = self.prior_params(out)
        log_p = gaussian_log_p(z_new, mean, log_sd).view(b, -1).sum(1)
        return out, logdet, log_p, z_new

    def reverse(self, out, z):
        """out: kept part (split) or None (top); z: the level's raw latent."""
        x = torch.cat([out, z], 1) if self.split else z
        for flow in self.flows[::-1]:
            x = flow.reverse(x)
        return unsqueeze2(x)


class Glow(nn.Module):
    def __init__(self, in_channel, n_flow, n_block, affine=True, conv_lu=True, hidden=512):
        super().__init__()
        self.in_channel = in_channel
        self.n_block = n_block
        self.blocks = nn.ModuleList()
        c = in_channel
        for _ in range(n_block - 1):
            self.blocks.append(Block(c, n_flow, affine=affine, conv_lu=conv_lu, hidden=hidden))
            c *= 2
        # rosinality quirk: the last block is always LU
        self.blocks.append(Block(c, n_flow, split=False, affine=affine, conv_lu=True, hidden=hidden))

    def forward(self, x):
        log_p_sum = 0
        logdet = 0
        out = x
        z_outs = []
        for block in self.blocks:
            out, det, log_p, z_new = block(out)
            z_outs.append(z_new)
            logdet = logdet + det
            if log_p is not None:
                log_p_sum = log_p_sum + log_p
        return log_p_sum, logdet, z_outs

    # ---- helpers -------------------------------------------------------
    def log_prob(self, x):
        """log p(x) = log_p(z) + logdet per image, nats (continuous density)."""
        log_p, logdet, _ = self(x)
        return log_p + logdet * torch.ones_like(log_p)

    def latent_shapes(self, h, w):
        shapes = []
        c = self.in_channel
        for i, _ in enumerate(self.blocks):
            c, h, w = c * 4, h // 2, w // 2
            if i < self.n_block - 1:
                c //= 2
            shapes.append((c, h, w))
        return shapes

    def encode(self, x):
        """Standardised latents eps [N, D]: per level (finest first, top last),
        (z - mean) * exp(-log_sd), flattened in C, H, W order."""
        out = x
        eps = []
        n = x.shape[0]
        for block in self.blocks:
            out = squeeze2(out)
            for flow in block.flows:
                out, _ = flow(out)
            if block.split:
                out, z = out.chunk(2, 1)
            else:
                z = out
            mean, log_sd = block.prior_params(out)
            eps.append(((z - mean) * torch.exp(-log_sd)).reshape(n, -1))
        return torch.cat(eps, 1)

    def decode(self, eps, height, width, temp=1.0):
        """Exact inverse of encode (temp scales eps only)."""
        n = eps.shape[0]
        shapes = self.latent_shapes(height, width)
        sizes = [c * h * w for c, h, w in shapes]
        assert eps.shape[1] == sum(sizes), (eps.shape, sizes)
        parts = list(torch.split(eps, sizes, 1))
        out = None
        for i in range(self.n_block - 1, -1, -1):
            block = self.blocks[i]
            e = parts[i].reshape(n, *shapes[i]) * temp
            if block.split:
                mean, log_sd = block.prior_params(out)
            else:
                mean, log_sd = block.prior_params(e)
            z = mean + torch.exp(log_sd) * e
            out = block.reverse(out, z)
        return out

    def sample(self, n, height, width, temp=0.7, generator=None):
        d = self.in_channel * height * width
        p = next(self.parameters())
        eps = torch.randn(n, d, generator=generator, dtype=p.dtype)
        return self.decode(eps, height, width, temp=temp)


# ---- random test models ------------------------------------------------
def random_model(in_channel, n_flow, n_block, affine=True, conv_lu=True, hidden=32,
                 height=16, width=16, seed=0, noise=1.0):
    """A Glow with actnorms initialised on random model-space data and EVERY
    parameter perturbed (zero convs, biases, scales included), so that nothing
    is zero but the model stays well-conditioned."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = Glow(in_channel, n_flow, n_block, affine=affine, conv_lu=conv_lu, hidden=hidden)
    with torch.no_grad():
        # perturb everything first (so the actnorm init sees the final nets)
        for name, p in m.named_parameters():
            def rnd(*s, std=1.0):
                return torch.randn(*s, generator=g) * std
            if name.endswith("actnorm.loc") or name.endswith("actnorm.scale"):
                continue
            if name.endswith("net.0.weight") or name.endswith("net.2.weight"):
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(rnd(*p.shape, std=(2.0 / fan_in) ** 0.5))
            elif name.endswith("net.0.bias") or name.endswith("net.2.bias"):
                p.copy_(rnd(*p.shape, std=0.05))
            elif name.endswith("invconv.weight"):
                p.add_(rnd(*p.shape, std=0.02 * noise / p.shape[0] ** 0.5))
            elif name.endswith("conv.weight"):  # zero convs (coupling out, priors)
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(rnd(*p.shape, std=0.3 * noise / fan_in ** 0.5))
            elif name.endswith("conv.bias"):
                p.copy_(rnd(*p.shape, std=0.05 * noise))
            elif name.endswith(".scale"):  # ZeroConv2d scale
                p.copy_(rnd(*p.shape, std=0.05 * noise))
            elif name.endswith("w_s"):
                p.add_(rnd(*p.shape, std=0.02 * noise))
            elif name.endswith("w_l") or name.endswith("w_u"):
                # small relative noise: L and U alone can be ill-conditioned
                p.mul_(1 + rnd(*p.shape, std=0.01 * noise))
                p.add_(rnd(*p.shape, std=0.001 * noise / p.shape[0]))
            else:
                raise RuntimeError("random_model: unhandled parameter " + name)
        # data-dependent actnorm init on one batch of model-space data
        x = torch.rand(16, in_channel, height, width, generator=g) - 0.5
        m(x)
        # then nudge the actnorms so loc, scale are not exactly the init
        for name, p in m.named_parameters():
            if name.endswith("actnorm.loc"):
                p.add_(torch.randn(*p.shape, generator=g) * 0.02 * noise)
            elif name.endswith("actnorm.scale"):
                p.mul_(1 + torch.randn(*p.shape, generator=g) * 0.02 * noise)
    m.eval()
    return m
