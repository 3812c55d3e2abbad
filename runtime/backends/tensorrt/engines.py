"""engine_manifest.json beside built TensorRT engines: what they were built for, torch- and TensorRT-free.

`s3rt build` writes one serialized engine per graph (``engines/<graph>.engine``) and this
manifest. A serialized TensorRT engine only runs on the TensorRT version and the GPU
architecture it was built with (NVIDIA's rule; no version- or hardware-compatibility mode is
used), so the manifest records both, plus the precision, the sha256 of every ONNX file and the
plugin libraries (path + sha256) the engines need, and `check_compatible` refuses a foreign
engine with a message naming both sides. The TensorRT version is the loaded libnvinfer's, all
four numbers (major.minor.patch.build); the Python bindings' version is recorded beside it.

Also here, as pure functions so they can be tested without TensorRT: the optimisation-profile
shapes (min, opt, max) of every dynamic graph input, derived from the export's manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from s3rt import __version__
from s3rt.errors import BackendError, ConfigError, ModelFormatError
from s3rt.runtime.contract import GRAPH_ORDER, GraphSpec
from s3rt.runtime.manifest import Manifest, file_sha256, read_versioned_json

FORMAT = "s3rt-trt-engines"
FORMAT_VERSION = 1
FILENAME = "engine_manifest.json"
PRECISIONS = ("fp32", "fp16")
REBUILD_HINT = "rebuild with `s3rt build --model DIR`"

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]      # input name -> (min, opt, max)


# -- machines ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MachineInfo:
    """What an engine is tied to: TensorRT version and GPU (name, compute capability "8.7")."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    cuda_runtime: str | None = None

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (sm {self.compute_capability})"


def trt_version_key(version: str) -> tuple[int, ...]:
    """major.minor.patch.build of a TensorRT version string ("10.3.0.30" -> (10, 3, 0, 30)).

    Engines are refused across any of the four: a serialized engine is only guaranteed to load
    in the exact TensorRT build that wrote it. A missing build number reads as 0.
    """
    parts = []
    for p in (version.split(".") + ["0"] * 4)[:4]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# -- the manifest ----------------------------------------------------------------------------------
@dataclass
class EngineEntry:
    file: str                          # relative to the engine folder
    onnx_file: str                     # relative to the model folder
    onnx_sha256: str
    build_seconds: float | None = None
    profile: dict[str, list[list[int]]] = field(default_factory=dict)   # input -> [min, opt, max]


@dataclass
class EngineManifest:
    """One `s3rt build` output folder. `root` is the engine folder, `model_dir` the ONNX export."""

    root: Path
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    engines: dict[str, EngineEntry]
    s3rt_version: str = __version__
    fp16_mode: str | None = None       # "typed" (ONNX-level casts) or "constraints" (layer precisions)
    workspace_mib: int | None = None
    max_objects: int | None = None
    max_buckets: int | None = None
    cuda_runtime: str | None = None
    model_dir: str | None = None       # as given at build time (informational)
    fp32_layers: dict[str, list[str]] = field(default_factory=dict)   # graph -> ONNX nodes kept fp32
    plugins: list[dict] = field(default_factory=list)     # [{"path", "sha256"}] plugin libraries loaded at build
    bindings_version: str | None = None                   # tensorrt.__version__ (may differ from the library)
    extra: dict = field(default_factory=dict)

    @property
    def machine(self) -> MachineInfo:
        return MachineInfo(self.tensorrt_version, self.gpu_name, self.compute_capability, self.cuda_runtime)

    def path(self, graph: str) -> Path:
        if graph not in self.engines:
            raise ModelFormatError(f"{self.root / FILENAME}: no engine for graph '{graph}' "
                                   f"(has {', '.join(self.engines) or 'none'}); {REBUILD_HINT}")
        return self.root / self.engines[graph].file

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "s3rt_version": self.s3rt_version,
            "tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability, "cuda_runtime": self.cuda_runtime,
            "precision": self.precision, "fp16_mode": self.fp16_mode, "workspace_mib": self.workspace_mib,
            "max_objects": self.max_objects, "max_buckets": self.max_buckets, "model_dir": self.model_dir,
            "engines": {g: asdict(self.engines[g]) for g in GRAPH_ORDER if g in self.engines},
            "fp32_layers": self.fp32_layers, "plugins": self.plugins, "bindings_version": self.bindings_version,
            **self.extra,
        }

    def save(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / FILENAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        return path


_KNOWN = {"format", "format_version", "s3rt_version", "tensorrt_version", "gpu_name", "compute_capability",
          "cuda_runtime", "precision", "fp16_mode", "workspace_mib", "max_objects", "max_buckets", "model_dir",
          "engines", "fp32_layers", "plugins", "bindings_version"}


def load_engine_manifest(engine_dir: str | Path, *, check_files: bool = True) -> EngineManifest:
    """Read DIR/engine_manifest.json (written by `s3rt build`)."""
    root = Path(engine_dir)
    path = root / FILENAME
    data = read_versioned_json(path, fmt=FORMAT, version=FORMAT_VERSION,
                               missing="build engines first with `s3rt build --model MODEL_DIR`", fix=REBUILD_HINT)
    try:
        engines = {g: EngineEntry(**e) for g, e in data["engines"].items()}
        manifest = EngineManifest(
            root=root, tensorrt_version=str(data["tensorrt_version"]), gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]), precision=str(data["precision"]),
            engines=engines, s3rt_version=data.get("s3rt_version", "?"), fp16_mode=data.get("fp16_mode"),
            workspace_mib=data.get("workspace_mib"), max_objects=data.get("max_objects"),
            max_buckets=data.get("max_buckets"), cuda_runtime=data.get("cuda_runtime"),
            model_dir=data.get("model_dir"), fp32_layers=data.get("fp32_layers") or {},
            plugins=list(data.get("plugins") or []), bindings_version=data.get("bindings_version"),
            extra={k: v for k, v in data.items() if k not in _KNOWN})
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path} is incomplete or corrupt ({exc!r}); {REBUILD_HINT}") from exc
    missing = [g for g in GRAPH_ORDER if g not in manifest.engines]
    if missing:
        raise ModelFormatError(f"{path}: no engines for graphs {missing}; {REBUILD_HINT}")
    if check_files:
        absent = [str(root / e.file) for e in manifest.engines.values() if not (root / e.file).is_file()]
        if absent:
            raise ModelFormatError(f"engine files listed in {path} are missing: {', '.join(absent)}; {REBUILD_HINT}")
    return manifest


# -- compatibility ---------------------------------------------------------------------------------
def check_compatible(manifest: EngineManifest, machine: MachineInfo, *, precision: str | None = None,
                     allow_other_gpu: bool = False) -> None:
    """Raise BackendError unless engines built as `manifest` can run on `machine`.

    Checked: TensorRT major.minor.patch.build (of the loaded library), GPU compute capability, GPU name (unless
    `allow_other_gpu`: same architecture, different model; TensorRT then runs tactics tuned for
    another GPU) and, when asked for, the precision.
    """
    built, here = manifest.machine, machine
    problems = []
    if trt_version_key(built.tensorrt_version) != trt_version_key(here.tensorrt_version):
        problems.append(f"TensorRT {built.tensorrt_version} vs {here.tensorrt_version}")
    if built.compute_capability != here.compute_capability:
        problems.append(f"compute capability {built.compute_capability} vs {here.compute_capability}")
    if built.gpu_name != here.gpu_name and not allow_other_gpu:
        problems.append(f"GPU '{built.gpu_name}' vs '{here.gpu_name}'")
    if problems:
        raise BackendError(f"engines in {manifest.root} were built for {built.describe()}, this machine is "
                           f"{here.describe()} ({'; '.join(problems)}); {REBUILD_HINT} on this machine")
    if precision is not None and precision != manifest.precision:
        raise BackendError(f"engines in {manifest.root} were built with precision {manifest.precision}, "
                           f"{precision} was asked for; {REBUILD_HINT} --precision {precision}")


def check_onnx_hashes(manifest: EngineManifest, model: Manifest) -> None:
    """Raise BackendError if an ONNX file of the export changed since its engine was built."""
    stale = []
    for graph, entry in manifest.engines.items():
        onnx_path = model.root / entry.onnx_file
        if not onnx_path.is_file():
            stale.append(f"{graph} ({onnx_path} missing)")
        elif file_sha256(onnx_path) != entry.onnx_sha256:
            stale.append(graph)
    if stale:
        raise BackendError(f"engines in {manifest.root} were built from a different export than {model.root} "
                           f"(changed: {', '.join(stale)}); {REBUILD_HINT}")


# -- optimisation profiles ------------------------------------------------------------------------
def axis_ranges(max_objects: int, max_buckets: int, *, opt_objects: int = 2,
                opt_buckets: int = 1) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per symbolic axis.

    N: 1 .. max_objects, tuned at min(2, max): most tracked clips (DAVIS-2017 val averages ~2
    objects) have one to three objects, and TensorRT picks its tactics for `opt`.
    NB: 1 .. max_buckets, tuned at 1 (objects usually all start on the first frame).
    "N+1" (background + objects) follows N.
    """
    if max_objects < 1 or max_buckets < 1:
        raise ConfigError(f"max_objects and max_buckets must be >= 1, got {max_objects}, {max_buckets}")
    n_opt = max(1, min(opt_objects, max_objects))
    nb_opt = max(1, min(opt_buckets, max_buckets))
    return {"N": (1, n_opt, max_objects), "NB": (1, nb_opt, max_buckets),
            "N+1": (2, n_opt + 1, max_objects + 1)}


def graph_profile(spec: GraphSpec, ranges: dict[str, tuple[int, int, int]]) -> Profile:
    """Profile of one graph: only inputs with a symbolic axis; static inputs need none."""
    profile: Profile = {}
    for t in spec.inputs:
        if all(isinstance(d, int) for d in t.shape):
            continue
        dims: list[tuple[int, int, int]] = []
        for d in t.shape:
            if isinstance(d, int):
                dims.append((d, d, d))
            elif d in ranges:
                dims.append(ranges[d])
            else:
                raise ModelFormatError(f"{spec.name}.{t.name}: unknown symbolic axis '{d}' "
                                       f"(known: {', '.join(ranges)})")
        profile[t.name] = tuple(tuple(x[i] for x in dims) for i in range(3))   # type: ignore[assignment]
    return profile


def optimization_profiles(manifest: Manifest, *, max_objects: int | None = None,
                          opt_objects: int = 2) -> dict[str, Profile]:
    """Profiles of all six graphs: {graph: {input: (min, opt, max)}} from an export's manifest.

    `max_objects` may lower (never raise) the export's capacity: the graphs' memory buffers were
    sized for the export's max_objects.
    """
    cap = manifest.settings.max_objects
    if max_objects is None:
        max_objects = cap
    elif max_objects < 1 or max_objects > cap:
        raise ConfigError(f"--max-objects {max_objects}: must be between 1 and the export's max_objects={cap}; "
                          "re-export with a larger --max-objects to build for more")
    ranges = axis_ranges(max_objects, manifest.settings.max_buckets, opt_objects=opt_objects)
    return {name: graph_profile(manifest.graphs[name], ranges) for name in GRAPH_ORDER}
