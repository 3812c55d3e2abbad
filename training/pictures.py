"""Pictures of tracking results: an overlay sheet (PNG grid) and a side-by-side overlay video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s3rt.runtime.io.video import VideoOverlayWriter, draw_overlay, palette_lut


def _zoom(x: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(x, k, axis=0), k, axis=1)


def overlay_sheet(path: str | Path, clips: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
                  columns: int = 6, zoom: int = 2) -> Path:
    """PNG grid: per clip a row of predicted overlays and below it the ground truth, at `columns`
    evenly spaced frames. clips: (name, frames (T,H,W,3), predicted labels (T,H,W), gt (T,H,W))."""
    from PIL import Image, ImageDraw

    lut = palette_lut(None)
    label_w, gap = 110, 4
    _, frames0, _, _ = clips[0]
    th, tw = frames0.shape[1] * zoom, frames0.shape[2] * zoom
    rows = 2 * len(clips)
    sheet = Image.new("RGB", (label_w + columns * (tw + gap), rows * (th + gap) + 20), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    t_len = frames0.shape[0]
    picks = np.linspace(0, t_len - 1, columns).round().astype(int)
    for c, t in enumerate(picks):
        draw.text((label_w + c * (tw + gap) + 4, 4), f"frame {t}", fill=(0, 0, 0))
    for r, (name, frames, pred, gt) in enumerate(clips):
        for sub, (labels, what) in enumerate(((pred, "tracked"), (gt, "ground truth"))):
            y = 20 + (2 * r + sub) * (th + gap)
            draw.text((4, y + th // 2 - 12), f"{name}\n{what}", fill=(0, 0, 0))
            for c, t in enumerate(picks):
                tile = draw_overlay(frames[t], labels[t], lut)
                sheet.paste(Image.fromarray(_zoom(tile, zoom)), (label_w + c * (tw + gap), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def overlay_video(path: str | Path, clips: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
                  fps: float = 8.0, zoom: int = 2) -> Path:
    """mp4, clips one after another: left the tracked masks, right the ground truth."""
    with VideoOverlayWriter(path, fps=fps) as writer:
        for _, frames, pred, gt in clips:
            for t in range(len(frames)):
                image = np.concatenate([frames[t], frames[t]], axis=1)       # (H, 2W, 3)
                labels = np.concatenate([pred[t], gt[t]], axis=1)           # (H, 2W)
                writer.add(_zoom(image, zoom), _zoom(labels, zoom))
    return Path(path)
