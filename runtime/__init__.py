"""Torch-free streaming runtime: tracker state, pre/post-processing and backends.

Importing this package must never import torch (a test enforces it).
"""

from s3rt.runtime.contract import GRAPH_ORDER, GraphSpec, TensorSpec, graph_specs

__all__ = ["GRAPH_ORDER", "GraphSpec", "TensorSpec", "graph_specs"]
