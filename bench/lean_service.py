"""The lean reference (issue 17): the least a competent engineer would write to serve the same model.

One file, pinned before any optimisation of ours started, so "ours ≥ lean" means our features cost nothing
a user would notice. FastAPI on the same uvicorn + uvloop + httptools stack as ours; onnxruntime on the
shipped version's `model.onnx` with the service's session settings (ORT_ENABLE_ALL, sequential, 1 intra-op
and 1 inter-op thread: `app.config.Settings`' defaults); orjson in and out; the same checks of a reading
(a list of exactly n numbers, finite in float32). No project middleware, no metrics, no request ids, no
logs, no auth, no model registry: the model is loaded at import. It runs the graph on the event loop, as
the fastest single-process app does (one core; a thread hop would only add latency).

    LEAN_MODEL_DIR=model_store/factory-ae/<version> .venv/bin/python -m uvicorn bench.lean_service:app \
        --no-access-log

Only `bench.load` serves it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

VERSION = Path(os.environ.get("LEAN_MODEL_DIR", "model_store/factory-ae"))
if (VERSION / "CURRENT").is_file():
    VERSION = VERSION / (VERSION / "CURRENT").read_text().strip()
MANIFEST = json.loads((VERSION / "manifest.json").read_text())
N = int(MANIFEST["n_sensors"])
THRESHOLD = float(MANIFEST["threshold"]["value"])

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
# LEAN_PROVIDER=cuda (bench.load --provider cuda): onnxruntime's CUDA provider first, as ours takes it
CUDA_FIRST = os.environ.get("LEAN_PROVIDER") == "cuda"
PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"] if CUDA_FIRST else ["CPUExecutionProvider"]
session = ort.InferenceSession(str(VERSION / "model.onnx"), options, providers=PROVIDERS)
INPUT = session.get_inputs()[0].name

app = FastAPI(title="Anomaly scoring (lean)")


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


def _rows(value: object, batch: bool) -> np.ndarray | str:
    """float32 [rows, N] from parsed JSON (one reading, or a list of them), or what is wrong with it."""
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return "values must be numbers"
    if x.shape[-1:] != (N,) or x.ndim != (2 if batch else 1) or x.size == 0:
        return f"expected {N} values per reading"
    if not np.isfinite(x).all():
        return "values must be finite in float32"
    return x if batch else x.reshape(1, N)


@app.post("/score")
async def score(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
        values = body["values"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return _error(400, "a JSON object with 'values' is required")
    x = _rows(values, batch=False)
    if isinstance(x, str):
        return _error(422, x)
    s = float(session.run(None, {INPUT: x})[0][0])
    return Response(orjson.dumps({"score": s, "is_anomaly": s > THRESHOLD}), media_type="application/json")


@app.post("/score/batch")
async def score_batch(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
        vectors = body["vectors"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return _error(400, "a JSON object with 'vectors' is required")
    x = _rows(vectors, batch=True)
    if isinstance(x, str):
        return _error(422, x)
    scores = session.run(None, {INPUT: x})[0]
    results = [{"score": float(s), "is_anomaly": float(s) > THRESHOLD} for s in scores]
    return Response(orjson.dumps({"results": results}), media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
