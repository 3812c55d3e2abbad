"""CUDA device memory and environment checks shared by the GPU backends (TensorRT, ONNX Runtime)."""
