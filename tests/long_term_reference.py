"""A literal, growing re-statement of the Cutie/S3 long-term memory (LONG_TERM_MEMORY.md §3-§7).

Dictionary of buckets, tensors grown by concatenation and cut by slicing, a dense affinity
matrix for the readout, the consolidation and pruning of §6 written out per token. No slots,
no validity masks, no fixed capacity: this is what the fixed-buffer tracker must reproduce.
Batch B = 1 (s3rt's runtime has no flip augmentation; spec B = 2 is not supported there).

Shared with the tracker on purpose: the network blocks (encoder, fuser, object transformer,
decoders), the readout similarity (checked against a dense re-statement in test_model_math.py)
and the soft aggregation of given masks. The tie rule (spec §9.5) is s3rt's documented choice:
stable descending order, lower index first; near ties (that float rounding could flip) are
recorded so a test can say whether a comparison was tie-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from s3rt.export.model.memory import similarity
from s3rt.long_term_config import LongTermConfig
from s3rt.runtime.preprocess import FrameGeometry, aggregate_probabilities, prepare_image, prepare_index_mask

LIFE0 = 1e-7


def literal_similarity(mk, ms, qk, qe):
    """sim[n, j] = -s_n * sum_c e_j[c] (k_n[c] - q_j[c])^2 / sqrt(Ck), not expanded (spec §1).
    mk (Ck, N), ms (1, N), qk (Ck, M), qe (Ck, M) -> (N, M)."""
    d = (mk[:, :, None] - qk[:, None, :]) ** 2                      # (Ck, N, M)
    return -ms[0][:, None] * (qe[:, None, :] * d).sum(0) / math.sqrt(mk.shape[0])


def stable_top(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(values, descending=True, stable=True).indices[:k]


@dataclass
class Bucket:
    objects: list[int]
    K: torch.Tensor                 # (Ck, L)  [permanent | non-permanent oldest -> newest]
    S: torch.Tensor                 # (1, L)
    V: dict[int, torch.Tensor]      # object -> (Cv, L)
    perm_end: int
    E: torch.Tensor                 # (Ck, L - perm_end)
    use: torch.Tensor               # (L - perm_end,)
    life: torch.Tensor
    lt: dict | None = None          # K, S, V{o}, use, life; created at the first consolidation

    @property
    def non_perm(self) -> int:
        return self.K.shape[1] - self.perm_end

    @property
    def lt_len(self) -> int:
        return 0 if self.lt is None else self.lt["K"].shape[1]


@dataclass
class Reference:
    model: object
    cfg: LongTermConfig
    top_k: int = 30
    mem_every: int = 1
    stagger: int = 5
    buckets: dict[int, Bucket] = field(default_factory=dict)
    next_bucket: int = 0
    ids: list[int] = field(default_factory=list)         # object order = tracker rows
    sensory: torch.Tensor | None = None
    obj_mem: torch.Tensor | None = None
    prev: torch.Tensor | None = None                     # (1, N, H, W) last probabilities
    last_mem: int = 0
    t: int = 0
    trace: list[dict] = field(default_factory=list)      # per frame: sizes per bucket + events
    near_ties: list[tuple[int, str]] = field(default_factory=list)

    # -- §5 readout ----------------------------------------------------------------------------
    def _visual(self, q, e, hw) -> torch.Tensor:
        rows = {}
        for b in self.buckets.values():
            k_all, s_all = b.K, b.S
            if b.lt is not None:
                k_all = torch.cat([b.lt["K"], b.K], 1)
                s_all = torch.cat([b.lt["S"], b.S], 1)
            sim = similarity(k_all[None], s_all[None], q, e)[0]            # (M + L, P)
            vals, idx = torch.topk(sim, self.top_k, dim=0)
            A = torch.zeros_like(sim).scatter(0, idx, torch.softmax(vals, 0))   # dense affinity
            usage = A.sum(1)
            m = b.lt_len
            u_w = usage[m:][b.perm_end:]
            if u_w.numel():
                b.use += u_w
                b.life += 1
            if b.lt is not None:
                b.lt["use"] += usage[:m]
                b.lt["life"] += 1
            for o in b.objects:
                v_all = b.V[o] if b.lt is None else torch.cat([b.lt["V"][o], b.V[o]], 1)
                rows[o] = v_all @ A                                         # (Cv, P)
        return torch.stack([rows[o] for o in self.ids])[None].view(1, len(self.ids), -1, *hw)

    # -- §6 write, trigger, prune, consolidate ---------------------------------------------------
    def _write(self, key, shrink, sel, value, new_ids: list[int], events: list) -> None:
        for b in self.buckets.values():
            b.K = torch.cat([b.K, key], 1)
            b.S = torch.cat([b.S, shrink], 1)
            for o in b.objects:
                b.V[o] = torch.cat([b.V[o], value[self.ids.index(o)]], 1)
            b.E = torch.cat([b.E, sel], 1)
            b.use = torch.cat([b.use, torch.zeros(key.shape[1])])
            b.life = torch.cat([b.life, torch.full((key.shape[1],), LIFE0)])
        if new_ids:
            self.buckets[self.next_bucket] = Bucket(
                objects=list(new_ids), K=key.clone(), S=shrink.clone(),
                V={o: value[self.ids.index(o)].clone() for o in new_ids}, perm_end=key.shape[1],
                E=sel[:, :0].clone(), use=torch.zeros(0), life=torch.zeros(0))
            self.next_bucket += 1
        hw = key.shape[1]
        t_max = self.cfg.work_frames_max * hw
        for bid, b in self.buckets.items():
            if b.non_perm >= t_max:
                if b.lt_len >= self.cfg.max_num_tokens - self.cfg.num_prototypes:
                    self._prune(bid, b, events)
                self._consolidate(bid, b, hw, events)

    def _tie_check(self, u: torch.Tensor, k: int, what: str) -> None:
        if k >= u.numel():
            return
        v = torch.sort(u, descending=True).values
        if v[k] > 0 and (v[k - 1] - v[k]) <= 1e-6 * v[k - 1]:      # within float rounding of the sums
            self.near_ties.append((self.t, what))

    def _consolidate(self, bid: int, b: Bucket, hw: int, events: list) -> None:
        n_c = self.cfg.candidates(hw)
        p0 = b.perm_end
        kc, sc = b.K[:, p0:p0 + n_c], b.S[:, p0:p0 + n_c]
        ec = b.E[:, :n_c]
        uc = b.use[:n_c] / b.life[:n_c]
        self._tie_check(uc, self.cfg.num_prototypes, f"prototypes of bucket {bid}")
        idx = stable_top(uc, self.cfg.num_prototypes)
        kp, ep = kc[:, idx], ec[:, idx]
        W = torch.softmax(literal_similarity(kc, sc, kp, ep), dim=0)      # (Nc, Pn), full softmax
        vp = {o: b.V[o][:, p0:p0 + n_c] @ W for o in b.objects}
        sp = sc @ W
        keep = slice(p0 + n_c, None)                                       # drop the candidates
        b.K = torch.cat([b.K[:, :p0], b.K[:, keep]], 1)
        b.S = torch.cat([b.S[:, :p0], b.S[:, keep]], 1)
        for o in b.objects:
            b.V[o] = torch.cat([b.V[o][:, :p0], b.V[o][:, keep]], 1)
        b.E, b.use, b.life = b.E[:, n_c:], b.use[n_c:], b.life[n_c:]
        new_use, new_life = torch.zeros(len(idx)), torch.full((len(idx),), LIFE0)
        before = b.lt_len
        if b.lt is None:
            b.lt = {"K": kp, "S": sp, "V": vp, "use": new_use, "life": new_life}
        else:
            lt = b.lt
            lt["K"] = torch.cat([lt["K"], kp], 1)
            lt["S"] = torch.cat([lt["S"], sp], 1)
            lt["V"] = {o: torch.cat([lt["V"][o], vp[o]], 1) for o in b.objects}
            lt["use"] = torch.cat([lt["use"], new_use])
            lt["life"] = torch.cat([lt["life"], new_life])
        events.append({"bucket": self._position(bid), "kind": "consolidate", "tokens_before": before,
                       "tokens_after": b.lt_len})

    def _prune(self, bid: int, b: Bucket, events: list) -> None:
        keep = self.cfg.keep_after_prune
        lt = b.lt
        u = lt["use"] / lt["life"]
        self._tie_check(u, keep, f"pruning of bucket {bid}")
        surv = stable_top(u, keep)
        before = b.lt_len
        b.lt = {"K": lt["K"][:, surv], "S": lt["S"][:, surv], "V": {o: v[:, surv] for o, v in lt["V"].items()},
                "use": lt["use"][surv], "life": lt["life"][surv]}
        events.append({"bucket": self._position(bid), "kind": "prune", "tokens_before": before, "tokens_after": keep})

    def _position(self, bid: int) -> int:
        """Events name a bucket by its position among the live ones (creation order), as the tracker."""
        return list(self.buckets).index(bid)

    # -- §7.2 removal --------------------------------------------------------------------------
    def remove(self, ids: list[int]) -> None:
        keep_rows = [r for r, o in enumerate(self.ids) if o not in ids]
        for bid in list(self.buckets):
            b = self.buckets[bid]
            b.objects = [o for o in b.objects if o not in ids]
            for o in ids:
                b.V.pop(o, None)
                if b.lt is not None:
                    b.lt["V"].pop(o, None)
            if not b.objects:
                del self.buckets[bid]
        self.ids = [self.ids[r] for r in keep_rows]
        self.sensory = self.sensory[:, keep_rows]
        self.obj_mem = self.obj_mem[:, keep_rows]
        self.prev = self.prev[:, keep_rows]

    # -- §4 one frame --------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None, *, end: bool = False) -> np.ndarray:
        m = self.model
        geo = FrameGeometry.for_frame(frame.shape[:2], None, pad_multiple=m.cfg.pad_multiple)
        stagger = set(np.round(np.linspace(1, self.mem_every, self.stagger)).astype(int).tolist())
        image = torch.from_numpy(prepare_image(frame, geo))
        enc = m.encoder(image)
        if m.cfg.encoder == "vit_adapter":
            f8, f4, pix, key, shrink, sel = m.spatial_semantic(image, *enc)
        else:                                    # ResNet encoders give f16, f8, f4 directly
            f8, f4 = enc[1:]
            pix, key, shrink, sel = m.spatial_semantic(enc[0])
        t = self.t
        given_ids = [] if mask is None else [int(i) for i in np.unique(mask) if i]
        n_old = len(self.ids)
        need_segment = t > 0 and n_old > 0 and not set(self.ids) <= set(given_ids)
        is_mem = (t - self.last_mem >= self.mem_every or mask is not None) and not end
        probs = None
        if need_segment:
            hw = pix.shape[-2:]
            visual = self._visual(key, sel, hw)
            fused = m.pixel_fuser(pix, visual, self.sensory, self.prev)
            readout = m.object_transformer(fused, self.obj_mem)
            probs, _, new_sensory = m.mask_decoder_graph(f8, f4, readout, self.sensory)
            if (t - self.last_mem) in stagger and not end:
                self.sensory = new_sensory
        new_ids = [i for i in given_ids if i not in self.ids]
        if mask is not None:
            padded = prepare_index_mask(mask, geo)
            self.ids += new_ids
            n = len(self.ids)
            planes = np.zeros((n, *padded.shape), np.float32)
            if need_segment:
                planes[:n_old] = probs[0, 1:].numpy()
                planes[:, padded > 0] = 0
            for i in given_ids:
                planes[self.ids.index(i)] = padded == i
            probs = torch.from_numpy(aggregate_probabilities(planes))[None]
            zeros = torch.zeros(1, len(new_ids), m.cfg.sensory_dim, *pix.shape[-2:])
            self.sensory = zeros if self.sensory is None else torch.cat([self.sensory, zeros], 1)
        self.prev = probs[:, 1:]
        events: list = []
        if is_mem:
            value, self.sensory, summaries = m.mask_encoder_graph(image, pix, self.sensory, self.prev)
            if self.obj_mem is None:
                self.obj_mem = summaries
            else:
                grow = summaries.shape[1] - self.obj_mem.shape[1]
                if grow:
                    self.obj_mem = torch.cat([self.obj_mem, torch.zeros_like(summaries[:, -grow:])], 1)
                self.obj_mem = self.obj_mem + summaries
            self._write(key[0], shrink[0], sel[0], value[0].flatten(2), new_ids, events)
            self.last_mem = t
        self.trace.append({"frame": t, "buckets": self.sizes(), "events": events})
        self.t += 1
        return probs[0].numpy()

    def sizes(self) -> list[dict]:
        return [{"permanent": b.perm_end, "working": b.non_perm, "long_term": b.lt_len}
                for b in self.buckets.values()]
