"""PyTorch definitions of S3 (needs torch): build, load, randomise."""

from __future__ import annotations

from pathlib import Path

from s3rt.configs import ModelConfig, get_config
from s3rt.export.model.s3 import S3Model
from s3rt.export.model.weights import load_weights, randomize_weights

__all__ = ["S3Model", "build_model", "load_weights", "randomize_weights"]


def build_model(config: str | ModelConfig | None, *, weights: str | Path | None = None, seed: int = 0) -> S3Model:
    """Build a variant by name, load `weights` strictly, or else seed random weights. Eval mode.

    config "auto" (or None with weights) detects the variant from the checkpoint's keys and shapes."""
    import torch

    if config in (None, "auto"):
        from s3rt.export.model.weights import detect_config
        config = detect_config(weights)
    cfg = get_config(config) if isinstance(config, str) else config
    with torch.random.fork_rng():
        torch.manual_seed(seed)          # parameters initialised in constructors are seeded too
        model = S3Model(cfg)
        if weights is not None:
            load_weights(model, weights)
        else:
            randomize_weights(model, seed)
    return model.eval()
