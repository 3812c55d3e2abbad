"""Object transformer with the masked discriminative-query cross-attention (spec 9).

Symbols: B batch, N objects, Q queries, C = embed_dim, h x w pixel grid, P = h*w, heads = 8.
All attention is written with matmul + softmax so it exports to plain ONNX ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3rt.configs import ModelConfig
from s3rt.export.model.common import CAResBlock, GConv2d, InvFreqBuffer, aggregate_logits, sinusoid_2d
# DQ_CA's gather (spec 9.3-9.4.1) has one definition, the op's reference next to its CUDA kernel and plugin
from s3rt.kernels.masked_query_attention.reference import masked_query_gather_torch as masked_query_gather


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention with nn.MultiheadAttention's parameter layout.

    Own implementation (not nn.MultiheadAttention) so that eval mode never takes PyTorch's
    fused fast path, which the ONNX exporter cannot trace.
    """

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, blocked: Tensor | None = None) -> Tensor:
        """query (B', Lq, C), key/value (B', Lk, C), blocked (B', 1|heads, Lq, Lk) or None -> (B', Lq, C)."""
        b, lq, c = query.shape
        lk = key.shape[1]
        hd = c // self.num_heads
        wq, wk, wv = self.in_proj_weight.chunk(3, dim=0)
        bq, bk, bv = self.in_proj_bias.chunk(3, dim=0)
        q = F.linear(query, wq, bq).view(b, lq, self.num_heads, hd).transpose(1, 2)   # (B', heads, Lq, hd)
        k = F.linear(key, wk, bk).view(b, lk, self.num_heads, hd).transpose(1, 2)     # (B', heads, Lk, hd)
        v = F.linear(value, wv, bv).view(b, lk, self.num_heads, hd).transpose(1, 2)
        scores = (q / math.sqrt(hd)) @ k.transpose(-1, -2)                              # (B', heads, Lq, Lk)
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, lq, c)                              # (B', Lq, C)
        return self.out_proj(out)


def foreground_from_logits(aux_logits: Tensor) -> Tensor:
    """Spec 9.3: object k is foreground where its aggregated log-odds are the maximum.

    aux_logits (B, N, h, w) -> foreground (B*N, P) bool.
    """
    log_odds = aggregate_logits(aux_logits, dim=1)                        # (B, N+1, h, w)
    best = log_odds.max(dim=1, keepdim=True).values
    fg = log_odds[:, 1:] >= best                                          # (B, N, h, w)
    return fg.flatten(0, 1).flatten(1)                                    # (B*N, P)


class DiscriminativeQueryCrossAttention(nn.Module):
    """`read_from_pixel`: queries read their most similar allowed pixel, per head (spec 9.4.1)."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)
        self.gather_fn = masked_query_gather        # replaced by the fused kernel on CUDA

    def forward(self, xq: Tensor, pixel: Tensor, query_pe: Tensor, pixel_pe: Tensor, foreground: Tensor) -> Tensor:
        """xq (BN, Q, C), pixel (BN, P, C), query_pe (BN, Q, C), pixel_pe (BN, P, C) -> (BN, Q, C)."""
        z = self.norm(xq)
        k_hat = F.normalize(z + query_pe, dim=-1)
        g, _ = self.gather_fn(pixel + pixel_pe, k_hat, foreground, self.num_heads)
        o = F.normalize(self.proj(g * k_hat), dim=1) * self.alpha + g    # L2 over the query axis
        return self.final(o) + z


class QuerySelfAttention(nn.Module):
    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim=dim, num_heads=num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, xq: Tensor, query_pe: Tensor) -> Tensor:
        z = self.norm(xq)
        qk = z + query_pe
        return z + self.self_attn(qk, qk, z)


class QueryFFN(nn.Module):
    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, xq: Tensor) -> Tensor:
        return xq + self.linear2(F.relu(self.linear1(self.norm(xq))))


class PixelReadsQueries(nn.Module):
    """`read_from_query`: pixels attend to the queries (no norm)."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.cross_attn = MultiheadAttention(dim=dim, num_heads=num_heads)

    def forward(self, pixel: Tensor, xq: Tensor, pixel_pe: Tensor, query_pe: Tensor) -> Tensor:
        return pixel + self.cross_attn(pixel + pixel_pe, xq + query_pe, xq)


class PixelFFN(nn.Module):
    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.conv = CAResBlock(in_dim=dim, out_dim=dim)

    def forward(self, pixel_flat: Tensor, b: int, n: int, h: int, w: int) -> Tensor:
        """pixel_flat (B*N, P, C) -> (B, N, C, h, w)."""
        c = pixel_flat.shape[-1]
        x = pixel_flat.transpose(1, 2).reshape(b * n, c, h, w)             # (BN, P, C) -> (BN, C, h, w)
        return self.conv(x).view(b, n, c, h, w)


class QueryTransformerBlock(nn.Module):
    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, read_from_pixel: str = "dq_ca") -> None:
        super().__init__()
        from s3rt.export.model.read_from_pixel import read_from_pixel_layer
        self.read_from_pixel = read_from_pixel_layer(read_from_pixel, dim=dim, num_heads=num_heads)
        self.self_attn = QuerySelfAttention(dim=dim, num_heads=num_heads)
        self.ffn = QueryFFN(dim=dim, hidden=ffn_dim)
        self.read_from_query = PixelReadsQueries(dim=dim, num_heads=num_heads)
        self.pixel_ffn = PixelFFN(dim=dim)

    def forward(self, xq: Tensor, xp: Tensor, query_pe: Tensor, pixel_pe: Tensor, foreground: Tensor
                ) -> tuple[Tensor, Tensor]:
        """xq (BN, Q, C), xp (B, N, C, h, w), pes flattened, foreground (BN, P)."""
        b, n, c, h, w = xp.shape
        pixel = xp.flatten(3).flatten(0, 1).transpose(1, 2)                # (B, N, C, h, w) -> (BN, P, C)
        xq = self.read_from_pixel(xq, pixel, query_pe, pixel_pe, foreground)
        xq = self.self_attn(xq, query_pe)
        xq = self.ffn(xq)
        pixel = self.read_from_query(pixel, xq, pixel_pe, query_pe)
        return xq, self.pixel_ffn(pixel, b, n, h, w)


class ObjectTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, q = cfg.embed_dim, cfg.num_queries
        self.embed_dim = c
        self.pe_scale, self.pe_temperature = cfg.pe_scale, cfg.pe_temperature
        self.query_init = nn.Embedding(q, c)
        self.query_emb = nn.Embedding(q, c)
        self.summary_to_query_init = nn.Linear(c, c)
        self.summary_to_query_emb = nn.Linear(c, c)
        self.pixel_init_proj = GConv2d(c, c, kernel_size=1)
        self.pixel_emb_proj = GConv2d(c, c, kernel_size=1)
        self.spatial_pe = InvFreqBuffer(c, cfg.pe_temperature)
        self.blocks = nn.ModuleList(QueryTransformerBlock(dim=c, num_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim,
                                                          read_from_pixel=cfg.read_from_pixel)
                                    for _ in range(cfg.num_blocks))
        self.mask_pred = nn.ModuleList(nn.Sequential(nn.ReLU(), GConv2d(c, 1, kernel_size=1))
                                       for _ in range(cfg.num_blocks + 1))

    def forward(self, pixel: Tensor, object_memory: Tensor) -> Tensor:
        """pixel (B, N, C, h, w) fused readout, object_memory (B, N, Q, C+1) running sums -> (B, N, C, h, w)."""
        b, n, c, h, w = pixel.shape
        sums, area = object_memory[..., :-1], object_memory[..., -1:]
        values = (sums / (area + 1e-4)).flatten(0, 1)                      # (BN, Q, C)
        xq = self.query_init.weight.unsqueeze(0) + self.summary_to_query_init(values)
        query_pe = self.query_emb.weight.unsqueeze(0) + self.summary_to_query_emb(values)

        xp = self.pixel_init_proj(pixel)                                   # (B, N, C, h, w)
        grid_pe = sinusoid_2d(h, w, c, scale=self.pe_scale, temperature=self.pe_temperature,
                              device=pixel.device).view(1, h * w, c)       # (1, P, C) constant
        pixel_pe = self.pixel_emb_proj(pixel).flatten(3).flatten(0, 1).transpose(1, 2) + grid_pe  # (BN, P, C)

        aux = self.mask_pred[0](xp).squeeze(2)                             # (B, N, h, w) aux logits
        for i, block in enumerate(self.blocks):
            xq, xp = block(xq, xp, query_pe, pixel_pe, foreground_from_logits(aux))
            if i + 1 < len(self.blocks):   # mask_pred.{L} only feeds an unused mask (spec 13.6)
                aux = self.mask_pred[i + 1](xp).squeeze(2)
        return xp

