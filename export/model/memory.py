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


def topk_readout_long_term(sim: Tensor, lt_sim: Tensor, mem_value: Tensor, lt_value: Tensor,
                           bucket_valid: Tensor, lt_valid: Tensor, object_bucket: Tensor,
                           top_k: int) -> tuple[Tensor, Tensor]:
    """Readout over [long-term | slots] per bucket, plus the usage of every token (LT spec §5, §9.3).

    sim (1, T, P) shared slot similarity, lt_sim (NB, L, P) per-bucket long-term similarity,
    mem_value (N, Cv, T), lt_value (N, Cv, L), bucket_valid (NB, S) bool, lt_valid (NB, L) bool,
    object_bucket (N,) -> readout (N, Cv, P), usage (NB, L + T): the top-k softmax weights of a
    token summed over query pixels (what the reference adds to its usage counters).
    Top-k runs over the union: long-term and working tokens compete for the same k places.
    """
    _, t, p = sim.shape
    nb, s = bucket_valid.shape
    n, cv = mem_value.shape[:2]
    big_l = lt_sim.shape[1]
    neg = torch.full_like(sim[:1, :1, :1], float("-inf"))
    per_slot = torch.where(bucket_valid.view(nb, s, 1, 1), sim.view(1, s, t // s, p), neg.unsqueeze(0))
    lt_masked = torch.where(lt_valid.unsqueeze(-1), lt_sim, neg)                 # (NB, L, P)
    joint = torch.cat([lt_masked, per_slot.reshape(nb, t, p)], dim=1)            # (NB, L+T, P)
    values, indices = torch.topk(joint, k=top_k, dim=1)                          # (NB, k, P)
    weights = torch.softmax(values, dim=1)
    usage = torch.zeros(nb, big_l + t, dtype=weights.dtype, device=weights.device)
    usage = usage.scatter_add(1, indices.reshape(nb, top_k * p), weights.reshape(nb, top_k * p))
    weights = weights.index_select(0, object_bucket)                             # (N, k, P)
    indices = indices.index_select(0, object_bucket)                             # (N, k, P)
    is_lt = indices < big_l
    rows = (torch.arange(n, device=sim.device)).view(n, 1, 1)
    lt_index = (indices.clamp(max=big_l - 1) + rows * big_l).reshape(-1)
    wm_index = ((indices - big_l).clamp(min=0) + rows * t).reshape(-1)
    lt_table = lt_value.transpose(1, 2).reshape(n * big_l, cv)                   # (N*L, Cv)
    wm_table = mem_value.transpose(1, 2).reshape(n * t, cv)                      # (N*T, Cv)
    picked = torch.where(is_lt.view(n, top_k, p, 1),
                         lt_table.index_select(0, lt_index).view(n, top_k, p, cv),
                         wm_table.index_select(0, wm_index).view(n, top_k, p, cv))  # (N, k, P, Cv)
    readout = (picked * weights.unsqueeze(-1)).sum(dim=1)                        # (N, P, Cv)
    return readout.transpose(1, 2), usage


def consolidate_prototypes(mem_key: Tensor, mem_shrinkage: Tensor, mem_selection: Tensor, mem_value: Tensor,
                           candidate_index: Tensor, prototype_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Long-term consolidation of one bucket (LT spec §6.3): prototypes + potentiation.

    mem_key (1,Ck,T), mem_shrinkage (1,1,T), mem_selection (1,Ck,T), mem_value (N,Cv,T) the slot
    store; candidate_index (Nc,) token indices of the bucket's oldest working frames, oldest
    first; prototype_index (Pn,) positions in the candidates, chosen on the host by usage (the
    tie rule needs a stable sort, spec §9.5) -> proto_key (1,Ck,Pn) (the chosen candidates' own
    keys), proto_shrinkage (1,1,Pn), proto_value (N,Cv,Pn): full-softmax (no top-k) averages over
    all Nc candidates with the prototypes as queries. Every row is computed; the tracker keeps
    the rows of the bucket's objects.
    """
    kc = mem_key.index_select(2, candidate_index)                        # (1, Ck, Nc)
    sc = mem_shrinkage.index_select(2, candidate_index)                  # (1, 1, Nc)
    ec = mem_selection.index_select(2, candidate_index)                  # (1, Ck, Nc)
    vc = mem_value.index_select(2, candidate_index)                      # (N, Cv, Nc)
    kp = kc.index_select(2, prototype_index)                             # (1, Ck, Pn)
    ep = ec.index_select(2, prototype_index)                             # (1, Ck, Pn)
    weights = torch.softmax(similarity(kc, sc, kp, ep), dim=1)          # (1, Nc, Pn), columns sum to 1
    return kp, sc @ weights, vc @ weights                               # (1,Ck,Pn), (1,1,Pn), (N,Cv,Pn)


def prune_long_term(lt_key: Tensor, lt_shrinkage: Tensor, lt_value: Tensor, survivor_index: Tensor,
                    object_bucket: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gather the survivors of long-term pruning (LT spec §6.4), per bucket, in the given order.

    lt_key (NB,Ck,L), lt_shrinkage (NB,1,L), lt_value (N,Cv,L), survivor_index (NB,K) (chosen on
    the host: descending usage, stable ties), object_bucket (N,) -> (NB,Ck,K), (NB,1,K), (N,Cv,K).
    """
    nb, ck, _ = lt_key.shape
    n, cv, _ = lt_value.shape
    k = survivor_index.shape[1]
    key = lt_key.gather(2, survivor_index.unsqueeze(1).expand(nb, ck, k))
    shrinkage = lt_shrinkage.gather(2, survivor_index.unsqueeze(1))
    rows = survivor_index.index_select(0, object_bucket)                 # (N, K)
    value = lt_value.gather(2, rows.unsqueeze(1).expand(n, cv, k))
    return key, shrinkage, value
