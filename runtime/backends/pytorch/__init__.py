"""PyTorch backend: the reference, runs the model's per-graph methods eagerly."""
