"""DAVIS-layout datasets: list the sequences, segment each from its first-frame annotation.

Layout (DAVIS 2017; the 480p level is optional)::

    ROOT/JPEGImages/480p/<sequence>/00000.jpg ...     (or ROOT/JPEGImages/<sequence>/)
    ROOT/Annotations/480p/<sequence>/00000.png        (or ROOT/Annotations/<sequence>/)
    ROOT/ImageSets/2017/<split>.txt                    (one sequence name per line; optional)

`run_dataset` writes OUT/<sequence>/<frame>.png (+ report.json / report.md per sequence) and
returns a `DatasetReport` (OUT/summary.json, OUT/summary.md). Only each sequence's first
annotation is given to the tracker (the semi-supervised protocol), so

    s3rt run --dataset ROOT --split val ... --out OUT
    s3rt eval --pred OUT --gt ROOT/Annotations/480p [--sequences ...]

scores the standard way; the summary spells out the second command. Torch-free.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3rt import __version__
from s3rt.errors import InputError
from s3rt.runtime.io.files import frame_or_error, list_frames, read_mask
from s3rt.runtime.offline.pipeline import RunReport, run_clip
from s3rt.runtime.tracker import Tracker

log = logging.getLogger(__name__)

IMAGE_DIRS = ("JPEGImages/480p", "JPEGImages")
ANNOTATION_DIRS = ("Annotations/480p", "Annotations")
SPLIT_FILES = ("ImageSets/2017/{split}.txt", "ImageSets/{split}.txt")


@dataclass(frozen=True)
class DatasetSequence:
    name: str
    frames: tuple[Path, ...]        # frame files in name order
    first_mask: Path                # annotation of frames[0] (same stem, .png)
    annotations_dir: Path           # ROOT/Annotations[/480p]: the --gt of `s3rt eval`


def _first_dir(root: Path, candidates: tuple[str, ...], what: str) -> Path:
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    raise InputError(f"{root} is not a DAVIS-layout dataset: no {what} folder "
                     f"({' or '.join(str(root / c) for c in candidates)})")


def _split_names(root: Path, split: str) -> list[str]:
    for pattern in SPLIT_FILES:
        path = root / pattern.format(split=split)
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not names:
                raise InputError(f"split file {path} lists no sequences")
            return list(dict.fromkeys(names))
    found = sorted(str(p.relative_to(root)) for p in (root / "ImageSets").rglob("*.txt")) \
        if (root / "ImageSets").is_dir() else []
    raise InputError(f"split '{split}' not found: no {' or '.join(p.format(split=split) for p in SPLIT_FILES)} "
                     f"under {root}" + (f" (split files there: {', '.join(found)})" if found else
                                        "; leave out --split to run every sequence folder"))


def iter_dataset(root: str | Path, split: str | None = None, *,
                 sequences: Iterable[str] | None = None) -> Iterator[DatasetSequence]:
    """The sequences of a DAVIS-layout dataset, in order; every one is checked before the first is yielded.

    `split`: a name in ImageSets (e.g. 'val'); None = every sequence folder of JPEGImages.
    `sequences`: a subset (error if one is not in the split / dataset).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    images = _first_dir(root, IMAGE_DIRS, "JPEGImages")
    annotations = _first_dir(root, ANNOTATION_DIRS, "Annotations")
    names = _split_names(root, split) if split else sorted(p.name for p in images.iterdir() if p.is_dir())
    if not names:
        raise InputError(f"no sequence folders in {images}")
    if sequences is not None:
        wanted = [s.strip() for s in sequences if s and s.strip()]
        if not wanted:
            raise InputError("the list of sequences is empty")
        unknown = [s for s in wanted if s not in names]
        if unknown:
            where = f"split '{split}'" if split else str(images)
            raise InputError(f"sequence(s) {', '.join(unknown)} not in {where} "
                             f"(it has {len(names)}: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
        names = list(dict.fromkeys(wanted))
    out = []
    for name in names:
        if not (images / name).is_dir():
            raise InputError(f"sequence '{name}' has no frames folder {images / name}")
        frames = tuple(list_frames(images / name))
        first_mask = annotations / name / f"{frames[0].stem}.png"
        if not first_mask.is_file():
            raise InputError(f"sequence '{name}': no annotation for its first frame ({first_mask})")
        out.append(DatasetSequence(name, frames, first_mask, annotations))
    return iter(out)


def eval_command(out_dir: str | Path, sequences: list[DatasetSequence]) -> str:
    """The `s3rt eval` line that scores exactly the sequences that were run."""
    gt = sequences[0].annotations_dir
    cmd = ["s3rt", "eval", "--pred", str(out_dir), "--gt", str(gt)]
    scored_by_default = sorted(p.name for p in gt.iterdir() if p.is_dir() and any(p.glob("*.png")))
    names = [s.name for s in sequences]
    if sorted(names) != scored_by_default:    # eval scores every ground-truth folder by default
        cmd += ["--sequences", ",".join(names)]
    return " ".join(shlex.quote(c) for c in cmd)


@dataclass
class DatasetReport:
    dataset: str
    split: str | None
    backend: dict = field(default_factory=dict)
    runs: dict[str, RunReport] = field(default_factory=dict)
    eval_command: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        seqs = {}
        steady: list[float] = []            # every frame but each sequence's first (mask) frame
        total_ms = 0.0
        frames = 0
        for name, rep in self.runs.items():
            s = rep.summary()
            seqs[name] = {"frames": s["frames"], "object_ids": s["object_ids"], "fps": s["fps"],
                          "latency_ms": s["latency_ms"], "first_frame_ms": s["first_frame_ms"]}
            steady += rep.latencies_ms[1:]
            total_ms += sum(rep.latencies_ms)
            frames += rep.frames
        lat = np.array(steady or [0.0])
        return {
            "s3rt_version": __version__, "dataset": self.dataset, "split": self.split, "backend": self.backend,
            "total": {"sequences": len(self.runs), "frames": frames, "seconds": total_ms / 1000,
                      "fps": float(1000 / lat.mean()) if steady and lat.mean() > 0 else None,
                      "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                                     "p95": float(np.percentile(lat, 95))}},
            "sequences": seqs, "eval_command": self.eval_command, "notes": self.notes,
        }

    def markdown(self) -> str:
        s = self.summary()
        t = s["total"]
        lines = ["# s3rt run report (dataset)", "",
                 f"- dataset: {s['dataset']}" + (f", split {s['split']}" if s["split"] else ""),
                 f"- backend: {', '.join(f'{k}={v}' for k, v in s['backend'].items())}",
                 f"- {t['sequences']} sequences, {t['frames']} frames, {t['seconds']:.1f} s segmenting"
                 + (f", {t['fps']:.2f} FPS excluding each first frame" if t["fps"] else ""),
                 f"- score with: `{s['eval_command']}`", *[f"- note: {n}" for n in s["notes"]], "",
                 "| sequence | frames | objects | FPS | p50 ms | p95 ms |", "|---|---:|---:|---:|---:|---:|"]
        for name, q in s["sequences"].items():
            fps = f"{q['fps']:.2f}" if q["fps"] else "-"
            lines.append(f"| {name} | {q['frames']} | {len(q['object_ids'])} | {fps} | "
                         f"{q['latency_ms']['p50']:.1f} | {q['latency_ms']['p95']:.1f} |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        (out / "summary.md").write_text(self.markdown())


def run_dataset(make_tracker: Callable[[], Tracker], sequences: Iterable[DatasetSequence], out_dir: str | Path, *,
                dataset: str | Path = "", split: str | None = None, max_frames: int | None = None,
                save_probs: bool = False, resize_masks: bool = False, progress: bool = True,
                on_bad_frame: str = "skip") -> DatasetReport:
    """Segment every sequence from its first annotation with a fresh tracker (sizes may differ).

    Writes OUT/<sequence>/<frame>.png and a report per sequence, then OUT/summary.json/.md.
    """
    out = Path(out_dir)
    seqs = list(sequences)
    if not seqs:
        raise InputError("no sequences to run")
    report = DatasetReport(dataset=str(dataset), split=split, eval_command=eval_command(out, seqs))
    for i, seq in enumerate(seqs, 1):
        files = seq.frames[:max_frames] if max_frames else seq.frames
        first_mask, palette = read_mask(seq.first_mask)
        tracker = make_tracker()
        if not report.backend:
            report.backend = tracker.backend.describe()
        frames = (frame_or_error(p) for p in files)
        run = run_clip(tracker, frames, first_mask=first_mask, out_dir=out / seq.name, palette=palette,
                       save_probs=save_probs, total=len(files), progress=progress, resize_masks=resize_masks,
                       on_bad_frame=on_bad_frame)
        run.write(out / seq.name)
        report.runs[seq.name] = run
        s = run.summary()
        log.info("[%d/%d] %s: %d frames, objects %s%s", i, len(seqs), seq.name, run.frames, run.object_ids,
                 f", {s['fps']:.2f} FPS" if s["fps"] else "")
    if max_frames:
        report.notes.append(f"--max-frames {max_frames}: sequences were cut short, so 's3rt eval' will miss "
                            "frames of longer sequences")
    out.mkdir(parents=True, exist_ok=True)
    report.write(out)
    return report
