"""The backend registry: typed options per backend, one builder from the shared CLI flags, the
thread-safety each backend declares, and the loop settings a tracker on it is given."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from s3rt.cli.main import main
from s3rt.configs import InferenceConfig
from s3rt.errors import ConfigError
from s3rt.long_term_config import long_term_from
from s3rt.runtime.backends import BACKENDS, make_backend
from s3rt.runtime.backends.registry import (GRAPH_BACKENDS, BackendRequest, OnnxRuntimeOptions, TensorRTOptions, TorchOptions,
                                            backend_class, build_backend, create_backend, options_for)


def test_registry_names_and_declared_thread_safety():
    assert BACKENDS == ("torch", "onnxruntime", "tensorrt") and GRAPH_BACKENDS == ("onnxruntime", "tensorrt")
    # TensorRT runs one execution context per graph: the serving manager must serialise its calls
    assert {n: backend_class(n).thread_safe for n in BACKENDS} == {"torch": True, "onnxruntime": True,
                                                                   "tensorrt": False}


@pytest.mark.parametrize("options", [TorchOptions("tiny"), OnnxRuntimeOptions("m"), TensorRTOptions("m")])
def test_option_fields_are_the_constructor_keywords(options):
    """A field the constructor does not take would fail create_backend; none may be missing either."""
    import inspect
    cls = backend_class({TorchOptions: "torch", OnnxRuntimeOptions: "onnxruntime",
                         TensorRTOptions: "tensorrt"}[type(options)])
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    assert sorted(f.name for f in dataclasses.fields(options)) == sorted(params)


def test_request_maps_flags_to_each_backends_options():
    r = BackendRequest("onnxruntime", model_dir="exp", device="cuda:1", threads=3, host_buffers=True,
                       opt_level="basic", precision="fp16", plugin_libs=("p.so",))
    assert options_for(r) == OnnxRuntimeOptions("exp", provider="cuda", threads=3, opt_level="basic", device=1,
                                                host_buffers=True)
    assert options_for(dataclasses.replace(r, device="cpu")).provider == "cpu"
    assert options_for(dataclasses.replace(r, provider="tensorrt")).provider == "tensorrt"
    assert options_for(dataclasses.replace(r, backend="tensorrt")) == TensorRTOptions(
        "exp", device=1, precision="fp16", plugin_libs=("p.so",))
    t = options_for(BackendRequest("torch", config="tiny", weights="w.pth", seed=4, device="cuda:1"))
    assert t == TorchOptions("tiny", weights="w.pth", device="cuda:1", seed=4, precision="fp32")


def test_built_backends_carry_their_options():
    b = build_backend(BackendRequest("onnxruntime", model_dir="exp", threads=2, opt_level="extended"))
    assert (type(b).__name__, str(b.model_dir), b.threads, b.opt_level, b.provider) == \
        ("OnnxRuntimeBackend", "exp", 2, "extended", "cpu")
    t = create_backend(TorchOptions("tiny", precision="bf16"))
    assert (t.name, t.model_config.name, t.precision) == ("torch", "tiny", "bf16")
    assert make_backend("onnxruntime", model_dir="exp", threads=1).threads == 1
    trt = build_backend(BackendRequest("tensorrt", model_dir="exp", device="cuda:1", precision="fp16",
                                       plugin_libs=("p.so",)))      # construction loads no TensorRT
    assert (trt.name, trt.device, trt.precision, trt.plugin_libs, trt.engine_dir.as_posix()) == \
        ("tensorrt", 1, "fp16", ("p.so",), "exp/engines")


def test_request_errors_name_the_missing_flag():
    with pytest.raises(ConfigError, match=r"the torch backend needs a model: --config NAME"):
        build_backend(BackendRequest("torch"))
    for name in ("onnxruntime", "tensorrt"):
        with pytest.raises(ConfigError, match=f"the {name} backend runs exported graphs: pass --model DIR"):
            build_backend(BackendRequest(name, config="tiny"))
    with pytest.raises(ConfigError, match=r"unknown backend 'tensorflow'; choose one of torch, onnxruntime"):
        build_backend(BackendRequest("tensorflow"))
    with pytest.raises(TypeError, match="not backend options: BackendRequest"):
        create_backend(BackendRequest("torch"))       # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword"):
        make_backend("torch", config="tiny", fused=False)


def test_torch_takes_the_config_of_an_export(ros_tiny_model):
    b = build_backend(BackendRequest("torch", model_dir=ros_tiny_model))
    assert b.model_config.name == "tiny"


def test_tracker_settings_graphs_run_their_exports(ros_tiny_model):
    """Asked-for loop settings reach a torch tracker; exported graphs keep the export's, and
    long-term settings the export lacks are refused, not silently dropped."""
    asked = InferenceConfig(mem_every=3, max_objects=2)
    assert create_backend(TorchOptions("tiny")).tracker_settings(asked) is asked
    ort = create_backend(OnnxRuntimeOptions(ros_tiny_model, threads=1))
    assert ort.tracker_settings(asked) is None and ort.tracker_settings(None) is None
    with pytest.raises(ConfigError, match=r"--long-term/--lt-\* ask for .* exported with long_term=None; re-export"):
        ort.tracker_settings(InferenceConfig(long_term=long_term_from("small")))


def test_run_cli_refuses_long_term_the_graphs_lack(tmp_path, ros_tiny_model, blob_clip, capsys):
    from PIL import Image
    frames, mask = blob_clip
    Image.fromarray(frames[0]).save(tmp_path / "00000.png")
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "mask.png")
    code = main(["run", "--backend", "onnxruntime", "--model", str(ros_tiny_model), "--frames", str(tmp_path),
                 "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "out"), "--long-term",
                 "--no-progress"])
    assert code == 1 and not (tmp_path / "out").exists()
    assert "were exported with long_term=None" in capsys.readouterr().err


# -- the CLI is a shell over library code ----------------------------------------------------------------
def _imports(path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in a source file, lazy ones included."""
    import ast
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_cli_and_training_import_no_benchmarks_and_no_private_cli_helpers():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "s3rt" / "cli").glob("*.py")) + sorted((root / "training").glob("*.py"))
    allowed = {"s3rt/cli/bench.py"}          # `s3rt bench` drives the benchmarks by design
    bad = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        for module, names in _imports(f):
            if module.startswith("s3rt.benchmarks") and rel not in allowed:
                bad.append(f"{rel}: {module}")
            if module.startswith("s3rt.cli.") and any(n.startswith("_") for n in names):
                bad.append(f"{rel}: {module} {names}")
    assert not bad

