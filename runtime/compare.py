"""The one comparator of s3rt: tensors against a reference, masks against masks, argmax against argmax.

Export parity (`s3rt.export.validate`, `export_model`'s check), TensorRT validation
(`s3rt.runtime.backends.tensorrt.validate`), the benchmarks (bench, backend_parity,
parity_diagnosis), training evaluation and the tests all judge with these functions, so one
tolerance means the same thing everywhere. Torch-free, numpy only.

Element rule (Polygraphy's `CompareFunc.simple`, elementwise): an element FAILS only when both
|a - b| > atol AND |a - b| / |b| > rtol (b: the reference), i.e. it passes when within atol OR
within rtol. This is not numpy's |a - b| <= atol + rtol * |b|. With rtol = 0 the rule is plain
|a - b| <= atol. 0/0 is a match, x/0 infinitely far relatively; a NaN or infinity where the
reference differs always fails (numpy comparisons with NaN are False, which would pass it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorCheck:
    """One output compared with its reference; truthy when every element passes (atol, rtol)."""

    graph: str
    output: str
    max_abs: float
    max_rel: float
    mean_abs: float
    atol: float
    rtol: float
    failed: int                 # elements that fail the rule
    size: int
    objects: int | None = None  # the object count N the inputs had, where the caller varies it

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def __bool__(self) -> bool:
        return self.passed

    def verdict(self) -> str:
        """'yes', or 'NO (k of n > atol a, rtol r)' naming the tolerance that failed."""
        if self.passed:
            return "yes"
        return f"NO ({self.failed} of {self.size} > atol {self.atol:g}, rtol {self.rtol:g})"


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|a - b| and |a - b| / |b| in float64: 0 where equal (NaN == NaN, inf == inf included),
    inf where a non-finite value differs (so a NaN never passes) and where x / 0."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore"):
        absdiff = np.where(same, 0.0, np.abs(a - b))
    absdiff = np.where(np.isnan(absdiff), np.inf, absdiff)
    with np.errstate(divide="ignore", invalid="ignore"):
        reldiff = np.where(absdiff == 0, 0.0, absdiff / np.abs(b))
    return absdiff, np.where(np.isnan(reldiff), np.inf, reldiff)


def elementwise_failures(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """Boolean mask of the elements that fail: |a - b| > atol and |a - b| / |b| > rtol (module docstring)."""
    absdiff, reldiff = _differences(np.asarray(actual, np.float64), np.asarray(expected, np.float64))
    return (absdiff > atol) & (reldiff > rtol)


def compare_tensors(graph: str, output: str, actual: np.ndarray, expected: np.ndarray, *, atol: float,
                    rtol: float = 0.0, objects: int | None = None) -> TensorCheck:
    """Compare `actual` with the reference `expected` (same shape) under the element rule."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{graph}.{output}: shape {a.shape} differs from the reference's {b.shape}")
    if a.size == 0:
        return TensorCheck(graph, output, 0.0, 0.0, 0.0, atol, rtol, 0, 0, objects)
    absdiff, reldiff = _differences(a, b)
    failed = int(((absdiff > atol) & (reldiff > rtol)).sum())
    return TensorCheck(graph, output, float(absdiff.max()), float(reldiff.max()), float(absdiff.mean()),
                       atol, rtol, failed, int(a.size), objects)


def format_checks(checks: Iterable[TensorCheck], *, kinds: Sequence[str] | None = None) -> list[str]:
    """Markdown table rows (header first) of `checks`; `kinds` labels each row's inputs (e.g. random/real).
    The N column appears when some check carries an object count."""
    checks = list(checks)
    with_n = any(c.objects is not None for c in checks)
    head = ["inputs"] * (kinds is not None) + ["graph"] + ["N"] * with_n + ["output", "max abs", "max rel", "mean abs", "ok"]
    align = ["---"] * (kinds is not None) + ["---"] + ["---:"] * with_n + ["---", "---:", "---:", "---:", "---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for i, c in enumerate(checks):
        cells = ([kinds[i]] if kinds is not None else []) + [c.graph] + [str(c.objects or "")] * with_n + [
            c.output, f"{c.max_abs:.2e}", f"{c.max_rel:.2e}", f"{c.mean_abs:.2e}", c.verdict()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# -- masks ------------------------------------------------------------------------------------------
def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of the same shape; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def object_ious(ref: np.ndarray, other: np.ndarray, ids: Iterable[int] | None = None) -> list[float]:
    """IoU per object of two (H, W) index masks: for `ids`, or every non-zero id in either mask."""
    if ids is None:
        ids = (int(k) for k in np.union1d(np.unique(ref), np.unique(other)) if k != 0)
    return [mask_iou(ref == k, other == k) for k in ids]


def clip_ious(ref: Sequence[np.ndarray], other: Sequence[np.ndarray], *, skip_first: bool = True) -> list[float]:
    """Per frame and object IoU of two index-mask sequences (the first frame, the given annotation,
    skipped by default)."""
    start = 1 if skip_first else 0
    return [iou for a, b in list(zip(ref, other))[start:] for iou in object_ious(a, b)]


# -- probabilities (argmax -> labels: s3rt.runtime.preprocess.argmax_labels) -----------------------------------------------------------------------
def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose argmax over channels (axis 0) agrees, for two (C, H, W) arrays."""
    return float((np.argmax(a, axis=0) == np.argmax(b, axis=0)).mean())


def frame_agreement(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per frame: max |dp| and the argmax agreement of two (C, H, W) probability sequences."""
    diffs = [float(np.abs(x - y).max()) for x, y in zip(a, b)]
    return diffs, [argmax_agreement(x, y) for x, y in zip(a, b)]


__all__ = ["TensorCheck", "argmax_agreement", "clip_ious", "compare_tensors", "elementwise_failures",
           "format_checks", "frame_agreement", "mask_iou", "object_ious"]
