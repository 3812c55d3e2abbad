"""Long-term memory of the tracker (LONG_TERM_MEMORY.md §3-§7, fixed-capacity form of §9), torch-free.

The tracker's SlotStore (runtime/slot_store.py, handed to this class) keeps the working memory
(a bucket = its permanent slot + an ordered list of working slots). This module adds, for every bucket, a long-term store of at most L
tokens in fixed backend buffers (lt_key (NB,Ck,L), lt_shrinkage (NB,1,L), lt_value (N,Cv,L) row
= object, lt_valid (NB,L)), the usage counters, and the two operations that change it:

* consolidation (graph lt_consolidate): when a bucket holds F_max working frames after a write,
  its oldest max-min frames become Pn prototypes appended to its long-term store;
* pruning (graph lt_prune): before that, if the store holds >= L - Pn tokens, keep only the
  L - Pn - buffer most used ones, in descending usage.

Counters (use/life per bucket over all slot tokens and over the L long-term positions) and the
sizes live on the host: the readout graph hands back usage (NB, L + S*P) per readout, and the
choices "top k by usage" use a stable sort here. Every array is allocated once; nothing grows.

Tie rule (spec §9.5), for prototype choice and pruning survivors: **stable descending order -
among equal normalised usages the lower index wins**. Indices follow the reference order:
candidates oldest frame first and row-major within a frame; long-term tokens in their stored,
compacted order. Exact ties (typically usage 0: tokens never in any pixel's top-k) therefore
resolve identically in s3rt's literal re-statement and in this tracker; the reference (torch.topk)
leaves them implementation-defined.

Symbols: NB buckets, S slots, P tokens per slot, T = S*P, L = lt max tokens, K = survivors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from s3rt.long_term_config import LongTermConfig
from s3rt.runtime.backends.base import Array, Backend
from s3rt.runtime.slot_store import SlotStore

LIFE_INIT = np.float32(1e-7)      # the reference's initial "life" of a token (u = use / life)


def top_by_usage(usage: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, descending; ties: lower index first (spec §9.5)."""
    return np.argsort(-usage, kind="stable")[:k]


def boundary_gap(usage: np.ndarray, k: int) -> float:
    """How far the k-th largest value is from the (k+1)-th (inf if nothing is left out).

    0 means an exact tie at the cut (resolved by the stable rule); a tiny positive gap means a
    near tie that float summation order could flip.
    """
    if k >= usage.size:
        return float("inf")
    v = np.sort(usage)[::-1]
    return float(v[k - 1] - v[k])


@dataclass
class LongTermEvent:
    """One consolidation or pruning, for memory reports and tests."""

    frame: int
    bucket: int
    kind: str                # "consolidate" | "prune"
    tokens_before: int
    tokens_after: int
    gap: float               # boundary_gap of the usage choice (0: exact tie at the cut)
    top_value: float = field(default=0.0)   # the k-th largest usage (0: the tie is among unused tokens)


class UsageCounters:
    """use/life per bucket over the slot tokens (working memory) and the long-term positions.

    Fixed (NB, T) and (NB, L) float32 arrays; only the entries of a bucket's working slots and
    of its first `lt_len[b]` long-term tokens mean anything.
    """

    def __init__(self, lt: LongTermConfig, buckets: int, slots: int, tokens: int) -> None:
        self.cfg = lt
        self.tokens = tokens
        t, big_l = slots * tokens, lt.max_num_tokens
        self.use = np.zeros((buckets, t), np.float32)
        self.life = np.full((buckets, t), LIFE_INIT, np.float32)
        self.lt_use = np.zeros((buckets, big_l), np.float32)
        self.lt_life = np.full((buckets, big_l), LIFE_INIT, np.float32)
        self.lt_len = np.zeros(buckets, np.int64)
        self.lt_valid = np.zeros((buckets, big_l), bool)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.use, self.life, self.lt_use, self.lt_life, self.lt_len, self.lt_valid))

    def clear_bucket(self, b: int) -> None:
        self.use[b] = 0
        self.life[b] = LIFE_INIT
        self.lt_len[b] = 0
        self.lt_valid[b] = False
        self.lt_use[b] = 0
        self.lt_life[b] = LIFE_INIT

    def move_bucket(self, src: int, dst: int) -> None:
        for a in (self.use, self.life, self.lt_use, self.lt_life, self.lt_len, self.lt_valid):
            a[dst] = a[src]

    def span(self, slot: int) -> slice:
        return slice(slot * self.tokens, (slot + 1) * self.tokens)

    def reset_slot(self, b: int, slot: int) -> None:
        """A slot (re)written as a working frame of bucket b: use 0, life 1e-7."""
        self.use[b, self.span(slot)] = 0
        self.life[b, self.span(slot)] = LIFE_INIT

    def add_readout(self, b: int, usage: np.ndarray, working_slots: list[int]) -> None:
        """Spec §5.4: usage (L + T,) of one bucket's readout; permanent tokens get nothing."""
        big_l = self.cfg.max_num_tokens
        n = int(self.lt_len[b])
        if n:
            self.lt_use[b, :n] += usage[:n]
            self.lt_life[b, :n] += 1
        for slot in working_slots:
            sp = self.span(slot)
            self.use[b, sp] += usage[big_l + sp.start:big_l + sp.stop]
            self.life[b, sp] += 1

    def working_usage(self, b: int, slots: list[int]) -> np.ndarray:
        """Normalised usage (use / life) of the given slots' tokens, in slot order (candidate order)."""
        return np.concatenate([self.use[b, self.span(s)] / self.life[b, self.span(s)] for s in slots])

    def append_prototypes(self, b: int) -> slice:
        """Reserve Pn long-term positions for new prototypes (use 0, life 1e-7)."""
        a = int(self.lt_len[b])
        pos = slice(a, a + self.cfg.num_prototypes)
        self.lt_use[b, pos] = 0
        self.lt_life[b, pos] = LIFE_INIT
        self.lt_len[b] = pos.stop
        self.lt_valid[b, :pos.stop] = True
        return pos

    def prune(self, b: int) -> tuple[np.ndarray, float, float]:
        """Survivors of pruning in descending usage (spec §6.4); counters carried over, reordered.

        -> (survivor positions (K,), boundary gap, K-th usage)."""
        n, keep = int(self.lt_len[b]), self.cfg.keep_after_prune
        u = self.lt_use[b, :n] / self.lt_life[b, :n]
        surv = top_by_usage(u, keep)
        gap = boundary_gap(u, keep) if keep else float("inf")
        kth = float(u[surv[-1]]) if keep else 0.0
        self.lt_use[b, :keep] = self.lt_use[b, surv]
        self.lt_life[b, :keep] = self.lt_life[b, surv]
        self.lt_use[b, keep:] = 0
        self.lt_life[b, keep:] = LIFE_INIT
        self.lt_len[b] = keep
        self.lt_valid[b] = False
        self.lt_valid[b, :keep] = True
        return surv, gap, kth


class LongTermMemory:
    """The tracker's long-term stores and counters; the tracker calls these hooks.

    Given explicitly by the tracker that owns them: the backend, the slot store (whose buckets'
    oldest working slots consolidation retires), the tracker's buffers by contract name (the
    lt_* state, usage, selection and the lt graphs' inputs/outputs) and `run_graph(name)`, which
    runs a graph on the tracker's live rows and buckets.
    """

    def __init__(self, lt: LongTermConfig, *, backend: Backend, store: SlotStore, buffers: Mapping[str, Array],
                 run_graph: Callable[[str], None], tokens: int, top_k: int) -> None:
        self.backend = backend
        self.store = store
        self.buffers = buffers
        self.run_graph = run_graph
        self.cfg = lt
        self.tokens = tokens
        lt.check_tokens(tokens, top_k)
        self.counters = UsageCounters(lt, store.max_buckets, store.slots, tokens)
        b = buffers
        self.lt_key, self.lt_shrinkage, self.lt_value = b["lt_key"], b["lt_shrinkage"], b["lt_value"]
        self.lt_valid, self.usage = b["lt_valid"], b["usage"]
        self.mem_selection = b["mem_selection"]
        Nc = lt.candidates(tokens)
        self._candidates_host = np.zeros(Nc, np.int64)
        self._survivors_host = np.tile(np.arange(max(lt.keep_after_prune, 1), dtype=np.int64),
                                       (store.max_buckets, 1))
        self.events: list[LongTermEvent] = []      # events of the current step (cleared per step)
        self.counts = {"consolidate": 0, "prune": 0}   # since reset (bounded: no event history kept)

    # -- lifecycle --------------------------------------------------------------------------------
    def reset(self) -> None:
        for buf in (self.lt_key, self.lt_shrinkage, self.lt_value, self.lt_valid, self.mem_selection):
            self.backend.fill_(buf, 0)
        for b in range(self.counters.lt_len.shape[0]):
            self.counters.clear_bucket(b)
        self.events.clear()
        self.counts = {"consolidate": 0, "prune": 0}

    def lt_len(self, b: int) -> int:
        return int(self.counters.lt_len[b])

    def state_nbytes(self) -> int:
        """Host-side counters (the device buffers are counted with the tracker's buffers)."""
        return self.counters.nbytes() + self._candidates_host.nbytes + self._survivors_host.nbytes

    # -- readout ----------------------------------------------------------------------------------
    def after_readout(self, nb: int) -> None:
        """Credit the readout's usage (NB, L + T) to every bucket's counters (spec §5.4)."""
        usage = self.backend.to_host(self.usage[:nb])
        for bi in range(min(nb, self.store.bucket_count)):
            self.counters.add_readout(bi, usage[bi], self.store.working_slots(bi))

    # -- writes -----------------------------------------------------------------------------------
    def after_write(self, slot: int | None, frame: int) -> None:
        """Selection of the new frame, fresh counters, then trigger / prune / consolidate (§6.1-§6.4)."""
        if slot is None:
            return
        P, store = self.tokens, self.store
        self.backend.copy_(self.mem_selection[:, :, slot * P:(slot + 1) * P], self.buffers["selection"])
        for bi in range(store.bucket_count):
            working = store.working_slots(bi)
            if working and working[-1] == slot:
                self.counters.reset_slot(bi, slot)
        changed = False
        for bi in range(store.bucket_count):             # creation order
            if store.working_count(bi) >= self.cfg.work_frames_max:
                if self.lt_len(bi) >= self.cfg.max_num_tokens - self.cfg.num_prototypes:
                    self._prune(bi, frame)
                self._consolidate(bi, frame)
                changed = True
        if changed:
            self.backend.upload(self.buffers["bucket_valid"], store.valid)
            self.backend.upload(self.lt_valid, self.counters.lt_valid)

    def _consolidate(self, bi: int, frame: int) -> None:
        cfg, P, be, b = self.cfg, self.tokens, self.backend, self.buffers
        slots = self.store.working_slots(bi)[:cfg.consolidated_frames]              # oldest first
        for i, s in enumerate(slots):
            self._candidates_host[i * P:(i + 1) * P] = np.arange(s * P, (s + 1) * P)
        uc = self.counters.working_usage(bi, slots)                                 # (Nc,)
        chosen = top_by_usage(uc, cfg.num_prototypes)
        be.upload(b["candidate_index"], self._candidates_host)
        be.upload(b["prototype_index"], chosen)
        self.run_graph("lt_consolidate")
        before = self.lt_len(bi)
        pos = self.counters.append_prototypes(bi)
        be.copy_(self.lt_key[bi, :, pos], b["proto_key"][0])
        be.copy_(self.lt_shrinkage[bi, :, pos], b["proto_shrinkage"][0])
        for row in self.store.rows_of(bi):
            be.copy_(self.lt_value[row, :, pos], b["proto_value"][row])
        self.store.retire_oldest(bi, len(slots))               # the candidates leave working memory
        self._record(LongTermEvent(frame, bi, "consolidate", before, self.lt_len(bi),
                                   boundary_gap(uc, cfg.num_prototypes), float(uc[chosen[-1]])))

    def _prune(self, bi: int, frame: int) -> None:
        keep, be, b = self.cfg.keep_after_prune, self.backend, self.buffers
        before = self.lt_len(bi)
        surv, gap, kth = self.counters.prune(bi)
        if keep:
            self._survivors_host[bi] = surv
            be.upload(b["survivor_index"], self._survivors_host)
            self.run_graph("lt_prune")
            be.copy_(self.lt_key[bi, :, :keep], b["pruned_key"][bi])
            be.copy_(self.lt_shrinkage[bi, :, :keep], b["pruned_shrinkage"][bi])
            for row in self.store.rows_of(bi):
                be.copy_(self.lt_value[row, :, :keep], b["pruned_value"][row])
            self._survivors_host[bi] = np.arange(keep)
        self._record(LongTermEvent(frame, bi, "prune", before, keep, gap, kth))

    def _record(self, ev: LongTermEvent) -> None:
        self.events.append(ev)
        self.counts[ev.kind] += 1

    # -- objects and buckets ----------------------------------------------------------------------
    def clear_bucket(self, bi: int) -> None:
        """A new bucket at index bi: no long-term tokens, fresh counters."""
        self.counters.clear_bucket(bi)
        self.backend.upload(self.lt_valid, self.counters.lt_valid)

    def compact_buckets(self, used: list[int]) -> None:
        """Buckets `used` (old indices, ascending) become 0..len(used)-1; the rest are freed (§7.2)."""
        for new, old in enumerate(used):
            if new != old:
                self.counters.move_bucket(old, new)
                self.backend.copy_(self.lt_key[new], self.lt_key[old])
                self.backend.copy_(self.lt_shrinkage[new], self.lt_shrinkage[old])
        for b in range(len(used), self.counters.lt_len.shape[0]):
            self.counters.clear_bucket(b)
        self.backend.upload(self.lt_valid, self.counters.lt_valid)

    def move_row(self, src: int, dst: int) -> None:
        self.backend.copy_(self.lt_value[dst], self.lt_value[src])

    def clear_row(self, row: int) -> None:
        self.backend.fill_(self.lt_value[row], 0)
