"""Running a model: ONNX Runtime sessions, latency, PyTorch inference and task metrics."""
