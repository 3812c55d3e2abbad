"""manifest.json beside exported graphs: what was exported, for which model, at what size.

Written by `s3rt export`, read (and checked) by every graph backend. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from s3rt import __version__
from s3rt.configs import InferenceConfig, ModelConfig, ResNet50Config, ViTAdapterConfig
from s3rt.errors import ModelFormatError
from s3rt.long_term_config import LongTermConfig
from s3rt.runtime.contract import GRAPH_ORDER, LONG_TERM_GRAPHS, Geometry, GraphSpec, TensorSpec, graph_names

FORMAT = "s3rt-onnx"
FORMAT_VERSION = 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (checkpoints, graphs), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    root: Path
    model: ModelConfig
    settings: InferenceConfig          # capacity and loop settings baked into the graphs
    height: int                        # working (unpadded) frame size the export is for
    width: int
    geometry: Geometry                 # padded size and slot count
    opset: int
    checkpoint_sha256: str | None
    graphs: dict[str, GraphSpec]
    files: dict[str, str]
    s3rt_version: str
    extra: dict

    def path(self, graph: str) -> Path:
        return self.root / self.files[graph]

    @property
    def inference_defaults(self) -> dict | None:
        """Loop/frame defaults `s3rt export` recorded with their sources (s3rt.inference_settings);
        None for exports made before they were recorded."""
        return self.extra.get("inference_defaults")

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "s3rt_version": self.s3rt_version,
            "config": self.model.to_dict(), "settings": _settings_dict(self.settings),
            "resolution": {"height": self.height, "width": self.width,
                           "padded_height": self.geometry.height, "padded_width": self.geometry.width},
            "memory": {"slots": self.geometry.slots, "tokens_per_slot": self.geometry.tokens,
                       "max_objects": self.settings.max_objects, "max_buckets": self.settings.max_buckets},
            "dynamic_axes": {"N": {"min": 1, "max": self.settings.max_objects},
                             "NB": {"min": 1, "max": self.settings.max_buckets},
                             "N+1": {"min": 2, "max": self.settings.max_objects + 1}},
            "opset": self.opset, "checkpoint_sha256": self.checkpoint_sha256,
            "graphs": {name: {"file": self.files[name], **self.graphs[name].to_dict()} for name in GRAPH_ORDER + LONG_TERM_GRAPHS
                       if name in self.graphs},
            **self.extra,
        }

    def save(self) -> Path:
        path = self.root / "manifest.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _settings_dict(s: InferenceConfig) -> dict:
    out = {k: getattr(s, k) for k in ("mem_every", "max_mem_frames", "top_k", "stagger_updates",
                                       "max_objects", "max_buckets")}
    if s.long_term is not None:
        out["long_term"] = s.long_term.to_dict()
    return out


def settings_from_dict(d: dict) -> InferenceConfig:
    d = dict(d)
    lt = d.pop("long_term", None)
    return InferenceConfig(**d, long_term=None if lt is None else LongTermConfig(**lt))


def model_config_from_dict(d: dict) -> ModelConfig:
    d = dict(d)
    if d.get("vit"):
        v = dict(d["vit"])
        v["spm_dims"] = tuple(v["spm_dims"])
        d["vit"] = ViTAdapterConfig(**v)
    if d.get("resnet"):
        r = {k: tuple(v) if isinstance(v, list) else v for k, v in d["resnet"].items()}
        d["resnet"] = ResNet50Config(**r)
    for k, v in list(d.items()):
        if isinstance(v, list):
            d[k] = tuple(v)
    return ModelConfig(**d)


def _tensor(d: dict) -> TensorSpec:
    return TensorSpec(d["name"], d["dtype"], tuple(d["shape"]))


def read_versioned_json(path: Path, *, fmt: str, version: int, missing: str, fix: str) -> dict:
    """Read a manifest file, checking its format tag and version; errors say how to fix them."""
    if not path.is_file():
        raise ModelFormatError(f"no {path.name} in {path.parent}: {missing}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = exc if isinstance(exc, json.JSONDecodeError) else "binary data, not UTF-8 text"
        raise ModelFormatError(f"{path} is not valid JSON ({why}); {fix}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}")
    if data.get("format") != fmt:
        raise ModelFormatError(f"{path}: format {data.get('format')!r}, expected {fmt!r}")
    if data.get("format_version") != version:
        raise ModelFormatError(f"{path}: manifest format version {data.get('format_version')} is not supported by "
                               f"s3rt {__version__} (supports {version}); {fix}")
    return data


def load_manifest(model_dir: str | Path) -> Manifest:
    """Read and check DIR/manifest.json; every referenced graph file must exist."""
    root = Path(model_dir)
    path = root / "manifest.json"
    data = read_versioned_json(path, fmt=FORMAT, version=FORMAT_VERSION,
                               missing="is this a folder written by 's3rt export'?",
                               fix="re-export with this s3rt version")
    try:
        model = model_config_from_dict(data["config"])
        settings = settings_from_dict(data["settings"])
        res = data["resolution"]
        geo = Geometry(height=res["padded_height"], width=res["padded_width"], slots=data["memory"]["slots"])
        graphs, files = {}, {}
        for name, g in data["graphs"].items():
            graphs[name] = GraphSpec(name, tuple(_tensor(t) for t in g["inputs"]),
                                     tuple(_tensor(t) for t in g["outputs"]))
            files[name] = g["file"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path} is incomplete or corrupt ({exc!r}); re-export the model") from exc
    missing = [n for n in graph_names(settings) if n not in graphs]
    if missing:
        raise ModelFormatError(f"{path}: graphs {missing} are not listed")
    absent = [str(root / f) for f in files.values() if not (root / f).is_file()]
    if absent:
        raise ModelFormatError(f"graph files listed in {path} are missing: {', '.join(absent)}")
    known = {"format", "format_version", "s3rt_version", "config", "settings", "resolution", "memory",
             "dynamic_axes", "opset", "checkpoint_sha256", "graphs"}
    return Manifest(root=root, model=model, settings=settings, height=res["height"], width=res["width"],
                    geometry=geo, opset=data["opset"], checkpoint_sha256=data.get("checkpoint_sha256"),
                    graphs=graphs, files=files, s3rt_version=data.get("s3rt_version", "?"),
                    extra={k: v for k, v in data.items() if k not in known})
