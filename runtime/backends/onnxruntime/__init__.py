"""ONNX Runtime backend: sessions, IO binding into the tracker's buffers, provider placement."""
