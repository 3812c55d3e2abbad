"""TensorRT build side: ONNX graph -> lint -> surgery -> engine, as small chained steps."""
