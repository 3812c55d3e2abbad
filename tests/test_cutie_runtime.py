"""A Cutie model through the runtime: pad-16 geometry on odd grids, inference defaults that travel
with the model, the six graphs in ONNX Runtime (per graph and on a whole clip with an object added
mid-clip), TensorRT op lint, and `s3rt serve` == `s3rt run` on a Cutie export (tiny-cutie)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from s3rt.configs import get_config
from s3rt.runtime.preprocess import (FrameGeometry, crop_probabilities, internal_size, prepare_image,
                                     prepare_index_mask, resize_bilinear)

H0, W0 = 80, 106          # pads to 80x112 with 16 (grid 5x7, both odd); S3's 32 would give 96x128


def make_clip(n: int = 8) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """n frames with three moving discs; the first mask has ids 1 and 2, a later one adds id 3."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:H0, 0:W0]
    discs = lambda t: [((yy - 25) ** 2 + (xx - 25 - 2 * t) ** 2 < 130, (220, 40, 40)),      # noqa: E731
                       ((yy - 55) ** 2 + (xx - 75 + 2 * t) ** 2 < 110, (40, 200, 60)),
                       ((yy - 30) ** 2 + (xx - 85) ** 2 < 60 + 4 * t, (40, 60, 220))]
    frames = []
    for t in range(n):
        img = np.full((H0, W0, 3), 90, np.uint8) + rng.integers(0, 20, (H0, W0, 3), dtype=np.uint8)
        for region, colour in discs(t):
            img[region] = colour
        frames.append(img)
    first = np.zeros((H0, W0), np.int64)
    first[discs(0)[0][0]] = 1
    first[discs(0)[1][0]] = 2
    later = np.zeros((H0, W0), np.int64)
    later[discs(3)[2][0]] = 3
    return frames, first, later


# -- geometry ------------------------------------------------------------------------------------------

def test_pad16_geometry_of_240x427_and_exact_crop_back():
    geo = FrameGeometry.for_frame((240, 427), None, pad_multiple=16)
    assert geo.padded_hw == (240, 432) and geo.pad == (0, 0, 2, 3)
    assert (geo.padded_hw[0] // 16, geo.padded_hw[1] // 16) == (15, 27)
    s3 = FrameGeometry.for_frame((240, 427), None)
    assert s3.padded_hw == (256, 448) and s3.pad == (8, 8, 10, 11)
    assert FrameGeometry.for_frame((480, 854), None, pad_multiple=16).pad == (0, 0, 5, 5)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 427, 3), dtype=np.uint8)
    image = prepare_image(frame, geo)
    assert image.shape == (1, 3, 240, 432)
    assert np.all(image[0, :, :, :2] == 0) and np.all(image[0, :, :, -3:] == 0)
    np.testing.assert_array_equal(crop_probabilities(image[0], geo), frame.transpose(2, 0, 1) / np.float32(255))
    mask = rng.integers(0, 3, (240, 427))
    np.testing.assert_array_equal(prepare_index_mask(mask, geo)[:, 2:-3], mask)


def test_internal_resize_rule_matches_torch():
    """Delta 6.3: truncated sizes, bilinear without antialias (frames), nearest-exact (masks)."""
    import torch.nn.functional as F
    assert internal_size(481, 855, 480) == (480, int(855 / 481 * 480)) == (480, 853)
    assert internal_size(720, 1280, 480) == (480, 853) and internal_size(400, 600, 480) == (400, 600)
    rng = np.random.default_rng(1)
    img = rng.random((3, 97, 131)).astype(np.float32)
    for size in ((60, 81), (97, 131), (150, 200)):
        want = F.interpolate(torch.from_numpy(img)[None], size=size, mode="bilinear", align_corners=False,
                             antialias=False)[0].numpy()
        np.testing.assert_allclose(resize_bilinear(img, size), want, atol=1e-5)   # float32 coordinates
    geo = FrameGeometry.for_frame((97, 131), 480, pad_multiple=16, max_internal_size=60)
    assert geo.work_hw == (60, int(131 / 97 * 60)) and not geo.antialias and geo.padded_hw == (64, 96)
    mask = rng.integers(0, 4, (97, 131))
    want = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=geo.work_hw, mode="nearest-exact")
    top, _, left, _ = geo.pad
    got = prepare_index_mask(mask, geo)[top:top + geo.work_hw[0], left:left + geo.work_hw[1]]
    np.testing.assert_array_equal(got, want[0, 0].numpy().astype(np.int64))


def test_tracker_runs_a_cutie_model_with_the_internal_resize_and_returns_full_size_masks():
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    frames, first, _ = make_clip(3)
    with TorchBackend("tiny-cutie") as backend:
        tracker = Tracker(backend, max_short_side=None, max_internal_size=48)
        results = [tracker.step(f, mask=first if i == 0 else None) for i, f in enumerate(frames)]
        assert tracker.geometry.work_hw == (48, 63) and tracker.geometry.padded_hw == (48, 64)
    assert all(r.probabilities.shape == (3, H0, W0) for r in results)
    assert np.isfinite(results[-1].probabilities).all()


# -- inference defaults --------------------------------------------------------------------------------

def test_defaults_come_from_the_family_the_weights_and_the_user(tmp_path):
    from s3rt.inference_settings import resolve_inference_settings, weights_defaults
    from s3rt.training.trained import trained_weights
    cutie = resolve_inference_settings(get_config("cutie-base"))
    assert (cutie.loop.mem_every, cutie.loop.max_mem_frames, cutie.loop.top_k, cutie.loop.stagger_updates,
            cutie.size, cutie.max_internal_size) == (5, 5, 30, 5, 480, None)
    assert "Cutie evaluation defaults" in cutie.describe()
    assert "S3 evaluation defaults" in resolve_inference_settings(get_config("s3-r50")).describe()
    carried = weights_defaults(trained_weights("tiny"))
    tiny = resolve_inference_settings(get_config("tiny"), carried=[carried])
    assert tiny.loop.mem_every == 1 and tiny.sources["mem_every"] == "weights: tiny_synthetic.inference.json"
    user = resolve_inference_settings(get_config("tiny"), carried=[carried],
                                      overrides={"mem_every": 3, "top_k": None, "max_internal_size": -1})
    assert user.loop.mem_every == 3 and user.sources["mem_every"] == "command line"
    assert user.loop.top_k == 30 and user.max_internal_size is None
    bad = tmp_path / "w.inference.json"
    bad.write_text(json.dumps({"inference_defaults": {"mem_evry": 2}}))
    from s3rt.errors import ConfigError
    with pytest.raises(ConfigError, match=r"unknown inference settings \['mem_evry'\]"):
        weights_defaults(tmp_path / "w.pth")


def test_exporting_the_trained_tiny_weights_records_mem_every_1_and_serving_uses_it(tmp_path):
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    from s3rt.training.trained import trained_weights
    from s3rt.cli.main import main
    out = tmp_path / "tiny_trained"
    assert main(["export", "--weights", str(trained_weights("tiny")), "--height", "64", "--width", "96",
                 "--max-objects", "2", "--max-buckets", "1", "--no-parity", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["name"] == "tiny"                          # detected
    assert manifest["settings"]["mem_every"] == 1
    assert manifest["inference_defaults"]["sources"]["mem_every"] == "weights: tiny_synthetic.inference.json"
    assert manifest["inference_defaults"]["sources"]["top_k"] == "tiny: S3 evaluation defaults (spec §11)"
    with OnnxRuntimeBackend(out, threads=1) as backend:                 # what serve/node/replay build
        assert Tracker(backend).settings.mem_every == 1
    with TorchBackend(None, weights=trained_weights("tiny")) as backend:
        assert backend.model_config.name == "tiny" and Tracker(backend).settings.mem_every == 1


# -- export, ONNX Runtime parity, lint, serve ------------------------------------------------------

@pytest.fixture(scope="module")
def cutie_export(tmp_path_factory):
    from s3rt.export.onnx_export import export_model
    out = tmp_path_factory.mktemp("tiny_cutie")
    manifest, parity = export_model("tiny-cutie", out_dir=out, height=H0, width=W0, max_objects=4, max_buckets=3,
                                    seed=2)
    return out, manifest, parity


def test_export_pads_to_16_and_records_cutie_defaults(cutie_export):
    out, manifest, _ = cutie_export
    assert (manifest.geometry.height, manifest.geometry.width) == (80, 112)
    assert (manifest.geometry.h, manifest.geometry.w) == (5, 7)
    data = json.loads((out / "manifest.json").read_text())
    assert data["config"]["read_from_pixel"] == "masked_mha" and data["config"]["pad_multiple"] == 16
    assert "Cutie evaluation defaults" in data["inference_defaults"]["sources"]["mem_every"]


def test_every_graph_matches_torch_in_onnxruntime(cutie_export):
    _, _, parity = cutie_export
    assert {r.graph for r in parity} == {"encoder", "spatial_semantic", "memory_readout", "query_attention",
                                         "mask_decoder", "mask_encoder"}
    worst = max(parity, key=lambda r: r.max_abs)
    assert worst.max_abs < 1e-4, worst


def test_graphs_are_tensorrt_lint_clean(cutie_export):
    from s3rt.export.tensorrt.lint import lint_onnx
    out, _, _ = cutie_export
    for path in sorted(out.glob("*.onnx")):
        report = lint_onnx(path)
        assert report, report.format()
    ops = lint_onnx(out / "query_attention.onnx").ops
    assert ops["Softmax"] >= 4 and not any(op.startswith("MaskedQuery") for op in ops)


def run_clip(backend, frames, first, later, add_at: int = 3) -> list[np.ndarray]:
    from s3rt.runtime.tracker import Tracker
    tracker = Tracker(backend, max_short_side=None)
    probs = []
    for i, frame in enumerate(frames):
        mask = first if i == 0 else later if i == add_at else None
        probs.append(tracker.step(frame, mask=mask).probabilities)
    assert tracker.object_ids == [1, 2, 3]
    return probs


def test_onnxruntime_matches_torch_on_a_whole_clip_with_an_object_added_mid_clip(cutie_export):
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    out, manifest, _ = cutie_export
    frames, first, later = make_clip(8)
    with TorchBackend("tiny-cutie", seed=2) as tb:
        want = run_clip(tb, frames, first, later)
    with OnnxRuntimeBackend(out, threads=1) as ob:
        got = run_clip(ob, frames, first, later)
    for t, (a, b) in enumerate(zip(want, got)):
        assert a.shape == b.shape == ((3 if t < 3 else 4), H0, W0)
        assert np.abs(a - b).max() < 1e-4, (t, np.abs(a - b).max())


@contextlib.contextmanager
def serving(model_dir):
    """`s3rt serve --model model_dir --port 0` in a subprocess; yields its port, stops it with SIGTERM."""
    from conftest import start_server
    proc = start_server(model_dir)
    try:
        yield proc.port
    finally:
        proc.terminate()
        assert proc.wait(20) == 0                      # clean shutdown


def test_serving_a_cutie_export_gives_the_masks_of_s3rt_run(cutie_export, tmp_path):
    pytest.importorskip("grpc", reason="serving needs the serve extra (grpcio)")
    from s3rt.cli.main import main
    out, _, _ = cutie_export
    frames, first, _ = make_clip(6)
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(clip / f"{i:05d}.png")
    first_png = tmp_path / "first.png"
    Image.fromarray(first.astype(np.uint8), mode="L").save(first_png)
    assert main(["run", "--model", str(out), "--backend", "onnxruntime", "--threads", "1", "--frames", str(clip),
                 "--mask", str(first_png), "--out", str(tmp_path / "offline"), "--no-progress"]) == 0
    with serving(out) as port:        # a real `s3rt serve` process on loopback
        assert main(["stream", "--server", f"127.0.0.1:{port}", "--frames", str(clip), "--mask", str(first_png),
                     "--out", str(tmp_path / "served"), "--every-frame"]) == 0
    masks = {kind: [np.asarray(Image.open(tmp_path / kind / f"{i:05d}.png")) for i in range(len(frames))]
             for kind in ("offline", "served")}
    np.testing.assert_array_equal(np.stack(masks["served"]), np.stack(masks["offline"]))
    np.testing.assert_array_equal(masks["served"][0], first)            # the given mask comes back on frame 0
    assert set(np.unique(np.stack(masks["served"]))) <= {0, 1, 2}


def test_run_with_weights_only_detects_the_cutie_config_and_logs_its_settings(tmp_path, caplog):
    from s3rt.cli.main import main
    from s3rt.export.model import build_model
    frames, first, _ = make_clip(3)
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(clip / f"{i:05d}.png")
    Image.fromarray(first.astype(np.uint8), mode="L").save(tmp_path / "first.png")
    weights = tmp_path / "tiny-cutie.pth"
    torch.save(build_model("tiny-cutie", seed=4).state_dict(), weights)
    with caplog.at_level("INFO", logger="s3rt.cli"):
        assert main(["run", "--weights", str(weights), "--frames", str(clip), "--mask", str(tmp_path / "first.png"),
                     "--out", str(tmp_path / "out"), "--no-progress", "--top-k", "20"]) == 0
    assert ("inference settings: mem_every=5, max_mem_frames=5, stagger_updates=5, size=480, max_internal_size=off "
            "(tiny-cutie: Cutie evaluation defaults (eval_config.yaml d17-val)); top_k=20 (command line)") in caplog.text
    masks = [np.asarray(Image.open(tmp_path / "out" / f"{i:05d}.png")) for i in range(3)]
    assert all(m.shape == (H0, W0) for m in masks)


def test_fused_plugin_export_is_refused_for_cutie(tmp_path):
    from s3rt.errors import ConfigError
    from s3rt.export.onnx_export import export_model
    with pytest.raises(ConfigError, match="--fused-attention-plugin is S3-only"):
        export_model("tiny-cutie", out_dir=tmp_path, height=32, width=32, fused_attention_node=True)


def test_validate_and_bench_commands_on_a_cutie_model(cutie_export, tmp_path, capsys):
    from s3rt.cli.main import main
    out, _, _ = cutie_export
    assert main(["validate", "--model", str(out), "--max-frames", "3"]) == 0
    assert main(["bench", "--config", "tiny-cutie", "--height", "48", "--width", "80", "--frames", "3",
                 "--warmup", "2", "--threads", "1", "--backends", "torch,onnxruntime",
                 "--json", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    text = json.dumps(result)
    assert "tiny-cutie" in text and "onnxruntime" in text
