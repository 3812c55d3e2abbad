"""The streaming tracker: the one owner of per-video state (spec 11, DESIGN "State").

All state is allocated once, at capacity, through the backend (so it lives on the backend's
device) and updated in place: memory slots (permanent slot per bucket + a FIFO ring), per-bucket
validity, sensory memory, object memory running sums and the last probabilities. Nothing is
allocated per frame after warm-up. Which slot holds what is the SlotStore's bookkeeping (host
side); the tracker owns it and hands it to long-term memory.

Symbols: N objects (rows 0..N-1, N <= N_max), NB buckets, S slots, P = h*w tokens per slot,
H x W padded size.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from s3rt.configs import InferenceConfig
from s3rt.errors import CapacityError, ObjectIdError, ShapeError, StateError
from s3rt.runtime.backends.base import Array, Backend
from s3rt.runtime.contract import Geometry, GraphSpec, TensorSpec, graph_specs
from s3rt.runtime.long_term import LongTermEvent, LongTermMemory
from s3rt.runtime.preprocess import (FrameGeometry, aggregate_probabilities, crop_probabilities,
                                     prepare_image, prepare_index_mask)
from s3rt.runtime.slot_store import SlotStore

log = logging.getLogger(__name__)
_SETTINGS_LOGGED: "weakref.WeakSet[Backend]" = weakref.WeakSet()   # backends whose settings were logged


@dataclass
class FrameResult:
    """Output of one step: probabilities at the frame's own resolution, background first."""

    index: int
    object_ids: list[int]
    probabilities: np.ndarray          # (N+1, H0, W0) float32; channel k+1 = object_ids[k]
    memory_written: bool = False

    @property
    def index_mask(self) -> np.ndarray:
        """(H0, W0) argmax mapped back to object ids (0 = background)."""
        lut = np.array([0, *self.object_ids], dtype=np.int64)
        return lut[np.argmax(self.probabilities, axis=0)]


class Tracker:
    """Stream frames, get masks back. One tracker per video; `reset()` to start another.

    >>> tracker = Tracker(backend)                                 # doctest: +SKIP
    >>> first = tracker.step(frame0, mask=index_mask0)            # doctest: +SKIP
    >>> later = tracker.step(frame1).index_mask                   # doctest: +SKIP
    """

    def __init__(self, backend: Backend, settings: InferenceConfig | None = None, *,
                 max_short_side: int | None = 480, max_internal_size: int | None = None) -> None:
        self.backend = backend.open()
        cap = backend.capacity
        if cap is not None and settings is not None:
            for name in ("max_objects", "max_buckets", "max_mem_frames"):
                if getattr(settings, name) > getattr(cap, name):
                    raise CapacityError(f"{name}={getattr(settings, name)} exceeds what the graphs were exported "
                                        f"with ({getattr(cap, name)}); re-export with a larger capacity")
            if settings.long_term != cap.long_term:
                raise CapacityError(f"long-term settings {settings.long_term} differ from the export's "
                                    f"({cap.long_term}); re-export with the same --long-term/--lt-* options")
        if settings is None:      # the model's own defaults (family, weights, export manifest)
            from s3rt.inference_settings import resolve_inference_settings
            carried = getattr(backend, "carried_defaults", list)()
            effective = resolve_inference_settings(backend.model_config, carried=carried, capacity=cap)
            settings = effective.loop
            # once per backend at INFO: a server opens a tracker per stream, and one line per open
            # would flood its log with the same settings
            first = backend not in _SETTINGS_LOGGED
            log.log(logging.INFO if first else logging.DEBUG, "inference settings: %s", effective.describe())
            _SETTINGS_LOGGED.add(backend)
        self.settings = settings
        self.slots = cap.memory_slots if cap is not None else self.settings.memory_slots
        self.top_k = backend.top_k or self.settings.top_k
        if hasattr(backend, "set_top_k"):
            backend.set_top_k(self.top_k)
        self.max_short_side = max_short_side
        self.max_internal_size = max_internal_size     # Cutie's internal resize (CUTIE_DELTA 6.3), None: off
        self.cfg = backend.model_config
        stagger = np.round(np.linspace(1, self.settings.mem_every, self.settings.stagger_updates)).astype(int)
        self._stagger = set(int(x) for x in stagger)
        self._allocated = False
        self._lt: LongTermMemory | None = None     # long-term memory (settings.long_term), made at allocation
        # FIFO: max_mem_frames - 1 working frames per bucket; long-term: F_max (consolidation retires them)
        self.slot_store = SlotStore(self.settings.max_buckets, self.slots, self.settings.work_frames)
        self.reset()

    # -- public API ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the video (objects, memory); buffers stay allocated for a same-sized stream."""
        self._t = 0
        self._last_mem_t = 0
        self._ids: list[int] = []               # row -> user object id
        self.slot_store.reset()
        self._pending: tuple[np.ndarray, list[int] | None] | None = None
        if self._allocated and self._lt is not None:
            self._lt.reset()
        if self._allocated:
            for buf in (self.mem_key, self.mem_shrinkage, self.mem_value, self.sensory, self.object_memory,
                        self.probs, self.bucket_valid):
                self.backend.fill_(buf, 0)

    @property
    def object_ids(self) -> list[int]:
        return list(self._ids)

    @property
    def frame_index(self) -> int:
        return self._t

    @property
    def bucket_count(self) -> int:
        """Object groups in use (objects first given on distinct frames); capacity: settings.max_buckets."""
        return self.slot_store.bucket_count

    @property
    def buffers(self) -> Mapping[str, Array]:
        """The state and scratch buffers by contract name (empty before the first frame allocates them)."""
        return MappingProxyType(self._buffers if self._allocated else {})

    def add_objects(self, mask: np.ndarray, ids: list[int] | None = None) -> None:
        """Give an index mask for the *next* frame passed to step() (new or re-annotated ids)."""
        self._parse_mask(mask, ids)    # validate now, apply with the frame
        self._pending = (mask, ids)

    def remove_objects(self, ids: list[int]) -> None:
        """Stop tracking `ids`: rows are compacted, emptied buckets freed."""
        unknown = [i for i in ids if i not in self._ids]
        if unknown:
            raise ObjectIdError(f"cannot remove unknown object ids {unknown}; tracked: {self._ids}")
        keep = [r for r, i in enumerate(self._ids) if i not in ids]
        n_old = len(self._ids)
        for new_row, old_row in enumerate(keep):
            if new_row != old_row:
                self._move_row(old_row, new_row)
        for row in range(len(keep), n_old):
            self._clear_row(row)
        self._ids = [self._ids[r] for r in keep]
        used = self.slot_store.keep_rows(keep)
        if used is not None:                     # buckets left without objects were freed
            if self._lt is not None:
                self._lt.compact_buckets(used)
            self.backend.upload(self.bucket_valid, self.slot_store.valid)
        if self._allocated:
            self._upload_object_bucket()

    def step(self, frame: np.ndarray, mask: np.ndarray | None = None, object_ids: list[int] | None = None,
             *, end: bool = False) -> FrameResult:
        """Segment one RGB frame (H, W, 3). `mask` (H, W index mask) adds/re-annotates objects.

        `end=True` marks the last frame of a video (no memory or sensory update, spec 11).
        """
        if mask is None and self._pending is not None:
            mask, object_ids = self._pending
        self._pending = None
        if mask is None and not self._ids:
            raise StateError("step() before any object was given: pass the first frame's mask "
                             "(step(frame, mask=...) or add_objects(mask) before step)")
        self._ensure_allocated(frame)
        geo = self.geometry
        prepare_image(frame, geo, out=self._image_host)
        self.backend.upload(self.image, self._image_host)
        self._encode()

        t = self._t
        given = None if mask is None else self._parse_mask(mask, object_ids)
        n_old = len(self._ids)
        if self._lt is not None:
            self._lt.events.clear()
        need_segment = t > 0 and n_old > 0 and (given is None or not set(self._ids) <= set(given[1]))
        is_mem = ((t - self._last_mem_t >= self.settings.mem_every) or given is not None) and not end
        update_sensory = ((t - self._last_mem_t) in self._stagger) and not end

        if need_segment:
            self._segment(n_old, update_sensory)
        if given is not None:
            self._merge_mask(*given, segmented=need_segment)
        n = len(self._ids)
        if is_mem:
            self._write_memory(n)
            self._last_mem_t = t
        probs = self.backend.to_host(self.probs[0, :n + 1])
        result = FrameResult(index=t, object_ids=list(self._ids),
                             probabilities=crop_probabilities(probs, geo), memory_written=is_mem)
        self._t += 1
        return result

    def memory_sizes(self) -> list[dict]:
        """Tokens per bucket now: permanent, working, long-term (LONG_TERM_MEMORY §10 trace)."""
        P = self.graph_geo.tokens if self._allocated else 0
        store = self.slot_store
        return [{"bucket": bi, "objects": [self._ids[r] for r in store.rows_of(bi)],
                 "permanent": P if store.has_frame(bi) else 0, "working": store.working_count(bi) * P,
                 "long_term": self._lt.lt_len(bi) if self._lt is not None else 0}
                for bi in range(store.bucket_count)]

    @property
    def long_term_events(self) -> list[LongTermEvent]:
        """Consolidations and prunings of the last step (empty without long-term memory)."""
        return list(self._lt.events) if self._lt is not None else []

    # -- internals: allocation -------------------------------------------------------------------
    def _ensure_allocated(self, frame: np.ndarray) -> None:
        if self._allocated:
            return
        if not isinstance(frame, np.ndarray) or frame.ndim < 2:
            raise ShapeError(f"frame: expected an RGB array (H, W, 3), got {getattr(frame, 'shape', type(frame))}")
        pad = self.cfg.pad_multiple
        geo = FrameGeometry.for_frame(frame.shape[:2], self.max_short_side, pad_multiple=pad,
                                      max_internal_size=self.max_internal_size)
        fixed = self.backend.fixed_size
        if fixed is not None and geo.work_hw != tuple(fixed):
            # graphs built for one size: frames of the same aspect ratio are resized to it
            h0, w0 = frame.shape[:2]
            if abs((w0 / h0) / (fixed[1] / fixed[0]) - 1) > 0.01:
                raise ShapeError(f"the graphs were exported for {fixed[0]}x{fixed[1]} frames but this stream's "
                                 f"frames are {h0}x{w0} (another aspect ratio); re-export with "
                                 f"--height {geo.work_hw[0]} --width {geo.work_hw[1]}")
            geo = FrameGeometry.for_frame(frame.shape[:2], None, work_hw=tuple(fixed), pad_multiple=pad)
        self.geometry = geo
        H, W = geo.padded_hw
        self.graph_geo = Geometry(height=H, width=W, slots=self.slots)
        if self.graph_geo.tokens * self.slots < self.top_k:
            raise CapacityError(f"memory of {self.slots} slots x {self.graph_geo.tokens} tokens is smaller than "
                                f"top_k={self.top_k}; use larger frames or a smaller top_k")
        self.specs: dict[str, GraphSpec] = graph_specs(self.cfg, self.graph_geo, self.settings)
        nmax = self.settings.max_objects
        dims = {"N": nmax, "NB": self.settings.max_buckets}
        self._buffers: dict[str, Array] = {}
        self._tensor_specs: dict[str, TensorSpec] = {}     # one per buffer name, looked up per call
        for spec in self.specs.values():
            for t in (*spec.inputs, *spec.outputs):
                if t.name not in self._buffers:
                    self._tensor_specs[t.name] = t
                    self._buffers[t.name] = self.backend.empty(t.concrete(**dims), t.dtype)
        b = self._buffers
        # masks fed to the mask encoder are the probabilities' object channels (same buffer)
        self.image, self.probs = b["image"], b["probs"]
        self.mem_key, self.mem_shrinkage, self.mem_value = b["mem_key"], b["mem_shrinkage"], b["mem_value"]
        self.bucket_valid, self.object_bucket = b["bucket_valid"], b["object_bucket"]
        self.sensory, self.object_memory = b["sensory"], b["object_memory"]
        self._image_host = np.zeros((1, 3, H, W), np.float32)
        if self.settings.long_term is not None:
            self._lt = LongTermMemory(self.settings.long_term, backend=self.backend, store=self.slot_store,
                                      buffers=self._buffers, run_graph=self._run_live,
                                      tokens=self.graph_geo.tokens, top_k=self.top_k)
        self._allocated = True
        log.debug("allocated tracker state for %sx%s, %d slots, %d objects", H, W, self.slots, nmax)

    def buffer_nbytes(self) -> int:
        """Bytes held by the tracker's state and scratch buffers (for reports)."""
        if not self._allocated:
            return 0
        device = int(sum(int(np.prod(x.shape)) * np.dtype(self._tensor_specs[name].dtype).itemsize
                         for name, x in self._buffers.items()))
        return device + (self._lt.state_nbytes() if self._lt is not None else 0)

    # -- internals: graph calls ------------------------------------------------------------------
    def _view(self, name: str, n: int, nb: int) -> Array:
        """The live part of a buffer for N = n objects and NB = nb buckets."""
        buf = self._buffers[name]
        index = []
        for d in self._tensor_specs[name].shape:
            index.append(slice(0, n) if d == "N" else slice(0, n + 1) if d == "N+1"
                         else slice(0, nb) if d == "NB" else slice(None))
        return buf[tuple(index)]

    def _call(self, graph: str, n: int = 0, nb: int = 0, overrides: dict[str, Array] | None = None) -> None:
        spec = self.specs[graph]
        overrides = overrides or {}
        inputs = {t.name: overrides.get(t.name, self._view(t.name, n, nb)) for t in spec.inputs}
        outputs = {t.name: self._view(t.name, n, nb) for t in spec.outputs}
        self.backend.run(graph, inputs, outputs)

    def _run_live(self, graph: str) -> None:
        """Run `graph` on the live rows and buckets (long-term memory's graph calls)."""
        self._call(graph, len(self._ids), self.slot_store.bucket_count)

    def _encode(self) -> None:
        self._call("encoder")
        self._call("spatial_semantic")

    def _segment(self, n: int, update_sensory: bool) -> None:
        nb = self.slot_store.bucket_count
        prev = self.probs[:, 1:n + 1]
        self._call("memory_readout", n, nb, overrides={"prev_prob": prev})
        if self._lt is not None:
            self._lt.after_readout(nb)
        self._call("query_attention", n, nb)
        self._call("mask_decoder", n, nb)
        if update_sensory:
            self.backend.copy_(self.sensory[:, :n], self._buffers["new_sensory"][:, :n])

    def _write_memory(self, n: int) -> None:
        masks = self.probs[:, 1:n + 1]
        self._call("mask_encoder", n, overrides={"masks": masks})
        P = self.graph_geo.tokens
        slot = self.slot_store.claim_slot()
        if slot is not None:
            self.backend.upload(self.bucket_valid, self.slot_store.valid)
            span = slice(slot * P, (slot + 1) * P)
            self.backend.copy_(self.mem_key[:, :, span], self._buffers["key"])
            self.backend.copy_(self.mem_shrinkage[:, :, span], self._buffers["shrinkage"])
            value = self._buffers["mask_value"][0, :n]
            self.backend.copy_(self.mem_value[:n, :, span], value.reshape(n, value.shape[1], P))
        self.backend.add_(self.object_memory[:, :n], self._buffers["summaries"][:, :n])
        self.backend.copy_(self.sensory[:, :n], self._buffers["new_sensory"][:, :n])
        if self._lt is not None:
            self._lt.after_write(slot, self._t)

    # -- internals: objects and masks ------------------------------------------------------------
    def _parse_mask(self, mask: np.ndarray, ids: list[int] | None) -> tuple[np.ndarray, list[int]]:
        mask = np.asarray(mask)
        if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
            raise ShapeError(f"mask: expected a 2-D integer index mask (H, W), got {mask.dtype} {mask.shape}")
        present = [int(v) for v in np.unique(mask) if v != 0]
        if ids is None:
            ids = present
            if not ids:
                raise ObjectIdError("mask has no object pixels (all zero): nothing to track")
        else:
            ids = [int(i) for i in ids]
            bad = [i for i in ids if i <= 0]
            if bad:
                raise ObjectIdError(f"object ids must be positive integers, got {bad}")
            if len(set(ids)) != len(ids):
                raise ObjectIdError(f"duplicate object ids {ids}")
            empty = [i for i in ids if i not in present]
            if empty:
                raise ObjectIdError(f"object ids {empty} have no pixels in the mask (labels present: {present})")
        if self._allocated:
            planes = prepare_index_mask(mask, self.geometry)
        else:
            planes = mask
        return planes, ids

    def _merge_mask(self, padded_mask: np.ndarray, ids: list[int], *, segmented: bool) -> None:
        """Given mask overrides the prediction where it has foreground (new ids get a new bucket)."""
        n_old = len(self._ids)
        new_ids = [i for i in ids if i not in self._ids]
        if new_ids:
            self._add_rows(new_ids)
        n = len(self._ids)
        H, W = self.geometry.padded_hw
        planes = np.zeros((n, H, W), np.float32)
        if segmented:
            planes[:n_old] = self.backend.to_host(self.probs[0, 1:n_old + 1])
            planes[:, padded_mask > 0] = 0
        for i in ids:
            planes[self._ids.index(i)] = padded_mask == i
        self.backend.upload(self.probs[0, :n + 1], aggregate_probabilities(planes))

    def _add_rows(self, new_ids: list[int]) -> None:
        nmax, nbmax = self.settings.max_objects, self.settings.max_buckets
        if len(self._ids) + len(new_ids) > nmax:
            raise CapacityError(f"tracking {len(self._ids)} objects, adding {len(new_ids)} would exceed "
                                f"max_objects={nmax}; remove objects or raise --max-objects (re-export for graphs)")
        store = self.slot_store
        if store.bucket_count >= nbmax:
            raise CapacityError(f"objects were added on {nbmax} different frames already (max_buckets={nbmax}); "
                                "add objects together, remove old ones, or raise --max-buckets")
        bucket = store.add_bucket()
        if self._lt is not None:
            self._lt.clear_bucket(bucket)
        for i in new_ids:
            row = len(self._ids)
            self._clear_row(row)
            self._ids.append(i)
            store.add_row(bucket)
        self._upload_object_bucket()

    def _upload_object_bucket(self) -> None:
        self.backend.upload(self.object_bucket, self.slot_store.object_bucket(self.settings.max_objects))

    def _clear_row(self, row: int) -> None:
        for buf in (self.mem_value[row], self.sensory[:, row], self.object_memory[:, row], self.probs[:, row + 1]):
            self.backend.fill_(buf, 0)
        if self._lt is not None:
            self._lt.clear_row(row)

    def _move_row(self, src: int, dst: int) -> None:
        self.backend.copy_(self.mem_value[dst], self.mem_value[src])
        self.backend.copy_(self.sensory[:, dst], self.sensory[:, src])
        self.backend.copy_(self.object_memory[:, dst], self.object_memory[:, src])
        self.backend.copy_(self.probs[:, dst + 1], self.probs[:, src + 1])
        if self._lt is not None:
            self._lt.move_row(src, dst)
