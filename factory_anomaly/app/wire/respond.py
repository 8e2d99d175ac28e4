"""The answers' JSON payloads, built from the service's results; framework-free (the routes send them).

JSON has no NaN or Infinity: a score that is not finite (a reading that overflows inside the graph) is
written as null, and `is_anomaly` is then true.
"""

from __future__ import annotations

from typing import Any

from factory_anomaly.app.model import LoadedModel
from factory_anomaly.app.serving.explaining import Explanation
from factory_anomaly.app.serving.service import Scored
from factory_anomaly.app.wire.numbers import finite_or_none
from factory_anomaly.app.wire.parse import Readings


def score_answer(model: LoadedModel, scored: Scored) -> dict[str, Any]:
    """POST /v1/score's answer for one reading."""
    readings, assessment = scored.readings, scored.assessment
    answer = {
        "id": readings.ids[0],
        "score": finite_or_none(float(assessment.scores[0])),
        "threshold": model.threshold,
        "is_anomaly": bool(assessment.is_anomaly[0]),
        "model_version": model.version,
    }
    return answer | alarm_fields(scored, 0)


def batch_answer(model: LoadedModel, scored: Scored) -> dict[str, Any]:
    """POST /v1/score/batch's answer: one result per reading, in the request's order."""
    readings, assessment = scored.readings, scored.assessment
    results = [
        {"id": ident, "score": finite_or_none(score), "is_anomaly": flag} | alarm_fields(scored, row)
        for row, (ident, score, flag) in enumerate(
            zip(readings.ids, assessment.scores.tolist(), assessment.is_anomaly.tolist(), strict=True)
        )
    ]
    answer = {"model_version": model.version, "threshold": model.threshold, "results": results}
    return answer | ({"asset": scored.asset} if scored.asset is not None else {})


def alarm_fields(scored: Scored, row: int) -> dict[str, Any]:
    """With an asset: the reading's `alarm` (null when the version has no episode rule) and `late` when
    it was older than the asset's latest reading; without one, nothing (the answer is as it always was)."""
    if scored.asset is None:
        return {}
    if scored.alarms is None:
        return {"alarm": None}
    seen = scored.alarms[row]
    alarm = dict(seen.alarm)
    if alarm.get("peak_score") is not None:
        alarm["peak_score"] = finite_or_none(alarm["peak_score"])
    return {"alarm": alarm} | ({"late": True} if seen.late else {})


def explain_answer(model: LoadedModel, readings: Readings, explanation: Explanation) -> dict[str, Any]:
    """POST /v1/explain's answer: the score and the top_k sensors in the operator's order, each with its
    attention, error share, value and where it lies against its training range."""
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
                "value": finite_or_none(sensor.value),
                "expected": None if sensor.expected is None else finite_or_none(sensor.expected),
                "out_of_range": finite_or_none(sensor.out_of_range),
                "direction": sensor.direction,
                "unit": sensor.unit,
            }
            for sensor in explanation.sensors
        ],
    }
