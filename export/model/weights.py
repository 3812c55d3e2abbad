"""Checkpoint loading (strict, with one clear error) and seeded random weights.

Real S3 weights cannot be downloaded here; users pass their own checkpoint. Without one, s3rt
runs on seeded random weights whose batch-norm statistics are re-estimated on the shared
synthetic clip (s3rt.runtime.io.synthetic), so every stage stays finite and unsaturated (good for
tests and timing, meaningless masks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from s3rt.configs import get_config, list_configs
from s3rt.errors import CheckpointError
from s3rt.runtime.io.synthetic import make_clip


log = logging.getLogger(__name__)

NESTING_KEYS = ("model", "weights", "state_dict", "network", "module", "ema")


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a .pth/.pt file and return the flat state dict inside it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return extract_state_dict(obj, source=str(path))


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def extract_state_dict(obj: object, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap {'model': {...}}-style nesting (two levels) and a DataParallel 'module.' prefix."""
    for _ in range(3):
        if _is_state_dict(obj):
            break
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in NESTING_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        raise CheckpointError(f"{source}: no state dict found (expected a mapping of tensors, "
                              f"possibly nested under one of {', '.join(NESTING_KEYS)})")
    assert isinstance(obj, Mapping)
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], *, source: str = "checkpoint") -> None:
    """Raise one CheckpointError naming every missing/unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return

    def listing(title: str, items: list[str]) -> str:
        shown = "\n    ".join(items[:12])
        more = f"\n    ... and {len(items) - 12} more" if len(items) > 12 else ""
        return f"  {title} ({len(items)}):\n    {shown}{more}"

    parts = [listing(t, i) for t, i in (("missing keys", missing), ("unexpected keys", unexpected),
                                        ("shape mismatches", mismatched)) if i]
    config = getattr(getattr(model, "cfg", None), "name", "?")
    raise CheckpointError(f"{source} does not fit model config '{config}' (nothing was loaded):\n"
                          + "\n".join(parts)
                          + "\n  hint: pick the matching --config (s3-base = adapter_depthanybase, s3-r50 = base, "
                            "cutie-base / cutie-small = Cutie's base / small), or --config auto to detect it")


def _state_and_source(checkpoint: str | Path | Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    if isinstance(checkpoint, (str, Path)):
        return read_checkpoint(checkpoint), str(checkpoint)
    return extract_state_dict(checkpoint), "state dict"


def refuse_single_object(state: Mapping[str, Tensor], *, source: str) -> None:
    """A single-object Cutie/S3 checkpoint (4-channel mask encoder input, sensory_compress taking
    sensory + 1 channels) is refused: Cutie's loader widens it with a random 5th channel, which
    changes the network; s3rt loads only what a multi-object model was trained with."""
    conv1 = state.get("mask_encoder.conv1.weight")
    compress = state.get("pixel_fuser.sensory_compress.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 4:
        width = f", sensory_compress takes {compress.shape[1]} channels" if compress is not None else ""
        raise CheckpointError(f"{source} is a single-object checkpoint (mask_encoder.conv1 takes 4 input channels"
                              f"{width}); s3rt runs multi-object models only (5 channels: image, mask, other "
                              "objects). Cutie would widen it with random values; use a multi-object checkpoint")


@lru_cache(maxsize=None)
def expected_shapes(config: str) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a config and its shape (built on the meta device: no memory)."""
    from s3rt.export.model.s3 import S3Model
    with torch.device("meta"):
        model = S3Model(get_config(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def detect_config(checkpoint: str | Path | Mapping[str, Tensor] | None) -> str:
    """--config auto: the config whose keys and shapes equal the checkpoint's, or a CheckpointError
    naming the closest config and its first missing / unexpected / mismatched keys."""
    if checkpoint is None:
        raise CheckpointError("--config auto needs --weights: the config is detected from the checkpoint")
    state, source = _state_and_source(checkpoint)
    refuse_single_object(state, source=source)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    scored = []
    for name in list_configs():
        want = expected_shapes(name)
        missing = [k for k in want if k not in shapes]
        unexpected = [k for k in shapes if k not in want]
        mismatched = [f"{k} {shapes[k]} (expected {want[k]})" for k in want if k in shapes and shapes[k] != want[k]]
        if not (missing or unexpected or mismatched):
            log.info("detected config %s from %s", name, source)
            return name
        scored.append((len(missing) + len(unexpected) + len(mismatched), name, missing, unexpected, mismatched))
    _, name, missing, unexpected, mismatched = min(scored)
    first = "; ".join(f"{title} ({len(items)}): {', '.join(items[:3])}" for title, items in
                      (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)) if items)
    raise CheckpointError(f"{source}: unknown checkpoint layout (fits none of {', '.join(list_configs())}); "
                          f"closest is '{name}': {first}. Pass --config NAME to see the full comparison")


def load_weights(model: nn.Module, checkpoint: str | Path | Mapping[str, Tensor]) -> None:
    """Strictly load a checkpoint file or state dict into `model`."""
    state, source = _state_and_source(checkpoint)
    refuse_single_object(state, source=source)
    check_state_dict(model, state, source=source)
    model.load_state_dict(state, strict=True)


@torch.no_grad()
def randomize_weights(model: nn.Module, seed: int = 0, *, calib_size: tuple[int, int] = (128, 192)) -> None:
    """Seeded random weights with batch-norm running statistics estimated on synthetic frames."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    init_extra = getattr(model.pixel_encoder, "init_random", None)
    if callable(init_extra):
        init_extra()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None            # cumulative average over the calibration batches
    model.eval()
    for bn in bns:
        bn.train()
    clip, labels = make_clip(4, *calib_size, num_objects=2, seed=seed)
    frames = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float() / 255      # (4, 3, H, W) in [0, 1]
    masks = torch.from_numpy((np.stack(labels) == 1).astype(np.float32))            # (4, H, W) object 1
    for i in range(0, len(frames), 2):
        image = frames[i:i + 2]
        for b in range(image.shape[0]):   # graphs are batch-1; calibrate one frame at a time
            img = image[b:b + 1]
            encoded = model.encoder(img)
            semantic_in = (img, *encoded) if model.cfg.encoder == "vit_adapter" else encoded[:1]
            pix_feat = model.spatial_semantic(*semantic_in)[-4]
            n_obj = 2
            m = torch.stack([masks[i + b], 1 - masks[i + b]])[None]          # (1, 2, H, W)
            sensory = torch.zeros(1, n_obj, model.cfg.sensory_dim, *pix_feat.shape[-2:])
            model.mask_encoder_graph(img, pix_feat, sensory, m)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
