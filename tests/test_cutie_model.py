"""Cutie configs (CUTIE_DELTA.md): strict loading of both manifests, --config auto on every config,
the refused layouts, and the read-from-pixel layer against a naive re-statement of delta 3."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from s3rt.configs import get_config, list_configs
from s3rt.errors import CheckpointError, ConfigError
from s3rt.export.model import S3Model, build_model
from s3rt.export.model.object_transformer import foreground_from_logits
from s3rt.export.model.read_from_pixel import MaskedCrossAttention
from s3rt.export.model.weights import detect_config, expected_shapes
from test_state_dict import manifest_state_dict_from

CUTIE_MANIFESTS = {"cutie-small": "state_dict_cutie_small.json", "cutie-base": "state_dict_cutie_base.json"}
S3_MANIFESTS = {"s3-base": "state_dict_adapter_depthanybase.json", "s3-r50": "state_dict_base_resnet50.json"}


def manifest_entries(spec_dir, file: str) -> list[dict]:
    return json.loads((spec_dir / file).read_text())["entries"]


seeded_state = manifest_state_dict_from      # seeded weights for every manifest entry, in its order


def config_state(name: str) -> dict[str, torch.Tensor]:
    """Random weights with exactly the keys/shapes our module tree has (for configs without a manifest)."""
    g = torch.Generator().manual_seed(2)
    return {k: torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
            for k, s in expected_shapes(name).items()}


@pytest.mark.parametrize("config", sorted(CUTIE_MANIFESTS))
def test_cutie_manifest_loads_strictly_in_order_and_flat(config, spec_dir, tmp_path):
    entries = manifest_entries(spec_dir, CUTIE_MANIFESTS[config])
    spec = json.loads((spec_dir / CUTIE_MANIFESTS[config]).read_text())
    state = seeded_state(entries)
    with torch.device("meta"):
        model = S3Model(get_config(config))
    ours = model.state_dict()
    assert list(ours) == [e["name"] for e in entries]                    # same entries, same order
    assert {k: tuple(v.shape) for k, v in ours.items()} == {e["name"]: tuple(e["shape"]) for e in entries}
    params = sum(p.numel() for p in model.parameters())
    assert params == spec["total_parameter_elements"]
    path = tmp_path / f"{config}-flat.pth"
    torch.save(state, path)                                              # the released files' form
    built = build_model(config, weights=path)
    for name, value in built.state_dict().items():
        assert torch.equal(value, state[name]), name


@pytest.mark.parametrize("wrap", ["nested", "module", "resume"])
def test_cutie_nested_prefixed_and_resume_forms_load(wrap, spec_dir, tmp_path):
    state = seeded_state(manifest_entries(spec_dir, CUTIE_MANIFESTS["cutie-small"]))
    obj = {"nested": {"model": state, "epoch": 2},
           "module": {f"module.{k}": v for k, v in state.items()},
           "resume": {"it": 5, "weights": state}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert detect_config(path) == "cutie-small"
    model = build_model("auto", weights=path)
    key = "object_transformer.blocks.2.read_from_pixel.cross_attn.in_proj_weight"
    assert model.cfg.name == "cutie-small" and torch.equal(model.state_dict()[key], state[key])


@pytest.mark.parametrize("config", sorted(list_configs()))
def test_config_auto_detects_every_config(config, spec_dir, tmp_path):
    manifests = {**CUTIE_MANIFESTS, **S3_MANIFESTS}
    state = (seeded_state(manifest_entries(spec_dir, manifests[config])) if config in manifests
             else config_state(config))
    assert detect_config(state) == config


def test_auto_is_the_default_with_weights_and_builds_the_detected_config(tmp_path):
    state = config_state("tiny-cutie")
    path = tmp_path / "w.pth"
    torch.save(state, path)
    model = build_model(None, weights=path)
    assert model.cfg.name == "tiny-cutie"
    with pytest.raises(ConfigError, match="--config auto needs --weights"):
        get_config("auto")


def test_unknown_layout_names_the_closest_config_and_its_first_keys(spec_dir):
    state = seeded_state(manifest_entries(spec_dir, CUTIE_MANIFESTS["cutie-base"]))
    del state["object_transformer.blocks.1.read_from_pixel.norm.bias"]
    state["object_transformer.blocks.1.read_from_pixel.gate.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        detect_config(state)
    msg = str(err.value)
    assert "unknown checkpoint layout" in msg and "closest is 'cutie-base'" in msg
    assert "missing (1): object_transformer.blocks.1.read_from_pixel.norm.bias" in msg
    assert "unexpected (1): object_transformer.blocks.1.read_from_pixel.gate.weight" in msg


def test_single_object_checkpoint_is_refused_with_what_it_is(spec_dir, tmp_path):
    state = seeded_state(manifest_entries(spec_dir, CUTIE_MANIFESTS["cutie-base"]))
    state["mask_encoder.conv1.weight"] = state["mask_encoder.conv1.weight"][:, :4].clone()
    w = state["pixel_fuser.sensory_compress.weight"]
    state["pixel_fuser.sensory_compress.weight"] = w[:, :257].clone()
    path = tmp_path / "so.pth"
    torch.save(state, path)
    for call in (lambda: detect_config(path), lambda: build_model("cutie-base", weights=path)):
        with pytest.raises(CheckpointError, match=r"single-object checkpoint \(mask_encoder.conv1 takes 4 input "
                                                  r"channels, sensory_compress takes 257 channels\)"):
            call()


def test_fused_gather_is_refused_for_cutie_configs():
    model = S3Model(get_config("tiny-cutie"))
    with pytest.raises(ConfigError, match="fused DQ_CA kernel/plugin is for S3 configs only; tiny-cutie"):
        model.use_fused_query_gather(True)


# -- the read-from-pixel layer against a naive re-statement of CUTIE_DELTA section 3 -------------------

def naive_read_from_pixel(sd: dict[str, torch.Tensor], xq, eq, t, ep, fg, heads: int) -> torch.Tensor:
    """Delta 3 step by step, one (object, head, query) at a time, from the state dict alone."""
    bn, q, c = xq.shape
    d = c // heads
    z = torch.nn.functional.layer_norm(xq, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-5)
    w, b = sd["cross_attn.in_proj_weight"], sd["cross_attn.in_proj_bias"]
    qq = (z + eq) @ w[:c].T + b[:c]
    kk = (t + ep) @ w[c:2 * c].T + b[c:2 * c]
    vv = t @ w[2 * c:].T + b[2 * c:]
    out = torch.zeros_like(xq)
    for n in range(bn):
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            for i in range(q):
                allowed = fg[n] if i < q // 2 else ~fg[n]           # S3 9.3: fg queries / bg queries
                if not allowed.any():                               # fully blocked row: attend everywhere
                    allowed = torch.ones_like(allowed)
                s = (kk[n, :, sl] @ qq[n, i, sl]) / math.sqrt(d)
                s = torch.where(allowed, s, torch.tensor(float("-inf"), dtype=s.dtype))
                out[n, i, sl] = torch.softmax(s, dim=0) @ vv[n, :, sl]
    out = out @ sd["cross_attn.out_proj.weight"].T + sd["cross_attn.out_proj.bias"]
    return z + out


@pytest.mark.parametrize("situation", ["random", "never_foreground", "foreground_everywhere", "one_object"])
def test_masked_cross_attention_matches_the_naive_restatement(situation):
    torch.manual_seed(0)
    c, heads, q, h, w = 32, 4, 6, 5, 7
    layer = MaskedCrossAttention(dim=c, num_heads=heads).double().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    n = 1 if situation == "one_object" else 3
    aux = torch.randn(1, n, h, w, dtype=torch.float64)
    if situation == "never_foreground":
        aux[0, 1] = -50.0
    if situation == "foreground_everywhere":
        aux[0, 2] = 50.0
    fg = foreground_from_logits(aux)                                  # (N, P) the model's own mask builder
    if situation == "never_foreground":
        assert not fg[1].any()
    if situation == "foreground_everywhere":
        assert fg[2].all()
    if situation == "random":
        assert fg.any(dim=1).all() and (~fg).any(dim=1).all()
    xq, eq = torch.randn(n, q, c, dtype=torch.float64), torch.randn(n, q, c, dtype=torch.float64)
    t, ep = torch.randn(n, h * w, c, dtype=torch.float64), torch.randn(n, h * w, c, dtype=torch.float64)
    with torch.no_grad():
        got = layer(xq, t, eq, ep, fg)
        want = naive_read_from_pixel(layer.state_dict(), xq, eq, t, ep, fg, heads)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() < 1e-12


def test_cutie_block_differs_from_dq_ca_only_in_read_from_pixel():
    cutie, s3 = expected_shapes("cutie-base"), expected_shapes("s3-r50")
    only_cutie = {k for k in cutie if k not in s3}
    only_s3 = {k for k in s3 if k not in cutie}
    assert len(only_cutie) == 12 and len(only_s3) == 15
    assert all(".read_from_pixel." in k for k in only_cutie | only_s3)


def test_tiny_cutie_runs_a_full_graph_chain_on_an_odd_grid():
    """240x427 pads to 240x432 (grid 15x27, odd width): every graph runs and stays finite."""
    from s3rt.export.onnx_export import frame_features
    from s3rt.runtime.contract import Geometry
    model = build_model("tiny-cutie")
    geo = Geometry(height=240, width=432, slots=3)
    feats = frame_features(model, geo)
    assert feats["pix_feat"].shape[-2:] == (15, 27)
    with torch.no_grad():
        masks = torch.rand(1, 2, 240, 432)
        sensory = torch.zeros(1, 2, 32, 15, 27)
        value, new_sensory, summaries = model.mask_encoder_graph(feats["image"], feats["pix_feat"], sensory, masks)
        readout = model.query_attention(torch.randn(1, 2, 32, 15, 27), summaries)
        probs, logits, _ = model.mask_decoder_graph(feats["f8"], feats["f4"], readout, new_sensory)
    assert probs.shape == (1, 3, 240, 432) and logits.shape == (1, 2, 60, 108)
    assert np.isfinite(probs.numpy()).all()
