"""The tracker's fixed-capacity slot memory against a literal re-statement of spec section 11:
growing memory lists and a FIFO by concatenation and slicing. The readout math itself is
shared (and checked against a dense affinity in test_model_math.py), so any difference here
comes from memory management: which frames are in memory, sensory staggering, object sums."""

from __future__ import annotations

import numpy as np
import torch

from s3rt.configs import InferenceConfig
from s3rt.export.model import build_model
from s3rt.export.model.common import aggregate_log_odds
from s3rt.export.model.memory import similarity, topk_readout
from s3rt.runtime.backends.pytorch.backend import TorchBackend
from s3rt.runtime.preprocess import FrameGeometry, prepare_image, prepare_index_mask
from s3rt.runtime.tracker import Tracker


@torch.no_grad()
def reference_loop(model, frames, mask, *, mem_every=2, max_mem_frames=3, top_k=30, stagger=2):
    """Spec 11 for one bucket (objects from the first frame), written the straightforward way."""
    geo = FrameGeometry.for_frame(frames[0].shape[:2], None)
    ids = [int(i) for i in np.unique(mask) if i]
    padded = torch.from_numpy(prepare_index_mask(mask, geo))
    stagger_set = set(np.round(np.linspace(1, mem_every, stagger)).astype(int).tolist())
    keys, shrinks, values = [], [], []           # permanent first, then FIFO (lists of tensors)
    obj_mem = sensory = prev = None
    last_mem = 0
    outs = []
    for t, frame in enumerate(frames):
        end = t == len(frames) - 1
        image = torch.from_numpy(prepare_image(frame, geo))
        enc = model.encoder(image)
        f8, f4, pix, key, shrink, sel = model.spatial_semantic(image, *enc)
        if t == 0:
            planes = torch.stack([(padded == i).float() for i in ids])[None]
            probs = torch.softmax(aggregate_log_odds(planes, dim=1), dim=1)
            sensory = torch.zeros(1, len(ids), model.cfg.sensory_dim, *pix.shape[-2:])
        else:
            mk, ms, mv = torch.cat(keys, 2), torch.cat(shrinks, 2), torch.cat(values, 2)   # growing memory
            sim = similarity(mk, ms, key, sel)                                             # (1, T, P)
            # all T tokens valid: one bucket whose "slots" are the frames in chronological order
            valid = torch.ones(1, len(keys), dtype=torch.bool)
            h, w = pix.shape[-2:]
            visual = topk_readout(sim, mv, valid, torch.zeros(len(ids), dtype=torch.long), top_k)
            visual = visual.view(1, len(ids), -1, h, w)
            fused = model.pixel_fuser(pix, visual, sensory, prev)
            readout = model.object_transformer(fused, obj_mem)
            probs, _, new_sensory = model.mask_decoder_graph(f8, f4, readout, sensory)
            if (t - last_mem) in stagger_set and not end:
                sensory = new_sensory
        prev = probs[:, 1:]
        if (t - last_mem >= mem_every or t == 0) and not end:
            value, sensory, summaries = model.mask_encoder_graph(image, pix, sensory, prev)
            keys.append(key); shrinks.append(shrink); values.append(value[0].flatten(2))
            if len(keys) > max_mem_frames:                       # drop the oldest non-permanent frame
                for lst in (keys, shrinks, values):
                    del lst[1]
            obj_mem = summaries if obj_mem is None else obj_mem + summaries
            last_mem = t
        outs.append(probs[0].numpy())
    return outs


def test_slot_memory_matches_growing_memory(blob_clip):
    frames, mask = blob_clip
    frames = frames + [np.ascontiguousarray(f[::-1]) for f in frames]   # 12 distinct frames: the FIFO wraps
    model = build_model("tiny", seed=5)
    settings = InferenceConfig(mem_every=2, max_mem_frames=3, top_k=30, stagger_updates=2)
    want = reference_loop(model, frames, mask, mem_every=2, max_mem_frames=3, top_k=30, stagger=2)
    tracker = Tracker(TorchBackend("tiny", model=model), settings, max_short_side=None)
    geo = FrameGeometry.for_frame(frames[0].shape[:2], None)
    top, _, left, _ = geo.pad
    for t, frame in enumerate(frames):
        got = tracker.step(frame, mask=mask if t == 0 else None, end=t == len(frames) - 1).probabilities
        ref = want[t][:, top:top + 60, left:left + 100]
        assert np.abs(got - ref).max() < 1e-5, f"frame {t}: {np.abs(got - ref).max():.2e}"
