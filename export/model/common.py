"""Building blocks shared by the S3 modules (spec sections 7-10).

Symbols: B batch (1 at inference), N objects, C channels, h x w = H/16 x W/16, P = h*w.
"Group" tensors are (B, N, C, h, w): object rows folded into the batch axis for convs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GConv2d(nn.Conv2d):
    """Conv2d over a (B, N, C, h, w) group tensor: objects folded into the batch axis."""

    def forward(self, g: Tensor) -> Tensor:  # type: ignore[override]
        b, n = g.shape[:2]
        out = super().forward(g.flatten(0, 1))          # (B*N, C, h, w) -> (B*N, C', h', w')
        return out.view(b, n, *out.shape[1:])            # -> (B, N, C', h', w')


def fold(g: Tensor) -> Tensor:
    return g.flatten(0, 1)                               # (B, N, ...) -> (B*N, ...)


def unfold(x: Tensor, b: int, n: int) -> Tensor:
    return x.view(b, n, *x.shape[1:])                    # (B*N, ...) -> (B, N, ...)


class CAResBlock(nn.Module):
    """Residual conv block with channel attention (spec 7.3): y*sigmoid(conv1d(avg(y))) + x."""

    def __init__(self, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim != out_dim:
            raise ValueError("CAResBlock in S3 is always square")
        self.conv1 = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1)
        t = int((abs(math.log2(out_dim)) + 1) // 2)
        k = t if t % 2 else t + 1                        # 5 for 256 channels
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B', C, h, w) -> (B', C, h, w)."""
        y = self.conv2(F.relu(self.conv1(F.relu(x))))
        b, c = y.shape[:2]
        a = y.mean(dim=(2, 3)).view(b, 1, c)             # (B', C, h, w) -> (B', 1, C)
        a = torch.sigmoid(self.conv(a)).view(b, c, 1, 1)  # channel weights
        return y * a + x


class GroupResBlock(nn.Module):
    """conv2(ReLU(conv1(ReLU(g)))) + skip(g) on group tensors (decoder, spec 10.1)."""

    def __init__(self, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.downsample = None if in_dim == out_dim else GConv2d(in_dim, out_dim, kernel_size=1)
        self.conv1 = GConv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = GConv2d(out_dim, out_dim, kernel_size=3, padding=1)

    def forward(self, g: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(g))))
        skip = g if self.downsample is None else self.downsample(g)
        return out + skip


class MainToGroupDistributor(nn.Module):
    """g <- x_transform(x) broadcast over objects + g_transform(g)."""

    def __init__(self, *, x_in: int, g_in: int, out_dim: int) -> None:
        super().__init__()
        self.x_transform = nn.Conv2d(x_in, out_dim, kernel_size=1)
        self.g_transform = GConv2d(g_in, out_dim, kernel_size=1)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return self.x_transform(x).unsqueeze(1) + self.g_transform(g)   # (B,1,C,h,w) + (B,N,C,h,w)


class GroupFusionBlock(nn.Module):
    """Fuse a shared map into per-object maps, then two channel-attention blocks (spec 7.1)."""

    def __init__(self, *, x_in: int, g_in: int, out_dim: int) -> None:
        super().__init__()
        self.distributor = MainToGroupDistributor(x_in=x_in, g_in=g_in, out_dim=out_dim)
        self.block1 = CAResBlock(in_dim=out_dim, out_dim=out_dim)
        self.block2 = CAResBlock(in_dim=out_dim, out_dim=out_dim)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """x: (B, Cx, h, w), g: (B, N, Cg, h, w) -> (B, N, C, h, w)."""
        b, n = g.shape[:2]
        g = fold(self.distributor(x, g))                 # (B*N, C, h, w)
        g = self.block2(self.block1(g))
        return unfold(g, b, n)


def fp32_island(x: Tensor) -> torch.autocast:
    """Autocast off for the numerically sensitive parts (spec 11 / DESIGN "Precision"): sensory
    update, summarizer, affinity + top-k, aggregation. A no-op in fp32 and in exported graphs;
    callers cast their inputs with .float() inside it."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class SensoryUpdater(nn.Module):
    """The GRU-like gated sensory update (spec 7.4) behind a 3x3 group conv."""

    def __init__(self, *, in_dim: int, sensory_dim: int) -> None:
        super().__init__()
        self.sensory_dim = sensory_dim
        self.transform = GConv2d(in_dim + sensory_dim, sensory_dim * 3, kernel_size=3, padding=1)

    def forward(self, g: Tensor, sensory: Tensor) -> Tensor:
        """g: (B, N, Cin, h, w), sensory: (B, N, Cs, h, w) -> new sensory (B, N, Cs, h, w)."""
        with fp32_island(g):
            g, sensory = g.float(), sensory.float()
            u = self.transform(torch.cat([g, sensory], dim=2))   # (B, N, 3*Cs, h, w)
            return gated_sensory_update(u, sensory, self.sensory_dim)


def gated_sensory_update(u: Tensor, sensory: Tensor, dim: int) -> Tensor:
    forget = torch.sigmoid(u[:, :, :dim])
    update = torch.sigmoid(u[:, :, dim:2 * dim])
    new_value = torch.tanh(u[:, :, 2 * dim:])
    return forget * sensory * (1 - update) + update * new_value


def sinusoid_2d(h: int, w: int, dim: int, *, scale: float, temperature: float,
                device: torch.device | None = None) -> Tensor:
    """The 2-D sinusoidal encoding of spec 9.1 as an (h, w, dim) constant.

    Channels [0, dim/2): x, interleaved sin/cos; [dim/2, dim): y. Computed in numpy float64 from
    Python ints, so a traced graph holds it as one float32 constant (no double ops for TensorRT).
    """
    h, w, dim = int(h), int(w), int(dim)   # traced shapes become constants here, on purpose
    half = dim // 2
    inv_freq = (1.0 / (temperature ** (np.arange(0, half, 2, dtype=np.float64) / half))).astype(np.float32)
    ys = np.arange(h, dtype=np.float64) / (h - 1 + 1e-6) * scale
    xs = np.arange(w, dtype=np.float64) / (w - 1 + 1e-6) * scale
    px = xs[:, None] * inv_freq.astype(np.float64)[None, :]           # (w, dim/4)
    py = ys[:, None] * inv_freq.astype(np.float64)[None, :]           # (h, dim/4)
    ex = np.stack([np.sin(px), np.cos(px)], axis=-1).reshape(w, half)
    ey = np.stack([np.sin(py), np.cos(py)], axis=-1).reshape(h, half)
    pe = np.concatenate([np.broadcast_to(ex[None], (h, w, half)), np.broadcast_to(ey[:, None], (h, w, half))], -1)
    return torch.from_numpy(pe.astype(np.float32)).to(device=device)                    # (h, w, dim)


def inverse_frequencies(dim: int, temperature: float) -> Tensor:
    """temperature^(-2i/(dim/2)), i < dim/4 (the `inv_freq` buffers of the state dict)."""
    half = dim // 2
    return 1.0 / (temperature ** (torch.arange(0, half, 2, dtype=torch.float32) / half))


class InvFreqBuffer(nn.Module):
    """Holds the persistent `inv_freq` buffer that the reference state dict carries (spec 9.1)."""

    def __init__(self, dim: int, temperature: float) -> None:
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(dim, temperature), persistent=True)


def aggregate_log_odds(prob: Tensor, dim: int = 1) -> Tensor:
    """Soft aggregation (spec 10.3) without the final softmax: N object probs -> N+1 log-odds."""
    with fp32_island(prob):
        return _aggregate(prob.float(), dim)


def _aggregate(prob: Tensor, dim: int) -> Tensor:
    bg = torch.prod(1 - prob, dim=dim, keepdim=True)
    p = torch.cat([bg, prob], dim=dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p))


# log-odds bound of the clamp of spec 10.3: logit(1 - 1e-7) = -logit(1e-7)
LOG_ODDS_BOUND = math.log((1 - 1e-7) / 1e-7)


def aggregate_logits(logits: Tensor, dim: int = 1) -> Tensor:
    """Soft aggregation (spec 10.3) of N object *logits* -> N+1 log-odds, background first.

    The same function as aggregate_log_odds(sigmoid(logits)), evaluated without forming
    sigmoid(x) near 1: there fp32 keeps only a few bits of 1 - sigmoid(x), so a one-ulp
    difference between two backends' sigmoid moved a saturated object's log-odds by up to ~0.5
    and the output probabilities by up to 3e-2 (measured ONNX Runtime vs torch, same inputs).
    Here an object's log-odds is its logit and the background's comes from
    s = sum_k softplus(logit_k) = -log(prod_k (1 - sigmoid(logit_k))); both clamped at the
    bound the probability clamp implies. Plain ops only (Relu, Abs, Exp, Log, Where), no
    Softplus/Log1p, so every runtime evaluates the same formulas.
    """
    with fp32_island(logits):
        x = logits.float()
        bound = LOG_ODDS_BOUND
        s = _softplus(x).sum(dim=dim, keepdim=True)                        # -log(background prob)
        bg = -s - _log_one_minus_exp_neg(s)                                 # log(bg / (1 - bg))
        return torch.cat([bg, x], dim=dim).clamp(-bound, bound)


def _softplus(x: Tensor) -> Tensor:
    """log(1 + e^x), absolute error ~1e-7 and relative error ~1e-6 for every x."""
    e = torch.exp(torch.clamp(x, max=-4.0))
    series = e * (1 - e * (0.5 - e / 3))                                    # x < -4: log1p(e) to O(e^4)
    return torch.where(x < -4.0, series, F.relu(x) + torch.log(1 + torch.exp(-x.abs())))


def _log_one_minus_exp_neg(s: Tensor) -> Tensor:
    """log(1 - e^-s) for s >= 0 (-inf at 0), accurate also for small s where 1 - e^-s cancels."""
    small = s < 1e-2
    tiny = torch.clamp(s, min=1e-30)
    series = torch.log(tiny) - tiny / 2 + tiny * tiny / 24                  # log(s) + log((1-e^-s)/s), O(s^4)
    big = torch.clamp(s, min=1e-2)
    return torch.where(small, series, torch.log(1 - torch.exp(-big)))


def area_downsample(x: Tensor, factor: int) -> Tensor:
    """Exact area interpolation for sizes that are multiples of `factor`: (..., H, W) -> (..., H/f, W/f)."""
    lead = x.shape[:-2]
    y = F.avg_pool2d(x.reshape(-1, 1, x.shape[-2], x.shape[-1]), kernel_size=factor, stride=factor)
    return y.view(*lead, y.shape[-2], y.shape[-1])


def upsample_groups(g: Tensor, ratio: int) -> Tensor:
    """Bilinear (align_corners=False) upsampling of a group tensor (B, N, C, h, w)."""
    b, n = g.shape[:2]
    out = F.interpolate(fold(g), scale_factor=float(ratio), mode="bilinear", align_corners=False)
    return unfold(out, b, n)
