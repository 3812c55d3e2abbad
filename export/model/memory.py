"""Memory readout over a fixed-capacity slot store (spec 8.1-8.2, DESIGN "State").

Symbols: Ck key channels, Cv value channels, S slots (one frame each), P = h*w tokens per
frame, T = S*P memory tokens, NB active buckets, N objects, k = top_k.

Invalid slots are masked to -inf per bucket before top-k, so shapes stay static and a padded
slot can never change a result. The softmax over the top-k subtracts the maximum (the
reference does not; identical except that the reference returns NaN on underflow).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def similarity(mem_key: Tensor, mem_shrinkage: Tensor, key: Tensor, selection: Tensor) -> Tensor:
    """Negative shrunk, selected L2 distance (spec 8.1).

    mem_key (1, Ck, T), mem_shrinkage (1, 1, T), key (1, Ck, P), selection (1, Ck, P) -> (1, T, P).
    """
    ck = mem_key.shape[1]
    mk = mem_key.transpose(1, 2)                                  # (1, T, Ck)
    a_sq = mk.pow(2) @ selection                                  # (1, T, P)
    two_ab = 2 * (mk @ (key * selection))                         # (1, T, P)
    b_sq = (selection * key.pow(2)).sum(1, keepdim=True)          # (1, 1, P)
    return (-a_sq + two_ab - b_sq) * mem_shrinkage.transpose(1, 2) / math.sqrt(ck)


def topk_readout(sim: Tensor, mem_value: Tensor, bucket_valid: Tensor, object_bucket: Tensor,
                 top_k: int) -> Tensor:
    """Per-bucket top-k softmax over valid slots, then each object reads its own values.

    sim (1, T, P), mem_value (N, Cv, T), bucket_valid (NB, S) bool, object_bucket (N,) int64
    -> readout (N, Cv, P).
    """
    _, t, p = sim.shape
    nb, s = bucket_valid.shape
    n, cv = mem_value.shape[:2]
    per_slot = sim.view(1, s, t // s, p)                                   # (1, S, P_mem, P)
    valid = bucket_valid.view(nb, s, 1, 1)
    masked = torch.where(valid, per_slot, torch.full_like(per_slot[:1, :1, :1, :1], float("-inf")))
    values, indices = torch.topk(masked.reshape(nb, t, p), k=top_k, dim=1)  # (NB, k, P)
    weights = torch.softmax(values, dim=1)                                  # max-subtracted
    weights = weights.index_select(0, object_bucket)                       # (N, k, P)
    indices = indices.index_select(0, object_bucket)                       # (N, k, P)
    flat_index = indices + (torch.arange(n, device=sim.device) * t).view(n, 1, 1)
    table = mem_value.transpose(1, 2).reshape(n * t, cv)                   # (N*T, Cv)
    picked = table.index_select(0, flat_index.reshape(-1)).view(n, top_k, p, cv)  # (N, k, P, Cv)
    readout = (picked * weights.unsqueeze(-1)).sum(dim=1)                  # (N, P, Cv)
    return readout.transpose(1, 2)                                         # (N, Cv, P)
