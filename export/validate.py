"""`s3rt validate`: per-subgraph parity of exported graphs against the PyTorch modules, on
random inputs and on inputs recorded from a real streaming run, plus the TensorRT op lint."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s3rt.errors import CheckpointError
from s3rt.export.model import S3Model, build_model
from s3rt.export.onnx_export import SubgraphModule, compare_onnx, example_inputs, frame_features
from s3rt.runtime.compare import TensorCheck, format_checks
from s3rt.runtime.manifest import file_sha256
from s3rt.runtime.contract import GRAPH_ORDER
from s3rt.runtime.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """Truthy when every output is within atol of PyTorch and every graph passes the TensorRT lint."""

    rows: list[tuple[str, TensorCheck]]      # (input kind "random"/"real", check at |d| <= atol)
    lint: dict[str, object]                  # graph -> LintReport
    atol: float

    @property
    def parity_ok(self) -> bool:
        return all(r for _, r in self.rows)

    @property
    def lint_ok(self) -> bool:
        return all(bool(r) for r in self.lint.values())

    def __bool__(self) -> bool:
        return self.parity_ok and self.lint_ok

    def table(self) -> str:
        return "\n".join(format_checks([r for _, r in self.rows], kinds=[k for k, _ in self.rows]))


def model_for_manifest(manifest: Manifest, weights: str | Path | None) -> S3Model:
    """Rebuild the exact weights the graphs were exported with (checkpoint hash or seed)."""
    if manifest.checkpoint_sha256:
        if weights is None:
            raise CheckpointError(f"{manifest.root} was exported from a checkpoint "
                                  f"(sha256 {manifest.checkpoint_sha256[:12]}...): pass the same --weights")
        got = file_sha256(weights)
        if got != manifest.checkpoint_sha256:
            raise CheckpointError(f"--weights {weights} (sha256 {got[:12]}...) is not the checkpoint the graphs "
                                  f"were exported from ({manifest.checkpoint_sha256[:12]}...)")
        return build_model(manifest.model, weights=weights)
    m = re.match(r"random\(seed=(\d+)\)", str(manifest.extra.get("weights", "random(seed=0)")))
    return build_model(manifest.model, seed=int(m.group(1)) if m else 0)


class _Recorder:
    """Wraps a torch backend and keeps the first inputs each graph sees (with N >= 2 if possible)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seen: dict[str, dict[str, torch.Tensor]] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def open(self) -> "_Recorder":
        self.inner.open()
        return self

    def run(self, graph, inputs, outputs) -> None:  # noqa: ANN001 - Backend signature
        prev = self.seen.get(graph)
        n = next((int(v.shape[1]) for k, v in inputs.items() if k in ("sensory", "pixel_readout", "masks")), 0)
        prev_n = prev.get("__n__", torch.tensor(0)).item() if prev else -1
        if prev is None or n > prev_n:
            rec = {k: v.detach().clone() for k, v in inputs.items()}
            rec["__n__"] = torch.tensor(n)
            self.seen[graph] = rec
        self.inner.run(graph, inputs, outputs)


def recorded_inputs(model: S3Model, manifest: Manifest, frames: list[np.ndarray], masks: list[np.ndarray | None]
                    ) -> dict[str, dict[str, torch.Tensor]]:
    """Stream frames through the torch backend and capture real graph inputs."""
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker

    backend = TorchBackend(manifest.model, model=model)
    backend.open()
    rec = _Recorder(backend)
    tracker = Tracker(rec, manifest.settings, max_short_side=None)  # type: ignore[arg-type]
    for i, (frame, mask) in enumerate(zip(frames, masks)):
        tracker.step(frame, mask=mask, end=i == len(frames) - 1)
    return {g: {k: v for k, v in d.items() if k != "__n__"} for g, d in rec.seen.items()}


def validate_model(model_dir: str | Path, *, weights: str | Path | None = None, atol: float = 1e-3,
                   frames: list[np.ndarray] | None = None, masks: list[np.ndarray | None] | None = None,
                   lint: bool = True) -> ValidationResult:
    manifest = load_manifest(model_dir)
    model = model_for_manifest(manifest, weights)
    geo = manifest.geometry
    feats = frame_features(model, geo, seed=7)
    rows: list[tuple[str, TensorCheck]] = []
    for name in GRAPH_ORDER:
        spec = manifest.graphs[name]
        module = SubgraphModule(model, name, top_k=manifest.settings.top_k,
                                pos_embed=_pos_embed(model, geo) if name == "encoder" else None).eval()
        dims = {"N": min(2, manifest.settings.max_objects), "NB": 1}
        inputs = example_inputs(spec, manifest.model, geo, dims, feats, seed=11)
        rows += [("random", r) for r in compare_onnx(manifest.path(name), module, inputs, spec, atol=atol)]
    if frames is None:
        frames, masks = _default_clip(manifest)
    recorded = recorded_inputs(model, manifest, frames, masks or [None] * len(frames))
    for name in GRAPH_ORDER:
        if name not in recorded:
            continue
        spec = manifest.graphs[name]
        module = SubgraphModule(model, name, top_k=manifest.settings.top_k,
                                pos_embed=_pos_embed(model, geo) if name == "encoder" else None).eval()
        rows += [("real", r) for r in compare_onnx(manifest.path(name), module, recorded[name], spec, atol=atol)]
    reports = {}
    if lint:
        from s3rt.export.tensorrt.lint import lint_onnx
        for name in GRAPH_ORDER:
            reports[name] = lint_onnx(manifest.path(name), max_opset=20)
    return ValidationResult(rows=rows, lint=reports, atol=atol)


def _pos_embed(model: S3Model, geo) -> torch.Tensor | None:  # noqa: ANN001
    if model.cfg.encoder != "vit_adapter":
        return None
    with torch.no_grad():
        return model.pixel_encoder.interpolated_pos_embed(geo.h, geo.w)


def _default_clip(manifest: Manifest) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """A short synthetic clip at the export's resolution with two objects (one added later)."""
    from s3rt.runtime.io.synthetic import make_clip
    frames, labels = make_clip(7, manifest.height, manifest.width, num_objects=2, seed=3)
    first = np.where(labels[0] == 1, 1, 0).astype(np.int64)
    second = np.where(labels[3] == 2, 2, 0).astype(np.int64)
    masks: list[np.ndarray | None] = [first, None, None, second, None, None, None]
    return frames, masks
