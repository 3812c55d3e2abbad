"""The object transformer's read-from-pixel layer, chosen by ModelConfig.read_from_pixel.

* ``dq_ca`` (S3, spec 9.4.1): discriminative-query cross-attention, each head gathers its most
  similar allowed pixel (object_transformer.DiscriminativeQueryCrossAttention).
* ``masked_mha`` (Cutie, CUTIE_DELTA 3): a standard masked multi-head cross-attention from the
  queries to the pixels, the mask being the same foreground/background split as DQ_CA's.

Both blocks take the same inputs, so the rest of the model never asks which one it holds.
Symbols: BN = batch x objects, Q queries, P = h*w pixels, C channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from s3rt.errors import ConfigError
from s3rt.export.model.object_transformer import DiscriminativeQueryCrossAttention, MultiheadAttention


def blocked_query_pixels(foreground: Tensor, num_queries: int) -> Tensor:
    """Spec 9.3's attention mask: foreground (BN, P) bool -> blocked (BN, 1, Q, P) bool.

    The first Q/2 queries may only look at the object's foreground, the last Q/2 only at its
    background; a (query, object) row that would block every pixel is cleared (attends to all),
    so a softmax over it always has a finite entry. The same mask serves every head.
    """
    is_fg_query = torch.arange(num_queries, device=foreground.device) < num_queries // 2     # (Q,)
    blocked = foreground.unsqueeze(1) != is_fg_query.view(1, num_queries, 1)                  # (BN, Q, P)
    all_blocked = blocked.all(dim=2, keepdim=True)
    return (blocked & ~all_blocked).unsqueeze(1)                                              # (BN, 1, Q, P)


class MaskedCrossAttention(nn.Module):
    """Cutie's `read_from_pixel` (CUTIE_DELTA 3): Xq <- LN(Xq) + MHA(LN(Xq) + Eq, T + Ep, T; mask).

    State-dict order matches Cutie: `cross_attn.*` (nn.MultiheadAttention layout) then `norm.*`.
    """

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.cross_attn = MultiheadAttention(dim=dim, num_heads=num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, xq: Tensor, pixel: Tensor, query_pe: Tensor, pixel_pe: Tensor, foreground: Tensor) -> Tensor:
        """xq (BN, Q, C), pixel (BN, P, C), query_pe (BN, Q, C), pixel_pe (BN, P, C), foreground (BN, P)."""
        z = self.norm(xq)
        blocked = blocked_query_pixels(foreground, xq.shape[1])                                # (BN, 1, Q, P)
        return z + self.cross_attn(z + query_pe, pixel + pixel_pe, pixel, blocked)


READ_FROM_PIXEL: dict[str, type[nn.Module]] = {
    "dq_ca": DiscriminativeQueryCrossAttention,
    "masked_mha": MaskedCrossAttention,
}


def read_from_pixel_layer(kind: str, *, dim: int, num_heads: int) -> nn.Module:
    """The read-from-pixel block a config names."""
    if kind not in READ_FROM_PIXEL:
        raise ConfigError(f"unknown read_from_pixel layer '{kind}'; choose one of {', '.join(READ_FROM_PIXEL)}")
    return READ_FROM_PIXEL[kind](dim=dim, num_heads=num_heads)
