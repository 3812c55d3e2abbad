"""Held-out scoring of a tracker on generated clips: DAVIS J&F (the project's vectorised tool)
and mask IoU between two runs (precision gates compare a variant against fp32).

Held-out clips use seeds from HELD_OUT_SEED up, far from the training range (data_seed + step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from s3rt.runtime.compare import clip_ious
from s3rt.training.synthetic_vos import ClipSpec, generate_clip, random_spec

HELD_OUT_SEED = 500_000_000


@dataclass(frozen=True)
class Clip:
    name: str
    frames: np.ndarray      # (T, H, W, 3) uint8
    masks: np.ndarray       # (T, H, W) uint8 ground truth, ids 1..K all present on frame 0


def held_out_clips(count: int, *, num_frames: int, height: int, width: int,
                   seed: int = HELD_OUT_SEED) -> list[Clip]:
    """`count` clips whose every target is visible on frame 0 (DAVIS scores ids 1..max(frame 0))."""
    clips, i = [], 0
    while len(clips) < count:
        s = seed + i
        spec = random_spec(np.random.default_rng(s), num_frames=num_frames, height=height, width=width)
        frames, masks = generate_clip(spec, s)
        i += 1
        areas = [(masks[0] == k).sum() for k in range(1, spec.num_objects + 1)]
        if min(areas) < 16:            # a target hidden behind a distractor on frame 0: not annotatable
            continue
        clips.append(Clip(f"heldout_{s}", frames, masks))
    return clips


def track(make_tracker: Callable[[], object], clip: Clip) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run one clip: -> predicted labels (T, H, W) uint8 and per-frame probabilities (N+1, H, W)."""
    tracker = make_tracker()
    labels, probs = [], []
    last = len(clip.frames) - 1
    for t, frame in enumerate(clip.frames):
        res = tracker.step(frame, mask=clip.masks[0] if t == 0 else None, end=t == last)  # type: ignore[attr-defined]
        labels.append(res.index_mask.astype(np.uint8))
        probs.append(res.probabilities)
    return np.stack(labels), probs


def jf_score(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> dict[str, float]:
    """DAVIS semi-supervised J, F and J&F over clips (first and last frame not scored), as the
    official tool averages: per object means, then the mean over all objects of all clips."""
    from s3rt.runtime.evaluation.davis import db_statistics, evaluate_sequence

    j_all, f_all = [], []
    for i, (gt, pred) in enumerate(zip(gts, preds)):
        scores = evaluate_sequence(gt, pred[1:-1], name=f"clip{i}")
        j_all.extend(db_statistics(scores.j)[0].tolist())
        f_all.extend(db_statistics(scores.f)[0].tolist())
    j, f = float(np.mean(j_all)), float(np.mean(f_all))
    return {"J&F": (j + f) / 2, "J": j, "F": f}


def mean_mask_iou(ref: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Mean over clips, later frames and objects (present in either) of IoU(ref mask, other mask)."""
    ious = [iou for a, b in zip(ref, other) for iou in clip_ious(a, b)]
    return float(np.mean(ious)) if ious else 1.0


__all__ = ["Clip", "ClipSpec", "HELD_OUT_SEED", "held_out_clips", "jf_score", "mean_mask_iou", "track"]
