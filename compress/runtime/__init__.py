"""Running a model: ONNX export with its parity check, ONNX Runtime sessions, a variant's runnable
artifact, latency, and PyTorch inference with the task metrics."""
