"""Which CUDA driver / runtime / cuda-bindings pairing this process has, in words, for error messages.

The usual first-contact failure of the TensorRT backend is not "no GPU" but a mismatched pairing:
cuda-bindings 13 (CUDA 13 runtime) on a CUDA 12 driver such as JetPack 6 reports
cudaErrorInsufficientDriver. `pairing(cudart)` names the three versions and, on that error,
which extra to install instead. Works with any importable cuda.bindings.runtime, GPU or not.
On Jetson (Tegra) the driver and TensorRT come with JetPack: the hint then never suggests a pip
TensorRT wheel (docs/DEPLOY_TENSORRT.md forbids it there), only cuda-bindings of JetPack's CUDA major.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# files that exist only on NVIDIA Tegra (Jetson) systems
TEGRA_MARKERS = ("etc/nv_tegra_release", "sys/module/tegra_fuse")
# first cuda-bindings release of a CUDA major with the cuda.bindings.runtime module
FIRST_BINDINGS = {"12": "12.6.1"}


def _cuda_version(v: int) -> str:
    """12060 -> "12.6"; 0 -> "none"."""
    return "none" if not v else f"{v // 1000}.{(v % 1000) // 10}"


def bindings_version() -> str:
    try:
        import cuda.bindings
        return str(getattr(cuda.bindings, "__version__", "?"))
    except Exception:  # noqa: BLE001 - informational only
        return "?"


def pairing(cudart: Any) -> dict[str, str]:
    """{"driver", "runtime", "bindings"}: the CUDA driver's API version ("none" without a driver),
    the CUDA runtime version cuda-bindings was built for, and cuda-bindings' own version."""
    _, driver = cudart.cudaDriverGetVersion()
    _, runtime = cudart.cudaRuntimeGetVersion()
    return {"driver": _cuda_version(int(driver or 0)), "runtime": _cuda_version(int(runtime or 0)),
            "bindings": bindings_version()}


def is_tegra(root: str | Path = "/") -> bool:
    """True on a Jetson (L4T/JetPack) system; `root` lets tests point at a fake filesystem."""
    base = Path(root)
    if any((base / marker).exists() for marker in TEGRA_MARKERS):
        return True
    try:
        return b"nvidia,tegra" in (base / "proc/device-tree/compatible").read_bytes()
    except OSError:
        return False


def explain(cudart: Any, err: Any, *, tegra: bool | None = None) -> str:
    """One sentence on the pairing, with the fix when the driver is older than the runtime.

    tegra: whether this is a Jetson (default: detected with `is_tegra()`).
    """
    p = pairing(cudart)
    text = f"CUDA driver {p['driver']}, cuda-bindings {p['bindings']} (CUDA runtime {p['runtime']})"
    name = getattr(err, "name", str(err))
    if "InsufficientDriver" in name or "NoDevice" in name or p["driver"] == "none":
        if p["driver"] == "none":
            text += ": no NVIDIA driver is loaded on this machine"
        else:
            major = p["driver"].split(".")[0]
            if is_tegra() if tegra is None else tegra:
                text += (f": the driver (JetPack's, CUDA {p['driver']}) is older than the runtime; install "
                         f"cuda-bindings {major}.x (pip install \"cuda-bindings>={FIRST_BINDINGS.get(major, major)},"
                         f"<{int(major) + 1}\") and keep "
                         "JetPack's TensorRT (python3-libnvinfer); never pip-install TensorRT on Jetson")
            else:
                text += (f": the driver is older than the runtime; install the matching extra "
                         f"(pip install \"s3rt[tensorrt-cu{major}]\", cuda-bindings {major}.x)")
    return text


__all__ = ["TEGRA_MARKERS", "bindings_version", "explain", "is_tegra", "pairing"]
