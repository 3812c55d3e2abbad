"""ONNX export and the ONNX Runtime backend against the torch backend (tiny configs, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from s3rt.errors import BackendError, ConfigError, ModelFormatError, ShapeError
from s3rt.export.onnx_export import export_model
from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
from s3rt.runtime.backends.pytorch.backend import TorchBackend
from s3rt.runtime.contract import GRAPH_ORDER
from s3rt.runtime.tracker import Tracker

H, W = 60, 100            # not multiples of 32: padded to 64 x 128


@pytest.fixture(scope="module", params=["tiny", "tiny-r50"])
def exported(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    manifest, rows = export_model(request.param, out_dir=out, height=H, width=W, max_objects=4, seed=2)
    return request.param, out, manifest, rows


def test_export_writes_checked_graphs_and_manifest(exported):
    config, out, manifest, rows = exported
    data = json.loads((out / "manifest.json").read_text())
    assert data["config"]["name"] == config and data["opset"] == 17
    assert data["resolution"] == {"height": H, "width": W, "padded_height": 64, "padded_width": 128}
    assert data["memory"]["slots"] == 8 and data["dynamic_axes"]["N"] == {"min": 1, "max": 4}
    assert data["s3rt_version"] and data["checkpoint_sha256"] is None
    for name in GRAPH_ORDER:
        model = onnx.load(str(out / f"{name}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == [t["name"] for t in data["graphs"][name]["inputs"]]
    readout = onnx.load(str(out / "memory_readout.onnx"))
    sensory = next(i for i in readout.graph.input if i.name == "sensory")
    assert sensory.type.tensor_type.shape.dim[1].dim_param == "N"
    assert max(r.max_abs for r in rows) < 1e-4


def test_each_graph_matches_torch_for_several_object_counts(exported):
    import onnxruntime as ort
    import torch

    from s3rt.export.model import build_model
    from s3rt.export.onnx_export import SubgraphModule, example_inputs, frame_features
    config, out, manifest, _ = exported
    model = build_model(config, seed=2)
    feats = frame_features(model, manifest.geometry)
    for dims in ({"N": 1, "NB": 1}, {"N": 4, "NB": 3}):
        for name in ("memory_readout", "query_attention", "mask_decoder", "mask_encoder"):
            spec = manifest.graphs[name]
            inputs = example_inputs(spec, manifest.model, manifest.geometry, dims, feats, seed=5)
            sess = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
            got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})
            with torch.no_grad():
                want = SubgraphModule(model, name, top_k=30)(*inputs.values())
            for a, b in zip(got, want):
                assert a.shape == tuple(b.shape)
                assert np.abs(a - b.numpy()).max() < 1e-4, (name, dims)


def stream(tracker, frames, masks):
    return [tracker.step(f, mask=masks.get(i), end=i == len(frames) - 1) for i, f in enumerate(frames)]


def test_onnxruntime_tracks_like_torch_over_a_clip(exported, blob_clip):
    config, out, manifest, _ = exported
    frames, mask = blob_clip
    frames = frames + [np.ascontiguousarray(f[::-1]) for f in frames]
    masks = {0: np.where(mask == 1, 1, 0), 4: np.where(mask == 2, 2, 0)}      # object 2 joins at frame 4
    torch_out = stream(Tracker(TorchBackend(config, seed=2), manifest.settings, max_short_side=None), frames, masks)
    ort_out = stream(Tracker(OnnxRuntimeBackend(out), max_short_side=None), frames, masks)
    assert np.abs(torch_out[1].probabilities - ort_out[1].probabilities).max() <= 1e-3
    for a, b in zip(torch_out, ort_out):
        assert a.object_ids == b.object_ids
        assert np.abs(a.probabilities - b.probabilities).max() <= 2e-2
        assert (a.index_mask == b.index_mask).mean() >= 0.99


def test_no_state_allocation_after_warm_up_on_onnxruntime(exported, blob_clip):
    _, out, _, _ = exported
    frames, mask = blob_clip
    backend = OnnxRuntimeBackend(out)
    calls = []
    original = backend.empty
    backend.empty = lambda shape, dtype: calls.append(shape) or original(shape, dtype)
    tracker = Tracker(backend, max_short_side=None)
    tracker.step(frames[0], mask=mask)
    tracker.step(frames[1])
    warm, addresses = len(calls), {k: v.ctypes.data for k, v in tracker.buffers.items()}
    for i in range(2, 12):
        tracker.step(frames[i % 6])
    assert len(calls) == warm and {k: v.ctypes.data for k, v in tracker.buffers.items()} == addresses


def test_backend_errors(exported, tmp_path, blob_clip):
    _, out, _, _ = exported
    with pytest.raises(ModelFormatError, match="no manifest.json"):
        OnnxRuntimeBackend(tmp_path).open()
    with pytest.raises(BackendError, match="unknown ONNX Runtime provider"):
        OnnxRuntimeBackend(out, provider="gpu")
    with pytest.raises(BackendError, match="not available"):
        OnnxRuntimeBackend(out, provider="tensorrt").open()
    frames, mask = blob_clip
    tracker = Tracker(OnnxRuntimeBackend(out), max_short_side=None)
    wide = np.zeros((60, 160, 3), np.uint8)
    with pytest.raises(ShapeError, match="exported for 60x100 frames but this stream's frames are 60x160"):
        tracker.step(wide, mask=np.ones((60, 160), np.int64))
    big = Tracker(OnnxRuntimeBackend(out), max_short_side=None)          # same aspect ratio: resized
    r = big.step(np.repeat(np.repeat(frames[0], 2, 0), 2, 1), mask=np.repeat(np.repeat(mask, 2, 0), 2, 1))
    assert big.geometry.work_hw == (60, 100) and r.probabilities.shape == (3, 120, 200)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = json.loads((bad / "manifest.json").read_text())
    data["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match="format version 99"):
        OnnxRuntimeBackend(bad).open()
    (bad / "encoder.onnx").unlink()
    data["format_version"] = 1
    (bad / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match="missing"):
        OnnxRuntimeBackend(bad).open()
    with pytest.raises(ConfigError, match="opset 12"):
        export_model("tiny", out_dir=tmp_path / "x", height=H, width=W, opset=12)


def test_runtime_imports_and_runs_without_torch(exported, blob_clip, tmp_path):
    """Block torch in a fresh interpreter, then import every runtime module and track with ORT."""
    _, out, _, _ = exported
    frames, mask = blob_clip
    np.save(tmp_path / "frame.npy", frames[0])
    np.save(tmp_path / "mask.npy", mask)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any 'import torch' now raises ImportError
        import numpy as np
        import s3rt.runtime, s3rt.runtime.tracker, s3rt.runtime.offline.pipeline, s3rt.runtime.io.files
        import s3rt.runtime.backends, s3rt.runtime.backends.onnxruntime.backend, s3rt.runtime.backends.pytorch.backend
        import s3rt.runtime.manifest, s3rt.runtime.preprocess, s3rt.runtime.io.sources
        from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
        from s3rt.runtime.tracker import Tracker
        t = Tracker(OnnxRuntimeBackend({str(out)!r}), max_short_side=None)
        r = t.step(np.load({str(tmp_path / 'frame.npy')!r}), mask=np.load({str(tmp_path / 'mask.npy')!r}))
        assert r.probabilities.shape == (3, {H}, {W})
        import importlib, pkgutil, s3rt.runtime.backends as b
        for m in pkgutil.iter_modules(b.__path__):
            importlib.import_module("s3rt.runtime.backends." + m.name)
        assert "torch" not in [k for k, v in sys.modules.items() if v is not None and k.split(".")[0] == "torch"]
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_fused_attention_plugin_graph_structure_and_lint(tmp_path):
    """The plugin option puts one s3rt::MaskedQueryGather per block in query_attention (ORT cannot
    run it: structure and TensorRT lint are checked instead); the other graphs keep ORT parity."""
    from s3rt.export.tensorrt.lint import lint_onnx
    manifest, rows = export_model("tiny", out_dir=tmp_path, height=H, width=W, fused_attention_node=True)
    graph = onnx.load(str(tmp_path / "query_attention.onnx")).graph
    custom = [n for n in graph.node if n.domain == "s3rt"]
    assert [n.op_type for n in custom] == ["MaskedQueryGather"] * manifest.model.num_blocks
    assert {a.name: a.i for a in custom[0].attribute if a.name == "num_heads"} == {"num_heads": 4}
    assert lint_onnx(tmp_path / "query_attention.onnx")
    assert "query_attention" not in {r.graph for r in rows} and max(r.max_abs for r in rows) < 1e-4
    assert manifest.to_json()["custom_ops"] == ["s3rt::MaskedQueryGather"]


def test_backend_parity_tool(blob_clip):
    from s3rt.benchmarks.backend_parity import compare_backends
    frames, mask = blob_clip
    r = compare_backends("tiny-r50", None, frames, {0: mask})
    assert r["frames"] == 6 and r["size"] == [60, 100]
    assert r["frame1_max_abs"] <= 1e-3 and r["clip_max_abs"] <= 2e-2 and r["min_argmax_agreement"] >= 0.99
