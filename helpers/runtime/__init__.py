"""Lambda-safe runtime: imports only stdlib, numpy, Pillow, onnxruntime (and boto3 lazily)."""
