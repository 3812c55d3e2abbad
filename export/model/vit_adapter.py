"""The `adapter_depthanybase` pixel encoder: ViT-B/16 + spatial-prior adapter (spec section 4).

Symbols: B batch, C = cfg.dim channels, H x W padded input (multiples of 32),
h x w = H/16 x W/16, P = h*w patch tokens, G = cfg.pos_grid (side of the learned position
grid), Lq = 5P adapter tokens (4P stride-8 tokens row-major, then P stride-16 tokens),
M deformable heads, K sampling points per head, D = C/M channels per deformable head.

The encoder is split in two traceable halves, so the exporter can cut the graph between them:
``forward_tokens`` (the ViT, whose only resolution-dependent input is the position embedding)
and ``forward_adapter`` (spatial prior, interactions, scale assembly). The adapter reads the ViT
tokens but never writes them back (no injector, spec 13.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3rt.configs import ViTAdapterConfig
from s3rt.errors import InternalError, ShapeError

VIT_LN_EPS = 1e-6          # ViT blocks and the (unused) final norm
READ_LN_EPS = 1e-5         # read_from_cls.norm
EXTRACTOR_LN_EPS = 1e-6    # extractor query/feat/ffn norms


# ------------------------------------------------------------------------------------------
# ViT backbone (spec 4.1)
# ------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: image -> row-major token grid."""

    def __init__(self, *, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) -> (B, P, C)."""
        return self.proj(x).flatten(2).transpose(1, 2)   # (B, C, h, w) -> (B, C, P) -> (B, P, C)


class Attention(nn.Module):
    """Plain softmax self-attention (what xformers would compute too, spec 4.1)."""

    def __init__(self, *, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads)  # (B, T, 3C) -> (B, T, 3, heads, c)
        qkv = qkv.permute(2, 0, 3, 1, 4)                 # -> (3, B, heads, T, c)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, T, c) @ (B, heads, c, T) -> (B, heads, T, T)
        out = (attn @ v).transpose(1, 2).reshape(b, t, c)  # (B, heads, T, c) -> (B, T, heads, c) -> (B, T, C)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()                             # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, *, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm ViT block with LayerScale on both residual branches."""

    def __init__(self, *, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.attn = Attention(dim=dim, heads=heads)
        self.ls1 = LayerScale(dim=dim)
        self.norm2 = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.mlp = Mlp(dim=dim, hidden=mlp_dim)
        self.ls2 = LayerScale(dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1+P, C) -> (B, 1+P, C)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTBackbone(nn.Module):
    """ViT with a learned G x G position grid; `mask_token` and `norm` exist only for the state dict."""

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_dim: int, patch: int, pos_grid: int,
                 in_chans: int = 3) -> None:
        super().__init__()
        self.patch = patch
        self.pos_grid = pos_grid
        # Registration order = the reference state-dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))                 # unused at inference
        self.patch_embed = PatchEmbed(in_chans=in_chans, dim=dim, patch=patch)
        self.blocks = nn.ModuleList(Block(dim=dim, heads=heads, mlp_dim=mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=VIT_LN_EPS)                       # unused (spec 4.1)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def interpolated_pos_embed(self, h: int, w: int) -> Tensor:
        """Position embedding for an h x w token grid: (1, 1+h*w, C).

        Bicubic (A=-0.75, align_corners=False) called with *scale factors* ((h+0.1)/G, (w+0.1)/G):
        output row i reads grid row (i+0.5)*G/(h+0.1)-0.5, which differs from resizing by size.
        """
        g = self.pos_grid
        if h == g and w == g:
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        cls_pos = pos[:, :1]                                                 # (1, 1, C)
        grid = pos[:, 1:].reshape(1, g, g, dim)                              # (1, G*G, C) -> (1, G, G, C)
        grid = grid.permute(0, 3, 1, 2)                                      # -> (1, C, G, G)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic",
                             align_corners=False)                            # (1, C, h, w)
        if tuple(grid.shape[-2:]) != (h, w):
            raise InternalError(f"pos-embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)               # (1, C, h, w) -> (1, h, w, C) -> (1, P, C)
        return torch.cat([cls_pos, grid], dim=1).to(self.pos_embed.dtype)    # (1, 1+P, C)

    def prepare_tokens(self, x: Tensor, pos_embed: Tensor) -> Tensor:
        """x: (B, 3, H, W), pos_embed: (1, 1+P, C) -> tokens (B, 1+P, C)."""
        t = self.patch_embed(x)                                              # (B, P, C)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)  # (B, 1+P, C)
        return t + pos_embed


# ------------------------------------------------------------------------------------------
# Spatial prior module (spec 4.2)
# ------------------------------------------------------------------------------------------

def _conv_bn_relu(in_dim: int, out_dim: int, *, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_dim), nn.ReLU(inplace=False)]


class SpatialPriorModule(nn.Module):
    """Conv stem giving a stride-4 map and stride-8/16 token sets, all projected to C."""

    def __init__(self, *, widths: tuple[int, int, int], dim: int, in_chans: int = 3) -> None:
        super().__init__()
        w1, w2, w3 = widths
        # Sequential indices reproduce the reference keys: stem.{0,1,3,4,6,7}, conv2/conv3.{0,1}.
        self.stem = nn.Sequential(*_conv_bn_relu(in_chans, w1, stride=2), *_conv_bn_relu(w1, w1, stride=1),
                                  *_conv_bn_relu(w1, w1, stride=1),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*_conv_bn_relu(w1, w2, stride=2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(w2, w3, stride=2))
        self.fc1 = nn.Conv2d(w1, dim, kernel_size=1)
        self.fc2 = nn.Conv2d(w2, dim, kernel_size=1)
        self.fc3 = nn.Conv2d(w3, dim, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, 3, H, W) -> c1 (B, C, 4h, 4w), c2 tokens (B, 4P, C), c3 tokens (B, P, C)."""
        s1 = self.stem(x)
        s2 = self.conv2(s1)
        s3 = self.conv3(s2)
        c1 = self.fc1(s1)
        c2 = self.fc2(s2).flatten(2).transpose(1, 2)      # (B, C, 2h, 2w) -> (B, C, 4P) -> (B, 4P, C)
        c3 = self.fc3(s3).flatten(2).transpose(1, 2)      # (B, C, h, w) -> (B, C, P) -> (B, P, C)
        return c1, c2, c3


# ------------------------------------------------------------------------------------------
# Multi-scale deformable attention with one value level (spec 4.4)
# ------------------------------------------------------------------------------------------

def adapter_reference_points(h: int, w: int, *, device: torch.device | None = None) -> Tensor:
    """Cell centres of the adapter queries, normalised to [0, 1]: (1, Lq, 2) as (x, y).

    A pure function of Python ints, so tracing folds it into a constant. Computed as
    (i + 0.5) / n in float32, like the reference's linspace(0.5, n-0.5, n) / n.
    """
    points = []
    for rows, cols in ((2 * h, 2 * w), (h, w)):          # stride-8 grid first, then stride-16
        ys = (torch.arange(rows, dtype=torch.float32, device=device) + 0.5) / rows
        xs = (torch.arange(cols, dtype=torch.float32, device=device) + 0.5) / cols
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")                 # (rows, cols) each
        points.append(torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], dim=-1))  # (rows*cols, 2)
    return torch.cat(points, dim=0)[None]                                    # (1, 5P, 2)


def deform_sample(value: Tensor, locations: Tensor, weights: Tensor, *, h: int, w: int) -> Tensor:
    """Weighted bilinear reads of one value level (the core of MSDeformAttn).

    value: (B, P, M, D); locations: (B, Lq, M, K, 2) as (x, y) in [0, 1] of the h x w map;
    weights: (B, Lq, M, K). Returns (B, Lq, M*D). Pixel coordinate = loc*size - 0.5, zeros
    outside: exactly grid_sample(bilinear, zeros, align_corners=False) on grid 2*loc - 1.
    """
    b, p, m, d = value.shape
    lq, k = locations.shape[1], locations.shape[3]
    maps = value.flatten(2).transpose(1, 2).reshape(b * m, d, h, w)  # (B, P, M*D) -> (B, M*D, P) -> (B*M, D, h, w)
    grid = 2 * locations - 1
    grid = grid.transpose(1, 2).flatten(0, 1)            # (B, Lq, M, K, 2) -> (B, M, Lq, K, 2) -> (B*M, Lq, K, 2)
    sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)         # (B*M, D, Lq, K)
    a = weights.transpose(1, 2).reshape(b * m, 1, lq, k)  # (B, Lq, M, K) -> (B, M, Lq, K) -> (B*M, 1, Lq, K)
    out = (sampled * a).sum(-1)                          # (B*M, D, Lq)
    return out.view(b, m * d, lq).transpose(1, 2)        # (B*M, D, Lq) -> (B, M*D, Lq) -> (B, Lq, M*D)


class MSDeformAttn(nn.Module):
    """Deformable attention over a single value level; offsets are in value-map cells."""

    def __init__(self, *, dim: int, heads: int, points: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"deformable attention: dim {dim} not divisible by {heads} heads")
        self.heads = heads
        self.points = points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)   # one level
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)                        # deform_ratio ignored (spec 13.4)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, reference_points: Tensor, feat: Tensor, *, h: int, w: int) -> Tensor:
        """query: (B, Lq, C); reference_points: (1 or B, Lq, 2) in [0, 1]; feat: (B, P, C) -> (B, Lq, C)."""
        b, lq, c = query.shape
        m, k = self.heads, self.points
        value = self.value_proj(feat).view(b, h * w, m, c // m)                 # (B, P, C) -> (B, P, M, D)
        offsets = self.sampling_offsets(query).view(b, lq, m, k, 2)             # (B, Lq, M*K*2) -> (B, Lq, M, K, 2)
        attn = self.attention_weights(query).view(b, lq, m, k).softmax(dim=-1)  # (B, Lq, M*K) -> (B, Lq, M, K)
        offsets = torch.cat([offsets[..., :1] / w, offsets[..., 1:] / h], dim=-1)  # cells -> [0, 1] units
        locations = reference_points[:, :, None, None, :] + offsets             # (B, Lq, M, K, 2)
        return self.output_proj(deform_sample(value, locations, attn, h=h, w=w))


# ------------------------------------------------------------------------------------------
# Extractor, ConvFFN, class-token read, interaction (spec 4.3)
# ------------------------------------------------------------------------------------------

class DWConv(nn.Module):
    """Depth-wise 3x3 conv applied separately to the stride-8 and stride-16 parts of the sequence."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def forward(self, x: Tensor, *, h: int, w: int) -> Tensor:
        """x: (B, 5P, Ch) -> (B, 5P, Ch). The reference splits at 16n / 20n with n = 5P // 20,
        which is 4P / 5P because 32-padding makes P divisible by 4."""
        b, _, ch = x.shape
        p = h * w
        x8 = x[:, :4 * p].transpose(1, 2).reshape(b, ch, 2 * h, 2 * w)  # (B, 4P, Ch) -> (B, Ch, 4P) -> (B, Ch, 2h, 2w)
        x16 = x[:, 4 * p:].transpose(1, 2).reshape(b, ch, h, w)         # (B, P, Ch) -> (B, Ch, P) -> (B, Ch, h, w)
        y8 = self.dwconv(x8).flatten(2).transpose(1, 2)                  # (B, Ch, 2h, 2w) -> (B, Ch, 4P) -> (B, 4P, Ch)
        y16 = self.dwconv(x16).flatten(2).transpose(1, 2)                # (B, Ch, h, w) -> (B, Ch, P) -> (B, P, Ch)
        return torch.cat([y8, y16], dim=1)                               # (B, 5P, Ch)


class ConvFFN(nn.Module):
    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(dim=hidden)
        self.act = nn.GELU()                             # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, *, h: int, w: int) -> Tensor:
        """x: (B, 5P, C) -> (B, 5P, C)."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), h=h, w=w)))


class Extractor(nn.Module):
    """Adapter tokens read the ViT tokens by deformable attention, then a ConvFFN."""

    def __init__(self, *, dim: int, heads: int, points: int, ffn_dim: int) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=EXTRACTOR_LN_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=EXTRACTOR_LN_EPS)
        self.attn = MSDeformAttn(dim=dim, heads=heads, points=points)
        self.ffn = ConvFFN(dim=dim, hidden=ffn_dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=EXTRACTOR_LN_EPS)

    def forward(self, c: Tensor, reference_points: Tensor, x: Tensor, *, h: int, w: int) -> Tensor:
        """c: (B, 5P, C) adapter tokens; x: (B, P, C) ViT patch tokens -> (B, 5P, C)."""
        c = c + self.attn(self.query_norm(c), reference_points, self.feat_norm(x), h=h, w=w)
        return c + self.ffn(self.ffn_norm(c), h=h, w=w)


class ClsRead(nn.Module):
    """Adapter tokens attend to two global tokens: the class token and the patch-token mean."""

    def __init__(self, *, dim: int, heads: int) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim, eps=READ_LN_EPS)

    def forward(self, c: Tensor, tokens: Tensor) -> Tensor:
        """c: (B, 5P, C), tokens: (B, 1+P, C) -> (B, 5P, C). The residual is the normalised c (spec 13.3)."""
        u = self.norm(c)
        kv = torch.cat([tokens[:, :1], tokens[:, 1:].mean(dim=1, keepdim=True)], dim=1)  # (B, 2, C)
        return u + self.cross_attn(u, kv, kv)[0]


class Interaction(nn.Module):
    """One adapter step after a group of ViT blocks: global read, extractor, optional extra extractors."""

    def __init__(self, *, extractor: Extractor, extra_extractors: list[Extractor], read_from_cls: ClsRead) -> None:
        super().__init__()
        # Registration order = the reference state-dict order.
        self.extractor = extractor
        self.extra_extractors = nn.ModuleList(extra_extractors)   # empty except on the last interaction
        self.read_from_cls = read_from_cls

    def forward(self, c: Tensor, tokens: Tensor, reference_points: Tensor, *, h: int, w: int) -> Tensor:
        """c: (B, 5P, C), tokens: (B, 1+P, C) after this group's ViT blocks -> new c (B, 5P, C)."""
        c = self.read_from_cls(c, tokens)
        x = tokens[:, 1:]                                # (B, P, C) patch tokens
        c = self.extractor(c, reference_points, x, h=h, w=w)
        for extractor in self.extra_extractors:
            c = extractor(c, reference_points, x, h=h, w=w)
        return c


# ------------------------------------------------------------------------------------------
# The encoder (spec 4.5 assembly)
# ------------------------------------------------------------------------------------------

class ViTAdapterEncoder(nn.Module):
    """Pixel encoder `pixel_encoder.*` of adapter_depthanybase: image -> (f16, f8, f4), all C channels."""

    def __init__(self, cfg: ViTAdapterConfig) -> None:
        super().__init__()
        if cfg.interactions != 4 or cfg.depth % cfg.interactions:
            raise ValueError(f"the adapter assembles 4 interactions over equal block groups; "
                             f"got depth {cfg.depth}, interactions {cfg.interactions}")
        self.cfg = cfg
        dim = cfg.dim
        # Registration order = the reference state-dict order.
        self.level_embed = nn.Parameter(torch.zeros(2, dim))         # [stride 8, stride 16]
        self.spm = SpatialPriorModule(widths=cfg.spm_dims, dim=dim)

        def extractor() -> Extractor:
            return Extractor(dim=dim, heads=cfg.deform_heads, points=cfg.deform_points, ffn_dim=cfg.cffn_dim)

        last = cfg.interactions - 1
        self.interactions = nn.ModuleList(
            Interaction(extractor=extractor(),
                        extra_extractors=[extractor() for _ in range(cfg.extra_extractors if i == last else 0)],
                        read_from_cls=ClsRead(dim=dim, heads=cfg.heads))
            for i in range(cfg.interactions))
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.norm3 = nn.BatchNorm2d(dim)
        self.vit_module = ViTBackbone(dim=dim, depth=cfg.depth, heads=cfg.heads, mlp_dim=cfg.mlp_dim,
                                      patch=cfg.patch, pos_grid=cfg.pos_grid)
        nn.init.normal_(self.level_embed, std=0.02)

    def _grid(self, x: Tensor) -> tuple[int, int]:
        """(h, w) of the stride-16 grid; refuses sizes the adapter cannot split (spec 3)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ShapeError(f"pixel encoder: expected an image (B, 3, H, W), got {tuple(x.shape)}")
        hh, ww = int(x.shape[-2]), int(x.shape[-1])
        if hh % 32 or ww % 32:
            raise ShapeError(f"pixel encoder: H and W must be multiples of 32, got {hh}x{ww}; "
                             f"pad the frame first (spec 3)")
        return hh // self.cfg.patch, ww // self.cfg.patch

    def interpolated_pos_embed(self, h: int, w: int) -> Tensor:
        """(1, 1+h*w, C) position embedding for an h x w token grid (constant per resolution)."""
        return self.vit_module.interpolated_pos_embed(h, w)

    def forward_tokens(self, x: Tensor, pos_embed: Tensor | None = None) -> list[Tensor]:
        """x: normalised image (B, 3, H, W). Returns the token maps (B, 1+P, C) after each group of
        ViT blocks (cfg.interactions of them). pos_embed: optional precomputed (1, 1+P, C), so the
        exported graph holds a constant instead of a bicubic resize."""
        h, w = self._grid(x)
        if pos_embed is None:
            pos_embed = self.interpolated_pos_embed(h, w)
        elif tuple(pos_embed.shape[1:]) != (1 + h * w, self.cfg.dim):
            raise ShapeError(f"pos_embed: expected (1, {1 + h * w}, {self.cfg.dim}) for a {h}x{w} grid, "
                             f"got {tuple(pos_embed.shape)}")
        t = self.vit_module.prepare_tokens(x, pos_embed)                 # (B, 1+P, C)
        per_group = self.cfg.depth // self.cfg.interactions
        blocks = self.vit_module.blocks
        outs = []
        for g in range(self.cfg.interactions):
            for blk in blocks[g * per_group:(g + 1) * per_group]:
                t = blk(t)
            outs.append(t)
        return outs

    def forward_adapter(self, x: Tensor, tokens: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """x: normalised image (B, 3, H, W); tokens: ``forward_tokens(x)``.
        Returns f16 (B, C, h, w), f8 (B, C, 2h, 2w), f4 (B, C, 4h, 4w)."""
        h, w = self._grid(x)
        if len(tokens) != self.cfg.interactions:
            raise ShapeError(f"forward_adapter: expected {self.cfg.interactions} token maps, got {len(tokens)}")
        b, dim, p = x.shape[0], self.cfg.dim, h * w
        c1, c2, c3 = self.spm(x)                                         # (B, C, 4h, 4w), (B, 4P, C), (B, P, C)
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1]], dim=1)  # (B, 5P, C)
        ref = adapter_reference_points(h, w, device=x.device)            # (1, 5P, 2)
        for layer, t in zip(self.interactions, tokens):
            c = layer(c, t, ref, h=h, w=w)
        c2 = c[:, :4 * p].transpose(1, 2).reshape(b, dim, 2 * h, 2 * w)  # (B, 4P, C) -> (B, C, 4P) -> (B, C, 2h, 2w)
        c3 = c[:, 4 * p:].transpose(1, 2).reshape(b, dim, h, w)          # (B, P, C) -> (B, C, P) -> (B, C, h, w)
        vit = [t[:, 1:].transpose(1, 2).reshape(b, dim, h, w)            # (B, P, C) -> (B, C, P) -> (B, C, h, w)
               for t in tokens[:3]]                                      # the last group only feeds the extractors
        c1 = self.up(c2) + c1
        c1 = c1 + F.interpolate(vit[0], scale_factor=4.0, mode="bilinear", align_corners=False)
        c2 = c2 + F.interpolate(vit[1], scale_factor=2.0, mode="bilinear", align_corners=False)
        c3 = c3 + vit[2]
        return self.norm3(c3), self.norm2(c2), self.norm1(c1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: normalised image (B, 3, H, W) -> (f16, f8, f4)."""
        return self.forward_adapter(x, self.forward_tokens(x))
