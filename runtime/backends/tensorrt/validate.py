"""Validate TensorRT engines against ONNX Runtime: per subgraph (Polygraphy) and end to end (mask IoU).

`validate_tensorrt(model_dir, precision)` is what `s3rt validate --backend tensorrt` calls. Torch-free;
needs TensorRT, cuda-python, Polygraphy and ONNX Runtime, and a GPU.

1. Per subgraph: Polygraphy's `Comparator` runs each engine (TrtRunner) and its ONNX graph
   (OnnxrtRunner, CPU) on the same seeded inputs for every object count in `objects`, and checks
   every output with s3rt.runtime.compare, whose element rule is Polygraphy's
   `CompareFunc.simple(atol, rtol)`: an element fails only when BOTH |a - b| > atol AND
   |a - b| / |b| > rtol (b: the ONNX Runtime output), i.e. it passes when within atol OR within
   rtol; this is not numpy's |a - b| <= atol + rtol * |b|. `elementwise_failures` (re-exported
   here) is tested against Polygraphy:
     fp32: atol 1e-3, rtol 1e-3 (TF32 is disabled in fp32 builds);
     fp16: atol 5e-2, rtol 5e-2 — diagnostic only: the masked cross-attention's argmax is
     discontinuous, so an fp16 engine may flip a few attention targets and still segment well.
2. End to end: the tracker runs a clip on the TensorRT backend and on the ONNX Runtime backend;
   per frame and object the IoU of the argmax masks is computed. fp32 needs mean IoU >= 0.99,
   fp16 >= 0.95 (`min_iou` overrides). fp16 is judged by this, not by step 1.

Exports made with --fused-attention-plugin contain s3rt::MaskedQueryGather, which ONNX Runtime
cannot run: pass `reference_model_dir`, the plain export of the same model and weights, and ONNX
Runtime runs that one (in both steps), while TensorRT runs the plugin engines.

Inputs in step 1 are random but valid (bucket_valid has each bucket's permanent slot set,
object_bucket indexes existing buckets, probabilities in [0, 1]). Without `frames`, step 2 uses the
shared synthetic clip (s3rt.runtime.io.synthetic, 8 frames, 2 objects) at the export's resolution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s3rt.errors import ConfigError
from s3rt.optional import optional
from s3rt.runtime.compare import TensorCheck, compare_tensors, elementwise_failures, format_checks, object_ious
from s3rt.runtime.contract import GRAPH_ORDER, GraphSpec
from s3rt.runtime.io.synthetic import first_frame_clip
from s3rt.runtime.manifest import load_manifest

log = logging.getLogger(__name__)

polygraphy = optional("polygraphy", extra="tensorrt", min_version="0.49")

TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (5e-2, 5e-2)}     # precision -> (atol, rtol)
MIN_IOU = {"fp32": 0.99, "fp16": 0.95}


@dataclass
class TrtValidation:
    """Truthy when every judged check passed (fp16: the IoU check; fp32: both)."""

    precision: str
    atol: float
    rtol: float
    outputs: list[TensorCheck] = field(default_factory=list)   # per graph, N and output
    mean_iou: float | None = None
    min_iou: float | None = None
    iou_threshold: float | None = None

    @property
    def subgraphs_passed(self) -> bool:
        return all(self.outputs)

    @property
    def iou_passed(self) -> bool | None:
        if self.mean_iou is None or self.iou_threshold is None:
            return None
        return self.mean_iou >= self.iou_threshold

    def __bool__(self) -> bool:
        if self.precision == "fp16" and self.iou_passed is not None:
            return bool(self.iou_passed)
        return self.subgraphs_passed and self.iou_passed is not False

    def format(self) -> str:
        lines = [f"TensorRT {self.precision} vs ONNX Runtime (atol {self.atol:g}, rtol {self.rtol:g})",
                 *format_checks(self.outputs)]
        if self.mean_iou is not None:
            lines.append(f"end to end: mean mask IoU {self.mean_iou:.4f} (min {self.min_iou:.4f}), "
                         f"threshold {self.iou_threshold}")
        lines.append("PASSED" if self else "FAILED")
        return "\n".join(lines)


def _reference_dir(model_dir: str | Path, reference_model_dir: str | Path | None) -> Path:
    """The export ONNX Runtime runs: the plain one when `model_dir` holds s3rt custom ops."""
    manifest = load_manifest(model_dir)
    custom = [op for op in manifest.extra.get("custom_ops", []) if op.startswith("s3rt::")]
    if reference_model_dir is None:
        if custom:
            raise ConfigError(f"{model_dir} was exported with {custom}, which ONNX Runtime cannot run; pass "
                              "--reference-model DIR (a plain export of the same model and weights)")
        return Path(model_dir)
    ref = load_manifest(reference_model_dir)
    if ref.extra.get("custom_ops"):
        raise ConfigError(f"--reference-model {reference_model_dir} contains custom ops {ref.extra['custom_ops']}; "
                          "export it without --fused-attention-plugin")
    if (ref.model.name, ref.height, ref.width, ref.checkpoint_sha256) != (
            manifest.model.name, manifest.height, manifest.width, manifest.checkpoint_sha256):
        raise ConfigError(f"--reference-model {reference_model_dir} ({ref.model.name} {ref.height}x{ref.width}) is not "
                          f"the same model as {model_dir} ({manifest.model.name} {manifest.height}x{manifest.width}, "
                          "same checkpoint required)")
    return Path(reference_model_dir)


def random_inputs(spec: GraphSpec, objects: int, buckets: int, slots: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded, valid inputs for one graph at N = objects, NB = buckets."""
    rng = np.random.default_rng(seed)
    feed = {}
    for t in spec.inputs:
        shape = t.concrete(N=objects, NB=buckets)
        if t.name == "bucket_valid":
            valid = rng.random(shape) < 0.5
            valid[np.arange(shape[0]), np.arange(shape[0]) % slots] = True     # permanent slot of each bucket
            feed[t.name] = valid
        elif t.name == "object_bucket":
            feed[t.name] = rng.integers(0, buckets, size=shape).astype(np.int64)
        elif t.dtype == "int64":
            feed[t.name] = np.zeros(shape, np.int64)
        elif t.dtype == "bool":
            feed[t.name] = np.ones(shape, bool)
        else:
            feed[t.name] = rng.random(shape, dtype=np.float32)
    return feed


def clip_mask_iou(backend_a: Any, backend_b: Any, frames: list[np.ndarray], first_mask: np.ndarray) -> list[float]:
    """Track `frames` with both backends from `first_mask`; IoU per (later frame, tracked object)."""
    from s3rt.runtime.tracker import Tracker
    ta, tb = Tracker(backend_a, max_short_side=None), Tracker(backend_b, max_short_side=None)
    ious = []
    for t, frame in enumerate(frames):
        mask = first_mask if t == 0 else None
        ma, mb = ta.step(frame, mask=mask).index_mask, tb.step(frame, mask=mask).index_mask
        if t > 0:
            ious += object_ious(ma, mb, ta.object_ids)
    return ious


def validate_tensorrt(model_dir: str | Path, precision: str = "fp32", *, engine_dir: str | Path | None = None,
                      objects: tuple[int, ...] = (1, 2), graphs: tuple[str, ...] = GRAPH_ORDER, seed: int = 0,
                      atol: float | None = None, rtol: float | None = None, end_to_end: bool = True,
                      frames: list[np.ndarray] | None = None, first_mask: np.ndarray | None = None,
                      min_iou: float | None = None, device: int = 0,
                      plugin_libs: tuple[str | Path, ...] | list[str | Path] = (),
                      reference_model_dir: str | Path | None = None) -> TrtValidation:
    """Compare the engines in `engine_dir` (default MODEL_DIR/engines) with the ONNX graphs.

    Returns a truthy TrtValidation when they agree (see the module docstring for the tolerances
    and how fp16 is judged). Raises MissingDependencyError / BackendError when TensorRT,
    Polygraphy, ONNX Runtime or a GPU is missing, and BackendError if the engines were built
    for another precision, TensorRT version or GPU.
    """
    if precision not in TOLERANCES:
        raise ConfigError(f"unknown precision '{precision}'; choose one of {', '.join(TOLERANCES)}")
    manifest = load_manifest(model_dir)
    reference = _reference_dir(model_dir, reference_model_dir)
    ref_manifest = load_manifest(reference)
    default_atol, default_rtol = TOLERANCES[precision]
    result = TrtValidation(precision=precision, atol=atol if atol is not None else default_atol,
                           rtol=rtol if rtol is not None else default_rtol)
    from s3rt.runtime.backends.tensorrt.backend import TensorRTBackend
    trt_backend = TensorRTBackend(model_dir, engine_dir=engine_dir, device=device, precision=precision,
                                  plugin_libs=tuple(plugin_libs))
    trt_backend.open()       # checks versions, GPU, precision and ONNX hashes before any comparison
    try:
        _compare_subgraphs(result, trt_backend, manifest, ref_manifest, objects, graphs, seed)
        if end_to_end:
            from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
            if frames is None:
                frames, first_mask = first_frame_clip(8, manifest.height, manifest.width, num_objects=min(
                    2, trt_backend.capacity.max_objects), seed=seed)
            elif first_mask is None:
                raise ConfigError("frames given without first_mask")
            with OnnxRuntimeBackend(reference, provider="cpu") as ort_backend:
                ious = clip_mask_iou(trt_backend, ort_backend, frames, first_mask)
            if ious:
                result.mean_iou, result.min_iou = float(np.mean(ious)), float(np.min(ious))
                result.iou_threshold = min_iou if min_iou is not None else MIN_IOU[precision]
    finally:
        trt_backend.close()
    log.info("%s", result.format())
    return result


def _compare_subgraphs(result: TrtValidation, backend: Any, manifest: Any, reference: Any, objects: tuple[int, ...],
                       graphs: tuple[str, ...], seed: int) -> None:
    pg = polygraphy.load()
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator

    log.debug("polygraphy %s", pg.__version__)
    engines = backend.engine_manifest
    cap = backend.capacity
    for graph in graphs:
        spec = manifest.graphs[graph]
        dynamic = any(isinstance(d, str) for t in spec.inputs for d in t.shape)
        counts = sorted({min(n, cap.max_objects) for n in objects}) if dynamic else [1]
        feeds = [random_inputs(spec, n, min(cap.max_buckets, 2), manifest.geometry.slots, seed + i)
                 for i, n in enumerate(counts)]
        runners = [
            TrtRunner(EngineFromBytes(BytesFromPath(str(engines.path(graph)))), name=f"trt-{graph}"),
            OnnxrtRunner(SessionFromOnnx(BytesFromPath(str(reference.path(graph))),
                                         providers=["CPUExecutionProvider"]), name=f"onnxrt-{graph}"),
        ]
        run_results = Comparator.run(runners, data_loader=feeds)
        result.outputs += checks_from_runs(graph, counts, run_results, atol=result.atol, rtol=result.rtol)


def checks_from_runs(graph: str, counts: list[int], run_results: Any, *, atol: float, rtol: float
                     ) -> list[TensorCheck]:
    """Polygraphy RunResults of (engine runner, reference runner) -> one TensorCheck per iteration
    (object count) and output, judged by s3rt.runtime.compare (Polygraphy's elementwise rule)."""
    (_, ours), (_, reference) = list(run_results.items())
    return [compare_tensors(graph, name, got[name], want[name], atol=atol, rtol=rtol, objects=n)
            for n, got, want in zip(counts, ours, reference) for name in want.keys()]


__all__ = ["MIN_IOU", "TOLERANCES", "TrtValidation", "checks_from_runs", "clip_mask_iou", "elementwise_failures",
           "random_inputs", "validate_tensorrt"]
