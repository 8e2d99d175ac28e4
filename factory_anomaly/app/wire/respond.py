"""The answers' JSON payloads, built from the service's results; framework-free (the routes send them).

JSON has no NaN or Infinity: a score that is not finite (a reading that overflows inside the graph) is
written as null, and `is_anomaly` is then true.
"""

from __future__ import annotations

from typing import Any

from factory_anomaly.app.model import Assessment, LoadedModel
from factory_anomaly.app.serving.explaining import Explanation
from factory_anomaly.app.wire.numbers import finite_or_none
from factory_anomaly.app.wire.parse import Readings


def score_answer(model: LoadedModel, readings: Readings, assessment: Assessment) -> dict[str, Any]:
    """POST /v1/score's answer for one reading."""
    return {
        "id": readings.ids[0],
        "score": finite_or_none(float(assessment.scores[0])),
        "threshold": model.threshold,
        "is_anomaly": bool(assessment.is_anomaly[0]),
        "model_version": model.version,
    }


def batch_answer(model: LoadedModel, readings: Readings, assessment: Assessment) -> dict[str, Any]:
    """POST /v1/score/batch's answer: one result per reading, in the request's order."""
    results = [
        {"id": ident, "score": finite_or_none(score), "is_anomaly": flag}
        for ident, score, flag in zip(
            readings.ids, assessment.scores.tolist(), assessment.is_anomaly.tolist(), strict=True
        )
    ]
    return {"model_version": model.version, "threshold": model.threshold, "results": results}


def explain_answer(model: LoadedModel, readings: Readings, explanation: Explanation) -> dict[str, Any]:
    """POST /v1/explain's answer: the score and the top_k sensors by attention, each with its error share."""
    return {
        "id": readings.ids[0],
        "score": finite_or_none(explanation.score),
        "threshold": model.threshold,
        "is_anomaly": explanation.is_anomaly,
        "model_version": model.version,
        "sensors": [
            {
                "index": sensor.index,
                "name": sensor.name,
                "attention": finite_or_none(sensor.attention),
                "error_share": sensor.error_share,
            }
            for sensor in explanation.sensors
        ],
    }
