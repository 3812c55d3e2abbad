"""DAVIS-2017 semi-supervised evaluation (J, F, J&F), vectorised, numbers equal to the official tool.

``evaluate_davis(pred_dir, gt_dir)`` scores a folder of predicted label PNGs against DAVIS
ground truth exactly like ``davisvideochallenge/davis2017-evaluation`` (task
``semi-supervised``) does, but computes every frame and object of a sequence with numpy array
operations instead of per-frame Python calls, and needs neither scikit-image nor OpenCV
(only numpy and Pillow).

Layout
------
``gt_dir/<sequence>/<frame>.png`` and ``pred_dir/<sequence>/<frame>.png``: one folder per
sequence, one label PNG per frame (palette PNG, as DAVIS ships them; 8-bit grayscale label PNGs
are read the same way). Pixel value = object id, 0 = background, 255 in the ground truth =
void. Frames are the ground-truth PNGs in name order; predictions are read for the evaluated
frames only, by the same names.

Result (``evaluate_davis`` return value, and the JSON that ``s3rt eval --json`` writes;
``format_table`` renders it as markdown)
-----------------------------------------------------------------------------------------
::

    {
      "J&F": float,                     # (J.mean + F.mean) / 2
      "J": {"mean": float,              # mean over all objects of all sequences of the
            "recall": float,            #   object's per-frame mean / recall / decay
            "decay": float},
      "F": {"mean": float, "recall": float, "decay": float},
      "sequences": {
        "<sequence>": {
          "<object id>": {"J": float,   # the object's J mean over the evaluated frames
                          "F": float}   # the object's F mean over the evaluated frames
        }
      }
    }

Object ids are JSON strings ("1", "2", ...). A sequence whose first ground-truth frame has no
object contributes nothing (empty dict), as in the official tool.

Official semantics reproduced (facts read from davisvideochallenge/davis2017-evaluation, BSD-3;
this file is an independent vectorised implementation, not a copy)
----------------------------------------------------------------------------------------------
``davis2017/davis.py`` (``DAVIS.get_all_masks``, ``_get_all_elements``)
  * Frames of a sequence: the ground-truth PNGs sorted by path; a frame's id is its file name
    without extension.
  * Ground-truth pixels equal to 255 (void) are set to 0 before objects are separated.
  * Number of objects ``N = int(max(first ground-truth frame))`` (after void -> 0); the objects
    are ids ``1..N`` (all of them, even an id in that range absent from the first frame), and
    object ``k``'s mask in every frame is ``label == k``; an object absent from a frame has an
    empty mask there.
``davis2017/evaluation.py`` (``DAVISEvaluation.evaluate``, ``_evaluate_semisupervised``)
  * Semi-supervised: the first and the last frame are dropped (``[:, 1:-1]``) from the ground
    truth and from the frame ids whose predictions are read.
  * The semi-supervised path passes no void mask (``None`` in the current version; the older
    version passes ``gt == 255`` computed on the already-binarised masks, i.e. all False), so
    void pixels are simply background for every object.
  * Per object: ``db_statistics`` of its per-frame J and of its per-frame F; the per-object
    entry ``M_per_object`` is the mean.
  * Predictions with more objects than the ground truth are rejected ("index higher than the
    number of objects"); fewer objects are zero-padded (= empty predicted masks).
``davis2017/results.py`` (``Results.read_masks``)
  * Predictions are read as ``pred_dir/<seq>/<frame id>.png`` for the evaluated frame ids; the
    number of predicted objects is ``int(max(...))`` over those frames and object ``k`` is
    ``pred == k``. A missing file aborts. (A 255 in a prediction therefore counts as object
    255 and is rejected.)
``davis2017/metrics.py``
  * ``db_eval_iou``: ``J = |A & B| / |A | B|`` (``np.sum`` counts, float64 division); ``J = 1``
    where the union is 0 (both masks empty).
  * ``db_eval_boundary`` -> ``f_measure`` per frame with ``bound_th = 0.008``:
    ``bound_pix = ceil(bound_th * ||(H, W)||_2)`` (``bound_th`` itself when ``>= 1``).
  * ``_seg2bmap`` (width/height = the mask's own, so no resizing branch): with ``e``, ``s``,
    ``se`` the mask shifted by one pixel from the east, south and south-east (zero outside),
    ``b = (seg ^ e) | (seg ^ s) | (seg ^ se)``; then the last row is overwritten with
    ``seg ^ e``, the last column with ``seg ^ s``, and the bottom-right pixel with 0.
  * Both boundary maps are dilated with ``cv2.dilate(b, skimage.morphology.disk(bound_pix))``;
    ``disk(r)`` is ``x**2 + y**2 <= r**2`` on the ``(2r+1)^2`` grid ``x, y in [-r, r]`` and
    ``cv2.dilate``'s default border adds nothing, so this is a zero-padded binary dilation.
  * ``precision = |fg_b & gt_dil| / |fg_b|``, ``recall = |gt_b & fg_dil| / |gt_b|``, except:
    no predicted boundary and some GT boundary -> (1, 0); some predicted and no GT boundary ->
    (0, 1); neither -> (1, 1). ``F = 2 P R / (P + R)``, 0 when ``P + R == 0``.
``davis2017/utils.py`` (``db_statistics``)
  * mean ``M = nanmean(x)``; recall ``R = nanmean(x > 0.5)``;
  * decay: ``ids = (round(linspace(1, n, 5) + 1e-10) - 1).astype(uint8)`` over the ``n``
    evaluated frames, bins ``x[ids[i] : ids[i+1] + 1]`` (consecutive bins share their end
    frame), ``D = nanmean(bin 0) - nanmean(bin 3)``. The same numpy expression is used here,
    so even its uint8 wrap-around for sequences of more than 256 evaluated frames matches.
``evaluation_method.py``
  * ``J&F = (mean(J["M"]) + mean(F["M"])) / 2``; J-Recall/J-Decay (F likewise) are the
    means over all objects of the per-object recall/decay.

Deliberate differences: every failure the official tool reports by printing and exiting (or
by an opaque numpy error) is an ``S3rtError`` with a message naming the sequence and files:
missing prediction frames (``InputError``), unknown object ids (``ObjectIdError``), size
mismatches (``ShapeError``), PNGs that are not palette / 8-bit label images (``InputError``),
sequences with fewer than 3 frames (``InputError``).
"""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from s3rt.errors import InputError, ObjectIdError, ShapeError

__all__ = [
    "BOUND_TH", "VOID_LABEL", "SequenceScores", "boundary_radius", "db_statistics",
    "dilate_disk", "disk", "evaluate_davis", "evaluate_sequence", "f_measure", "format_table", "jaccard",
    "read_label_png", "seg2bmap",
]

VOID_LABEL = 255
BOUND_TH = 0.008
LABEL_MODES = ("P", "L")

# Pixels per working array (frames x crop height x crop width) inside one object's chunk.
_CHUNK_PIXELS = 1 << 23


# --------------------------------------------------------------------------------------------
# Per-frame metrics, vectorised over any leading axes (..., H, W)
# --------------------------------------------------------------------------------------------

def disk(radius: int) -> np.ndarray:
    """Binary disk ``x**2 + y**2 <= r**2`` on the (2r+1, 2r+1) grid (= skimage.morphology.disk)."""
    r = int(radius)
    if r < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    grid = np.arange(-r, r + 1)
    return (grid[None, :] ** 2 + grid[:, None] ** 2) <= r * r


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` if >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of binary masks, (..., H, W) -> bool (..., H, W).

    A pixel is on the boundary if it differs from its east, south or south-east neighbour
    (zero outside the image); the last row only compares with the east neighbour, the last
    column only with the south one, the bottom-right pixel is never a boundary.
    """
    seg = np.asarray(seg, dtype=bool)
    b = np.zeros_like(seg)
    if seg.shape[-1] == 0 or seg.shape[-2] == 0:
        return b
    c = seg[..., :-1, :-1]
    b[..., :-1, :-1] = (c ^ seg[..., :-1, 1:]) | (c ^ seg[..., 1:, :-1]) | (c ^ seg[..., 1:, 1:])
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    b[..., -1, -1] = False
    return b


def _disk_half_widths(radius: int) -> np.ndarray:
    """Half-width of each row of ``disk(radius)`` (row i holds offset dy = i - radius)."""
    d = disk(radius)
    half = d.sum(axis=1) // 2
    # every disk row is a contiguous run centred on the middle column
    cols = np.arange(-radius, radius + 1)
    assert np.array_equal(d, np.abs(cols)[None, :] <= half[:, None])
    return half


def dilate_disk(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (..., H, W) maps by ``disk(radius)``, zero outside the image.

    Same result as ``cv2.dilate(b.astype(uint8), disk(radius).astype(uint8))`` per map. The disk
    is the union of its rows, each a horizontal segment, so the dilation is an OR over rows dy of
    (horizontal dilation by that row's segment) shifted by dy. The horizontal dilations grow
    one pixel at a time, and rows are OR-ed in as soon as their width is reached: about 4r+1
    array ORs instead of one per disk pixel.
    """
    src = np.asarray(bmap, dtype=bool)
    r = int(radius)
    half = _disk_half_widths(r)
    height, width = src.shape[-2:]
    out = np.zeros_like(src)
    grown = src.copy()
    for k in range(r + 1):
        if 0 < k < width:
            grown[..., :, k:] |= src[..., :, :-k]
            grown[..., :, :-k] |= src[..., :, k:]
        for row in np.flatnonzero(half == k):
            dy = int(row) - r
            if dy >= height or -dy >= height:
                continue
            if dy > 0:
                out[..., : height - dy, :] |= grown[..., dy:, :]
            elif dy < 0:
                out[..., -dy:, :] |= grown[..., : height + dy, :]
            else:
                out |= grown
    return out


def _count(x: np.ndarray) -> np.ndarray:
    return np.count_nonzero(x, axis=(-2, -1)).astype(np.int64)


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Region similarity J of binary masks (..., H, W) -> float64 (...); 1 where both are empty."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ShapeError(f"jaccard: ground truth {gt.shape} and prediction {pred.shape} differ")
    inter = _count(gt & pred)
    union = _count(gt | pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def _f_from_counts(n_fg, n_gt, fg_match, gt_match) -> np.ndarray:
    n_fg = np.asarray(n_fg, dtype=np.int64)
    n_gt = np.asarray(n_gt, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.asarray(fg_match, dtype=np.int64) / n_fg.astype(np.float64)
        recall = np.asarray(gt_match, dtype=np.int64) / n_gt.astype(np.float64)
    precision = np.where(n_fg == 0, 1.0, np.where(n_gt == 0, 0.0, precision))
    recall = np.where(n_gt == 0, 1.0, np.where(n_fg == 0, 0.0, recall))
    denom = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * precision * recall / denom
    return np.where(denom == 0, 0.0, f)


def _boundary_counts(gt: np.ndarray, pred: np.ndarray, radius: int):
    """n_fg, n_gt, fg_match, gt_match (int64 (...)) for binary masks (..., H, W)."""
    fg_b = seg2bmap(pred)
    gt_b = seg2bmap(gt)
    n_fg = _count(fg_b)
    n_gt = _count(gt_b)
    fg_match = np.zeros(n_fg.shape, dtype=np.int64)
    gt_match = np.zeros(n_gt.shape, dtype=np.int64)
    both = (n_fg > 0) & (n_gt > 0)  # other cases are decided by the counts alone
    if both.any():
        fg_sel = fg_b[both]
        gt_sel = gt_b[both]
        fg_match[both] = _count(fg_sel & dilate_disk(gt_sel, radius))
        gt_match[both] = _count(gt_sel & dilate_disk(fg_sel, radius))
    return n_fg, n_gt, fg_match, gt_match


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH,
              radius: int | None = None) -> np.ndarray:
    """Boundary F of binary masks (..., H, W) -> float64 (...).

    ``radius`` defaults to ``boundary_radius(H, W, bound_th)`` of the masks' own size; pass it
    explicitly when the masks are crops of larger frames.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ShapeError(f"f_measure: ground truth {gt.shape} and prediction {pred.shape} differ")
    if radius is None:
        radius = boundary_radius(gt.shape[-2], gt.shape[-1], bound_th)
    return _f_from_counts(*_boundary_counts(gt, pred, radius))


def db_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, recall and decay of per-frame scores (..., frames) -> three float64 (...) arrays."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(x, axis=-1)
        recall = np.nanmean(x > 0.5, axis=-1)
        # the official bin edges, including its uint8 cast (only matters beyond 256 frames)
        ids = (np.round(np.linspace(1, n, 4 + 1) + 1e-10) - 1).astype(np.uint8)
        first = x[..., ids[0]:ids[1] + 1]
        last = x[..., ids[3]:ids[4] + 1]
        decay = np.nanmean(first, axis=-1) - np.nanmean(last, axis=-1)
    return mean, recall, decay


# --------------------------------------------------------------------------------------------
# One sequence
# --------------------------------------------------------------------------------------------

@dataclass
class SequenceScores:
    """Per-frame scores of one sequence: ``j``/``f`` are (objects, evaluated frames)."""

    name: str
    object_ids: list[int]
    frames: list[str]
    j: np.ndarray
    f: np.ndarray


def _crop_box(mask_any: np.ndarray) -> tuple[int, int, int, int] | None:
    """Rows/cols [y0, y1) x [x0, x1) such that boundary maps computed on the crop equal the
    full-frame ones restricted to it, and are zero outside it: the masks' bounding box grown by
    one pixel towards the origin (boundaries sit half a pixel that way) and by one zero pixel on
    the far side (so the crop's last row/column is either the image's or all zero)."""
    rows = np.flatnonzero(mask_any.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask_any.any(axis=0))
    h, w = mask_any.shape
    return (max(0, int(rows[0]) - 1), min(h, int(rows[-1]) + 2),
            max(0, int(cols[0]) - 1), min(w, int(cols[-1]) + 2))


def _object_scores(gt_labels: np.ndarray, pred_labels: np.ndarray, obj: int,
                   radius: int) -> tuple[np.ndarray, np.ndarray]:
    """J and F over all frames of one object; gt/pred labels are (T, H, W) uint8."""
    t, h, w = gt_labels.shape
    j = np.ones(t, dtype=np.float64)
    f = np.ones(t, dtype=np.float64)
    step = max(1, _CHUNK_PIXELS // max(1, h * w))
    for start in range(0, t, step):
        stop = min(t, start + step)
        gt = gt_labels[start:stop] == obj
        pred = pred_labels[start:stop] == obj
        box = _crop_box((gt | pred).any(axis=0))
        if box is None:  # both empty in every frame of the chunk: J = F = 1
            continue
        y0, y1, x0, x1 = box
        gt = gt[:, y0:y1, x0:x1]
        pred = pred[:, y0:y1, x0:x1]
        j[start:stop] = jaccard(gt, pred)
        f[start:stop] = _f_from_counts(*_boundary_counts(gt, pred, radius))
    return j, f


def evaluate_sequence(gt_labels: np.ndarray, pred_labels: np.ndarray, *, name: str = "sequence",
                      frames: Sequence[str] | None = None,
                      bound_th: float = BOUND_TH) -> SequenceScores:
    """Per-frame J and F of one sequence, from label arrays.

    ``gt_labels``: (T, H, W) ground truth of all T frames (255 = void); ``pred_labels``:
    (T - 2, H, W) predictions of the evaluated frames ``1 .. T-2``. Objects are ids
    ``1..max(first GT frame)``. Raises ObjectIdError for a predicted id outside that range.
    """
    gt_labels = np.asarray(gt_labels)
    pred_labels = np.asarray(pred_labels)
    if gt_labels.ndim != 3 or gt_labels.shape[0] < 3:
        raise InputError(f"sequence '{name}': need at least 3 ground-truth frames (the first and "
                         f"last are not evaluated), got array of shape {gt_labels.shape}")
    t = gt_labels.shape[0] - 2
    frames = list(frames) if frames is not None else [f"{i:05d}" for i in range(1, t + 1)]
    if pred_labels.shape != (t, *gt_labels.shape[1:]):
        raise ShapeError(f"sequence '{name}': predictions have shape {pred_labels.shape}, "
                         f"expected {(t, *gt_labels.shape[1:])} (frames 1..T-2 of the ground truth)")
    first = gt_labels[0]
    first = np.where(first == VOID_LABEL, 0, first)
    n_obj = int(first.max()) if first.size else 0
    gt_eval = gt_labels[1:-1]
    unknown = np.unique(pred_labels[pred_labels > n_obj]) if pred_labels.size else []
    if len(unknown):
        bad = [int(v) for v in unknown]
        where = [frames[i] for i in np.flatnonzero((pred_labels > n_obj).any(axis=(1, 2)))[:5]]
        known = f"ids 1..{n_obj}" if n_obj else "no objects"
        raise ObjectIdError(
            f"sequence '{name}': prediction contains object id(s) {bad} (e.g. in frame(s) "
            f"{', '.join(where)}) but the first ground-truth frame has {known}"
            + ("; 255 (void) is not a valid predicted label" if VOID_LABEL in bad else ""))
    radius = boundary_radius(gt_labels.shape[1], gt_labels.shape[2], bound_th)
    ids = list(range(1, n_obj + 1))
    j = np.empty((n_obj, t), dtype=np.float64)
    f = np.empty((n_obj, t), dtype=np.float64)
    for i, obj in enumerate(ids):
        # void (255) never equals an object id, so it is background for every object
        j[i], f[i] = _object_scores(gt_eval, pred_labels, obj, radius)
    return SequenceScores(name=name, object_ids=ids, frames=frames, j=j, f=f)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def read_label_png(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """A label PNG (palette 'P' or 8-bit grayscale 'L') as a (H, W) uint8 array of ids."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in LABEL_MODES:
                raise InputError(
                    f"{what} {path}: expected an indexed (palette, mode 'P') or 8-bit grayscale "
                    f"label PNG whose pixel values are object ids, got mode '{mode}'; save masks "
                    f"as palette PNGs (e.g. Image.fromarray(ids, 'P') with a palette)")
            arr = np.asarray(img, dtype=np.uint8)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{what} {path}: file not found") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{what} {path}: cannot read PNG ({exc})") from exc
    if arr.ndim != 2:
        raise InputError(f"{what} {path}: expected a single-channel label image, got shape {arr.shape}")
    return arr


def _list_pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _read_stack(paths: list[Path], what: str, pool: ThreadPoolExecutor) -> list[np.ndarray]:
    return list(pool.map(lambda p: read_label_png(p, what), paths))


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _load_sequence(pred_dir: Path, gt_dir: Path, seq: str,
                   pool: ThreadPoolExecutor) -> tuple[np.ndarray, np.ndarray, list[str]]:
    gt_seq = gt_dir / seq
    pred_seq = pred_dir / seq
    names = _list_pngs(gt_seq)
    if len(names) < 3:
        raise InputError(f"sequence '{seq}': {gt_seq} has {len(names)} ground-truth PNG(s); need at "
                         f"least 3 (the first and the last frame are not evaluated)")
    if not pred_seq.is_dir():
        raise InputError(f"sequence '{seq}': no prediction folder {pred_seq}")
    eval_names = names[1:-1]
    missing = [n for n in eval_names if not (pred_seq / n).is_file()]
    if missing:
        raise InputError(
            f"sequence '{seq}': prediction is missing {len(missing)} of {len(eval_names)} evaluated "
            f"frame(s) in {pred_seq}: {_preview(missing)} (every ground-truth frame except the "
            f"first and the last needs a prediction PNG of the same name)")
    gts = _read_stack([gt_seq / n for n in names], "ground truth", pool)
    shape = gts[0].shape
    for n, g in zip(names, gts):
        if g.shape != shape:
            raise ShapeError(f"sequence '{seq}': ground-truth frame {gt_seq / n} is "
                             f"{g.shape[0]}x{g.shape[1]} but frame {names[0]} is {shape[0]}x{shape[1]}")
    preds = _read_stack([pred_seq / n for n in eval_names], "prediction", pool)
    for n, p in zip(eval_names, preds):
        if p.shape != shape:
            raise ShapeError(f"sequence '{seq}': prediction {pred_seq / n} is {p.shape[0]}x{p.shape[1]} "
                             f"(HxW) but the ground truth is {shape[0]}x{shape[1]}")
    return np.stack(gts), np.stack(preds), [os.path.splitext(n)[0] for n in eval_names]


def _resolve_sequences(gt_dir: Path, pred_dir: Path, sequences: Iterable[str] | str | None) -> list[str]:
    if not gt_dir.is_dir():
        raise InputError(f"ground-truth folder {gt_dir} does not exist")
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder {pred_dir} does not exist")
    available = sorted(p.name for p in gt_dir.iterdir() if p.is_dir())
    if sequences is None:
        seqs = [s for s in available if _list_pngs(gt_dir / s)]
        if not seqs:
            raise InputError(f"ground-truth folder {gt_dir} has no sequence sub-folders with PNGs")
        return seqs
    if isinstance(sequences, str):
        sequences = [s for s in sequences.split(",")]
    seqs = [s.strip() for s in sequences if s and s.strip()]
    if not seqs:
        raise InputError("empty list of sequences")
    unknown = [s for s in seqs if s not in available]
    if unknown:
        raise InputError(f"sequence(s) not in the ground truth {gt_dir}: {_preview(unknown)}")
    return list(dict.fromkeys(seqs))


def evaluate_davis(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                   sequences: Iterable[str] | str | None = None, progress: bool = True) -> dict:
    """DAVIS-2017 semi-supervised J&F of ``pred_dir`` against ``gt_dir`` (schema: module docstring).

    ``sequences``: names (or one comma-separated string) to evaluate; default every sub-folder
    of ``gt_dir`` that holds PNGs. ``progress``: tqdm bar over sequences on stderr.
    """
    from tqdm import tqdm

    pred_dir = Path(pred_dir)
    gt_dir = Path(gt_dir)
    seqs = _resolve_sequences(gt_dir, pred_dir, sequences)
    stats = {"J": ([], [], []), "F": ([], [], [])}
    per_seq: dict[str, dict[str, dict[str, float]]] = {}
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for seq in tqdm(seqs, desc="s3rt eval", unit="seq", file=sys.stderr, disable=not progress):
            gt, pred, frames = _load_sequence(pred_dir, gt_dir, seq, pool)
            scores = evaluate_sequence(gt, pred, name=seq, frames=frames)
            jm, jr, jd = db_statistics(scores.j)
            fm, fr, fd = db_statistics(scores.f)
            for key, triple in (("J", (jm, jr, jd)), ("F", (fm, fr, fd))):
                for acc, vals in zip(stats[key], triple):
                    acc.extend(float(v) for v in vals)
            per_seq[seq] = {str(obj): {"J": float(jm[i]), "F": float(fm[i])}
                            for i, obj in enumerate(scores.object_ids)}
    if not stats["J"][0]:
        raise InputError(f"no objects to evaluate: the first ground-truth frame of every selected "
                         f"sequence in {gt_dir} is empty")
    summary = {key: {"mean": float(np.mean(m)), "recall": float(np.mean(r)), "decay": float(np.mean(d))}
               for key, (m, r, d) in stats.items()}
    return {
        "J&F": (summary["J"]["mean"] + summary["F"]["mean"]) / 2.0,
        "J": summary["J"],
        "F": summary["F"],
        "sequences": per_seq,
    }


def format_table(res: dict) -> str:
    """Markdown of an ``evaluate_davis`` result: the global row, then one row per sequence (means
    over its objects)."""
    j, f = res["J"], res["F"]
    fmt = "{:.4f}".format
    lines = [
        "| J&F | J-Mean | J-Recall | J-Decay | F-Mean | F-Recall | F-Decay |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join(fmt(v) for v in (res["J&F"], j["mean"], j["recall"], j["decay"],
                                            f["mean"], f["recall"], f["decay"])) + " |",
        "",
        "| sequence | objects | J&F | J-Mean | F-Mean |",
        "|---|---:|---:|---:|---:|",
    ]
    for seq, objs in res["sequences"].items():
        if objs:
            jm = sum(o["J"] for o in objs.values()) / len(objs)
            fm = sum(o["F"] for o in objs.values()) / len(objs)
            cells = [fmt((jm + fm) / 2), fmt(jm), fmt(fm)]
        else:
            cells = ["-", "-", "-"]
        lines.append(f"| {seq} | {len(objs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
