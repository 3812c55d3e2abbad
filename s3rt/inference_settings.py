"""Inference defaults travel with the model: one function decides the settings a run uses.

Precedence, lowest first (each layer only sets what it names):
  1. the config family's evaluation defaults (S3 spec §11, or Cutie's eval_config.yaml
     d17-val block, CUTIE_DELTA 6.2; the numbers coincide, the pad divisor is in the config);
  2. what the weights carry: a sidecar ``<checkpoint stem>.inference.json`` next to the file
     (our training/weights/tiny_synthetic.pt was trained with memory every frame and ships one
     saying mem_every 1), recorded again by ``s3rt export``;
  3. the export manifest's ``inference_defaults`` (and its baked capacity);
  4. what the user passes on the command line / node parameters.
Every setting remembers which layer set it, so commands can say what they run with. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from s3rt.configs import InferenceConfig, ModelConfig
from s3rt.errors import ConfigError

LOOP_KEYS = ("mem_every", "max_mem_frames", "top_k", "stagger_updates")    # fields of InferenceConfig
CAPACITY_KEYS = ("max_objects", "max_buckets")
FRAME_KEYS = ("size", "max_internal_size")      # reader shrink (shorter side) / Cutie's internal resize
KEYS = LOOP_KEYS + FRAME_KEYS

# (settings, where they come from) per family; None = off
FAMILY_DEFAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "s3": ({"mem_every": 5, "max_mem_frames": 5, "top_k": 30, "stagger_updates": 5, "size": 480,
            "max_internal_size": None}, "S3 evaluation defaults (spec §11)"),
    "cutie": ({"mem_every": 5, "max_mem_frames": 5, "top_k": 30, "stagger_updates": 5, "size": 480,
               "max_internal_size": None}, "Cutie evaluation defaults (eval_config.yaml d17-val)"),
}
SIDECAR_SUFFIX = ".inference.json"


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings a run uses and, per setting, which layer chose it."""

    loop: InferenceConfig
    size: int | None                      # reader shrink of the shorter side (None: native size)
    max_internal_size: int | None         # Cutie's internal resize (None: off)
    sources: dict[str, str]

    def describe(self) -> str:
        """One line for logs and reports: value and origin of every setting."""
        values = {**{k: getattr(self.loop, k) for k in LOOP_KEYS}, "size": self.size,
                  "max_internal_size": self.max_internal_size}
        by_source: dict[str, list[str]] = {}
        for k, v in values.items():
            by_source.setdefault(self.sources.get(k, "?"), []).append(f"{k}={'off' if v is None else v}")
        return "; ".join(f"{', '.join(items)} ({src})" for src, items in by_source.items())

    def to_dict(self) -> dict:
        """What `s3rt export` writes to manifest.json as `inference_defaults`."""
        return {**{k: getattr(self.loop, k) for k in LOOP_KEYS}, "size": self.size,
                "max_internal_size": self.max_internal_size, "sources": dict(self.sources)}


def sidecar_path(weights: str | Path) -> Path:
    path = Path(weights)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def weights_defaults(weights: str | Path | None) -> tuple[dict[str, Any], str] | None:
    """The settings a checkpoint carries in its sidecar JSON ({"inference_defaults": {...}}), if any."""
    if weights is None:
        return None
    path = sidecar_path(weights)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable inference defaults beside the weights ({exc}); fix or delete it") from exc
    values = data.get("inference_defaults") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected {{\"inference_defaults\": {{\"mem_every\": ..., ...}}}}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown inference settings {unknown}; known: {', '.join(KEYS)}")
    return values, f"weights: {path.name}"


def manifest_defaults(recorded: Mapping[str, Any] | None, settings: InferenceConfig | None
                      ) -> tuple[dict[str, Any], str] | None:
    """The export's recorded defaults (older exports: the loop settings baked into the manifest)."""
    if recorded:
        return {k: recorded[k] for k in KEYS if k in recorded}, "export manifest"
    if settings is not None:
        return {k: getattr(settings, k) for k in LOOP_KEYS}, "export manifest"
    return None


def resolve_inference_settings(config: ModelConfig | None, *, carried: list[tuple[dict[str, Any], str] | None] = (),
                               capacity: InferenceConfig | None = None,
                               overrides: Mapping[str, Any] | None = None) -> EffectiveSettings:
    """Settings for one run: family defaults < `carried` layers (weights, then manifest) < overrides.

    capacity: an export's baked capacity (max_objects, max_buckets, long_term); overrides may lower
    the object/bucket counts. `overrides` values of None mean "not given". size 0 means native size.
    config None (no model known yet): S3's defaults.
    """
    values, origin = FAMILY_DEFAULTS[config.family if config is not None else "s3"]
    values = dict(values)
    sources = {k: f"{config.name}: {origin}" if config is not None else origin for k in values}
    for layer in carried:
        if layer is None:
            continue
        layer_values, layer_source = layer
        for k, v in layer_values.items():
            values[k], sources[k] = v, layer_source
    user = {k: v for k, v in (overrides or {}).items() if v is not None}
    for k in KEYS:
        if k in user:
            values[k], sources[k] = user[k], "command line"
    base = capacity or InferenceConfig()
    loop = replace(base, **{k: values[k] for k in LOOP_KEYS}, **{k: user[k] for k in CAPACITY_KEYS if k in user})
    if "long_term" in user:
        loop = replace(loop, long_term=user["long_term"])
    size = values["size"] or None
    internal = values["max_internal_size"] if (values["max_internal_size"] or 0) > 0 else None
    if internal is not None and internal < 16:
        raise ConfigError(f"--max-internal-size must be >= 16 (or 0/-1 for off), got {internal}")
    return EffectiveSettings(loop=loop, size=size, max_internal_size=internal, sources=sources)
