"""The inference runtime: the artifact contract, the backends that run ONNX graphs, the head and the crop. No torch."""
