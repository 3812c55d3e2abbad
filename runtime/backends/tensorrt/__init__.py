"""TensorRT backend: engines and their provenance, plugins, validation against ONNX Runtime."""
