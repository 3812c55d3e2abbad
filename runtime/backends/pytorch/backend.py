"""The PyTorch reference backend (eager, CPU or CUDA). Imports torch only when opened."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from s3rt.configs import ModelConfig, get_config
from s3rt.errors import BackendError, ShapeError
from s3rt.optional import torch as torch_mod
from s3rt.runtime.backends.base import Array, Backend

_DTYPES = {"float32": "float32", "int64": "int64", "bool": "bool"}
# fp32: plain eager; fp16/bf16: autocast with the model's fp32 islands (sensory update, summarizer,
# affinity + top-k, aggregation); state buffers stay fp32 either way.
AUTOCAST = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(Backend):
    """Runs the subgraph methods of s3rt.export's S3Model; the tracker's buffers are tensors."""

    name = "torch"
    thread_safe = True      # eager modules hold no per-call state; torch releases the GIL in kernels

    def __init__(self, config: str | ModelConfig | None, *, weights: str | Path | None = None, device: str = "cpu",
                 seed: int = 0, model: Any = None, fused_kernel: bool = True, precision: str = "fp32") -> None:
        super().__init__()
        if config in (None, "auto"):      # --config auto: detected from the checkpoint's keys and shapes
            from s3rt.export.model.weights import detect_config
            config = detect_config(weights)
        self._cfg = get_config(config) if isinstance(config, str) else config
        self._weights = weights
        self._device_name = device
        self._seed = seed
        self._model = model
        self._top_k_default = 30
        self._fused = fused_kernel
        if precision not in AUTOCAST:
            raise BackendError(f"torch backend precision '{precision}' unknown; choose one of {', '.join(AUTOCAST)}")
        self.precision = precision

    @property
    def model_config(self) -> ModelConfig:
        return self._cfg

    def carried_defaults(self) -> list:
        from s3rt.inference_settings import weights_defaults
        return [weights_defaults(self._weights)]

    @property
    def model(self) -> Any:
        self._require_open()
        return self._model

    def _open(self) -> None:
        torch = torch_mod.load()
        if self._device_name.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("--device cuda asked for, but this PyTorch build sees no CUDA GPU "
                               f"(torch {torch.__version__}); use --device cpu")
        self._device = torch.device(self._device_name)
        if self._model is None:
            from s3rt.export.model import build_model
            self._model = build_model(self._cfg, weights=self._weights, seed=self._seed)
        self._model = self._model.to(self._device).eval()
        self.fused_kernel = False
        if self._device.type == "cuda" and self._fused and self._cfg.uses_fused_gather:   # S3 only
            from s3rt.kernels.masked_query_attention.torch_op import is_cuda_kernel_available
            if is_cuda_kernel_available():
                self._model.use_fused_query_gather(True)
                self.fused_kernel = True
        from s3rt.export.model.s3 import run_graph
        self._run_graph = run_graph
        self._torch = torch

    def set_top_k(self, k: int) -> None:
        self._top_k_default = k

    def run(self, graph: str, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        self._require_open()
        from s3rt.runtime.contract import GRAPH_ORDER, LONG_TERM_GRAPHS
        if graph not in GRAPH_ORDER + LONG_TERM_GRAPHS:
            raise BackendError(f"unknown graph '{graph}'; graphs: {', '.join(GRAPH_ORDER + LONG_TERM_GRAPHS)}")
        with self._torch.inference_mode(), self._autocast():
            results = self._run_graph(self._model, graph, list(inputs.values()), top_k=self._top_k_default)
            if len(results) != len(outputs):
                raise BackendError(f"{graph}: model returned {len(results)} outputs, contract has {len(outputs)}")
            for (name, dst), res in zip(outputs.items(), results):
                if tuple(dst.shape) != tuple(res.shape):
                    raise ShapeError(f"{graph}.{name}: expected {tuple(dst.shape)}, got {tuple(res.shape)}")
                dst.copy_(res)

    def _autocast(self):  # noqa: ANN202 - a context manager
        import contextlib
        dtype = AUTOCAST[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return self._torch.autocast(device_type=self._device.type, dtype=getattr(self._torch, dtype))

    def empty(self, shape: tuple[int, ...], dtype: str) -> Array:
        self._require_open()
        return self._torch.zeros(shape, dtype=getattr(self._torch, _DTYPES[dtype]), device=self._device)

    def to_host(self, x: Array) -> np.ndarray:
        x = x.detach()
        return x.cpu().numpy() if x.device.type != "cpu" else x.clone().numpy()

    def upload(self, dst: Array, src: np.ndarray) -> None:
        dst.copy_(self._torch.from_numpy(np.ascontiguousarray(src)))

    def copy_(self, dst: Array, src: Array) -> None:
        dst.copy_(src)

    def add_(self, dst: Array, src: Array) -> None:
        dst.add_(src)

    def fill_(self, dst: Array, value: float) -> None:
        dst.fill_(value)

    def describe(self) -> dict:
        torch = torch_mod.load()
        info = {"backend": self.name, "device": self._device_name, "torch": torch.__version__,
                "config": self._cfg.name, "precision": self.precision, "fused_query_gather": getattr(self, "fused_kernel", False)}
        if self._device_name.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        return info
