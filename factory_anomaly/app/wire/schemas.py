"""The HTTP API's bodies as pydantic models.

Response models are what the routes return. The request models are used *only* for the OpenAPI
document (`openapi_body`): the scoring routes parse raw bytes themselves (`app.readings`), because
pydantic's `list[float]` is slow for 1000-value vectors and coerces what must be refused (booleans,
numeric strings).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests (documentation only) ------------------------------------------------------------------------


class ScoreRequest(_Strict):
    values: list[float] = Field(description="One reading: n_sensors numbers in the model's sensor order.")
    id: str | None = Field(None, description="Optional id echoed in the response and the anomaly log.")


class ExplainRequest(_Strict):
    values: list[float] = Field(description="One reading: n_sensors numbers in the model's sensor order.")
    top_k: int | None = Field(
        10,
        ge=1,
        description="How many sensors to list, 1..n_sensors (a JSON integer); absent or null: 10, or "
        "n_sensors when the model has fewer.",
    )
    id: str | None = Field(None, description="Optional id echoed in the response and the anomaly log.")


class BatchScoreRequest(_Strict):
    vectors: list[list[float]] = Field(description="1..MAX_BATCH readings, each n_sensors numbers.")
    ids: list[str] | None = Field(None, description="Optional: one id per vector, in the same order.")


class ReloadRequest(_Strict):
    version: str | None = Field(None, description="Version to load; absent: the one CURRENT names.")


def openapi_body(
    model: type[BaseModel] | None, *, binary: bool = False, required: bool = True
) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself: the JSON schema of `model` and, with
    `binary`, the octet-stream layout."""
    content: dict[str, Any] = {}
    if model is not None:
        content["application/json"] = {"schema": model.model_json_schema()}
    if binary:
        content["application/octet-stream"] = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "N x n_sensors little-endian float32, row-major (N*n_sensors*4 bytes).",
            }
        }
    return {"requestBody": {"required": required, "content": content}}


# --- responses --------------------------------------------------------------------------------------------


class ScoreResponse(BaseModel):
    id: str | None
    score: float | None = Field(
        description="Mean squared standardised residual; null when not finite (readings near float32's "
        "limits overflow inside the model), which counts as anomalous."
    )
    threshold: float
    is_anomaly: bool = Field(description="score > threshold (or the score is not finite).")
    model_version: str


class SensorExplanation(BaseModel):
    index: int = Field(description="Position in the model's sensor order (0-based).")
    name: str
    attention: float | None = Field(
        description="The explainer's attention on this sensor: its share of the blame (the reading's "
        "attention over all sensors sums to 1); null only when not finite."
    )
    error_share: float | None = Field(
        description="This sensor's sensor_error divided by the sum of the reading's sensor_error (its share "
        "of the reconstruction error); null when that sum is not finite and positive."
    )


class ExplainResponse(BaseModel):
    id: str | None
    score: float | None = Field(
        description="The explainer graph's score: equal to /v1/score's up to float rounding (the explainer "
        "contains the scorer); null when not finite, which counts as anomalous."
    )
    threshold: float
    is_anomaly: bool = Field(description="score > threshold (or the score is not finite), as /v1/score.")
    model_version: str
    sensors: list[SensorExplanation] = Field(
        description="top_k sensors by attention, largest first; ties by index."
    )


class BatchResult(BaseModel):
    id: str | None
    score: float | None
    is_anomaly: bool


class BatchScoreResponse(BaseModel):
    model_version: str
    threshold: float
    results: list[BatchResult] = Field(description="One per vector, in request order.")


class HeldOutCheck(BaseModel):
    rows: int
    expected_false_alarms: float
    false_alarms: int
    false_alarm_rate: float
    false_alarm_rate_ci95: tuple[float, float] = Field(description="Exact (Clopper-Pearson) 95 % interval.")


class ThresholdInfo(BaseModel):
    value: float
    method: str
    target_fpr: float
    n_calibration: int
    procedure: str | None = Field(
        default=None, description="How the held-out normal scores were obtained: cross_fit, recalibrated, ..."
    )
    requested_target_fpr: float | None = Field(
        default=None, description="What training was asked for; differs from target_fpr when the data could "
        "not support it and the tightest supported target was accepted.",
    )  # fmt: skip
    tightest_supported_target_fpr: float | None = None
    threshold_interval_90: tuple[float, float] | None = Field(
        default=None, description="Bootstrap 90 % interval of the threshold value."
    )
    held_out_check: HeldOutCheck | None = Field(
        default=None, description="The calibration procedure's realised false-alarm rate on normal rows it "
        "did not calibrate on, with its interval.",
    )  # fmt: skip


class HeadlineMetrics(BaseModel):
    source: str = Field(description="Which evaluation: 'test' (a separate recording) or 'held_out'.")
    roc_auc: float | None = None
    pr_auc: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    false_alarm_rate: float | None = None


class CalibrationDrift(BaseModel):
    state: Literal["ok", "insufficient_data", "drift"] = Field(
        description="drift: the flag rate is significantly and materially above target_fpr, sustained over "
        "the window (a persistent fault or a changed machine: inspect before recalibrating); "
        "insufficient_data: too few readings yet to check the promise; ok: neither."
    )
    window_s: float = Field(description="The trailing window the counts cover, in seconds.")
    readings: int = Field(description="Readings scored in the window (/v1/score and /v1/score/batch).")
    flags: int = Field(description="Of those, flagged anomalous.")
    expected_flags: float = Field(description="readings x target_fpr: the flags the promise allows.")
    ratio: float | None = Field(description="flags / expected_flags; null without readings.")
    sustained_ratio: float | None = Field(
        description="The same without the window's busiest quarter (a burst of flags is a fault episode, "
        "not drift); the rule tests this part. Null when nothing remains."
    )
    p_value: float = Field(
        description="P(at least that many flags) if the promise held: the one-sided binomial tail of the "
        "part tested."
    )
    since: str | None = Field(description="When the state became drift (ISO 8601 UTC); null unless drift.")
    as_of: str | None = Field(
        description="The end of the last completed bucket, where the state was evaluated (ISO 8601 UTC); "
        "null before the first."
    )
    message: str = Field(description="What the state means here, in words, with the numbers.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    n_sensors: int
    sensor_names: list[str]
    threshold: ThresholdInfo
    provider: str = Field(description="The onnxruntime execution provider in use.")
    created_at: str
    loaded_at: str
    metrics: HeadlineMetrics | None
    explainer: bool = Field(description="Whether this version has an explainer graph (POST /v1/explain).")
    calibration_drift: CalibrationDrift = Field(
        description="Whether this version's flag rate still keeps the false-alarm rate its threshold was "
        "calibrated for (threshold.target_fpr), over a trailing window since it was loaded."
    )


class ReloadResponse(BaseModel):
    name: str
    version: str
    previous_version: str | None
    provider: str
    load_seconds: float


class Health(BaseModel):
    status: str = "ok"


class LoadErrorInfo(BaseModel):
    code: str
    message: str
    requested_version: str | None
    at: str


class Ready(BaseModel):
    status: str = "ready"
    model_name: str
    model_version: str
    provider: str
    last_load_error: LoadErrorInfo | None = Field(
        description="The last reload's failure when it left the previous model serving; null otherwise."
    )

    model_config = ConfigDict(protected_namespaces=())


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. 'wrong_length', 'checksum_mismatch'.")
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status it may answer with an error, described, with the one error
    body every error has (`ErrorResponse`)."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()}
