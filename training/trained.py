"""The weights this project trained itself (see training/RECIPE.md for how they were made)."""

from __future__ import annotations

from pathlib import Path

from s3rt.errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAINED = {"tiny": WEIGHTS_DIR / "tiny_synthetic.pt"}   # fp16 state dicts, < 4 MB each


def trained_weights(config: str = "tiny") -> Path:
    """Path of the shipped trained state dict for `config`; load it with build_model(weights=...)."""
    path = TRAINED.get(config)
    if path is None:
        raise CheckpointError(f"no trained weights ship for config '{config}' (only: {', '.join(TRAINED)})")
    if not path.is_file():
        raise CheckpointError(f"trained weights missing from the install: {path} (see training/RECIPE.md "
                              "to re-create them with `s3rt train`)")
    return path


def has_trained_weights(config: str = "tiny") -> bool:
    return config in TRAINED and TRAINED[config].is_file()
