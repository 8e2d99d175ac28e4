"""The baseline: a typical FastAPI + pydantic + torch eager service, serving the same weights as ours.

Written the way a tutorial writes it, on purpose: the model is loaded at import, the request bodies are
pydantic models with `values: list[float]` / `vectors: list[list[float]]`, and each route runs the torch
module under `torch.no_grad()` in FastAPI's thread pool (plain `def` routes). It loads `model.pt` of the
shipped version (`training.checkpoint.load_trained`: the same `AnomalyScorer` weights the ONNX graph was
exported from) and flags a reading when its score exceeds the manifest's threshold, as ours does.

Only `bench.load` uses it (never served in production; torch is in the `train` extra):

    TYPICAL_MODEL_DIR=model_store/factory-ae .venv/bin/python -m uvicorn bench.typical_service:app
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from factory_anomaly.training.checkpoint import load_trained

trained = load_trained(os.environ.get("TYPICAL_MODEL_DIR", "model_store/factory-ae"))
model = trained.scorer  # already in eval mode
threshold = trained.manifest.threshold.value

app = FastAPI(title="Anomaly scoring (typical)")


class ScoreRequest(BaseModel):
    values: list[float]


class ScoreResponse(BaseModel):
    score: float
    is_anomaly: bool


class BatchRequest(BaseModel):
    vectors: list[list[float]]


class BatchResponse(BaseModel):
    results: list[ScoreResponse]


@app.post("/score", response_model=ScoreResponse)
def score(request: ScoreRequest) -> ScoreResponse:
    with torch.no_grad():
        scores, _ = model(torch.tensor([request.values], dtype=torch.float32))
    value = float(scores[0])
    return ScoreResponse(score=value, is_anomaly=value > threshold)


@app.post("/score/batch", response_model=BatchResponse)
def score_batch(request: BatchRequest) -> BatchResponse:
    with torch.no_grad():
        scores, _ = model(torch.tensor(request.vectors, dtype=torch.float32))
    return BatchResponse(
        results=[ScoreResponse(score=value, is_anomaly=value > threshold) for value in scores.tolist()]
    )


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
