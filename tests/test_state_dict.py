"""Strict loading of reference-layout state dicts, and the one clear error when they do not fit."""

from __future__ import annotations

import json

import pytest
import torch

from s3rt.configs import get_config
from s3rt.errors import CheckpointError
from s3rt.export.model import S3Model, build_model, load_weights

MANIFESTS = {"s3-base": "state_dict_adapter_depthanybase.json", "s3-r50": "state_dict_base_resnet50.json"}


def manifest_state_dict(spec_dir, config: str) -> dict[str, torch.Tensor]:
    return manifest_state_dict_from(json.loads((spec_dir / MANIFESTS[config]).read_text())["entries"])


def manifest_state_dict_from(entries: list[dict], seed: int = 1) -> dict[str, torch.Tensor]:
    """Seeded weights for every manifest entry (name, shape, dtype), in the manifest's order."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for e in entries:
        dtype = getattr(torch, e["dtype"])
        out[e["name"]] = (torch.randint(0, 5, e["shape"], generator=g) if not dtype.is_floating_point
                          else torch.randn(e["shape"], generator=g)).to(dtype)
    return out


@pytest.fixture(scope="module", params=sorted(MANIFESTS))
def config_and_state(request, spec_dir):
    return request.param, manifest_state_dict(spec_dir, request.param)


def test_every_key_and_shape_matches_the_reference_manifest(config_and_state):
    config, state = config_and_state
    model = S3Model(get_config(config))
    ours = model.state_dict()
    assert list(ours) == list(state) or set(ours) == set(state)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}
    load_weights(model, state)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_nested_and_module_prefixed_checkpoints_load(tmp_path, spec_dir):
    state = manifest_state_dict(spec_dir, "s3-r50")
    nested = tmp_path / "nested.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, nested)
    model = build_model("s3-r50", weights=nested)
    key = "mask_decoder.pred.weight"
    assert torch.equal(model.state_dict()[key], state[key])


def test_wrong_checkpoint_is_refused_with_every_problem_listed(tmp_path, spec_dir):
    state = manifest_state_dict(spec_dir, "s3-r50")
    state["mask_decoder.pred.weight"] = torch.zeros(2, 128, 3, 3)        # shape mismatch
    state["extra.thing"] = torch.zeros(1)                                # unexpected
    del state["key_proj.e_proj.bias"]                                    # missing
    model = S3Model(get_config("s3-r50"))
    before = model.mask_decoder.pred.bias.clone()
    with pytest.raises(CheckpointError) as err:
        load_weights(model, state)
    msg = str(err.value)
    assert "missing keys (1)" in msg and "key_proj.e_proj.bias" in msg
    assert "unexpected keys (1)" in msg and "extra.thing" in msg
    assert "mask_decoder.pred.weight: checkpoint (2, 128, 3, 3) vs model (1, 128, 3, 3)" in msg
    assert "nothing was loaded" in msg
    assert torch.equal(model.mask_decoder.pred.bias, before)


def test_checkpoint_of_the_other_config_names_the_config(spec_dir):
    with pytest.raises(CheckpointError, match="does not fit model config 's3-base'"):
        load_weights(S3Model(get_config("s3-base")), manifest_state_dict(spec_dir, "s3-r50"))


def test_corrupt_and_missing_checkpoint_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        build_model("tiny", weights=bad)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_model("tiny", weights=tmp_path / "nope.pth")
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(CheckpointError, match="no state dict found"):
        build_model("tiny", weights=empty)
