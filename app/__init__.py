"""Serving side: FastAPI + onnxruntime over the model store. Never imports torch or `training`."""
