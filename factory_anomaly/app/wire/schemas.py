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


_ASSET_BODY = (
    "Optional: the asset, which must equal the X-Asset header (the header is what a proxy routes on and "
    "what turns on alarm episodes)."
)
_TS = "RFC 3339 with a zone (2026-11-26T06:12:00Z) or Unix seconds; absent: the arrival time."


class ScoreRequest(_Strict):
    values: list[float] = Field(description="One reading: n_sensors numbers in the model's sensor order.")
    id: str | None = Field(
        None,
        description="Optional id echoed in the response and the anomaly log; with an asset, a reading whose "
        "id the asset has seen recently is answered again without being counted twice.",
    )
    asset: str | None = Field(None, description=_ASSET_BODY)
    ts: str | float | None = Field(None, description=f"When the reading was taken: {_TS}")


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
    vectors: list[list[float]] = Field(
        description="1..MAX_BATCH readings, each n_sensors numbers; with an asset, in time order."
    )
    ids: list[str] | None = Field(None, description="Optional: one id per vector, in the same order.")
    asset: str | None = Field(None, description=_ASSET_BODY)
    ts: list[str | float] | None = Field(None, description=f"Optional: one time per vector, {_TS}")


class AckRequest(_Strict):
    note: str = Field("", max_length=1000, description="What the operator is doing about it.")
    by: str = Field("operator", min_length=1, max_length=128, description="Who acknowledges.")


class ShelveRequest(_Strict):
    duration_s: float = Field(gt=0, description="How long, in seconds (at most a year).")
    note: str = Field("", max_length=1000, description="Why (e.g. maintenance).")
    by: str = Field("operator", min_length=1, max_length=128, description="Who shelves.")


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


class AlarmSensor(BaseModel):
    index: int = Field(description="Position in the model's sensor order (0-based).")
    name: str
    share: float = Field(description="Its share of the error over the episode's readings above the level.")
    readings: int = Field(
        0, description="How many of the episode's readings above the level named it (how consistently)."
    )
    since: float | None = Field(
        None,
        description="When a reading first named it, Unix seconds (null for an episode journalled "
        "before these were kept).",
    )
    direction: Literal["flat", "noisy"] | None = Field(
        None,
        description="What a channel saw the sensor do: 'flat' (its reading frozen, the stuck channel) or "
        "'noisy' (jitter far above normal); null when only the model's error named it.",
    )


class Alarm(BaseModel):
    id: str | None = Field(description="The open episode's id; null when none is open.")
    state: Literal["none", "pending", "open", "acknowledged", "closing", "shelved"]
    since: float | None = Field(description="Unix seconds of the first reading above the level.")
    readings: int = Field(description="Readings since the episode opened (pending: those above the level).")
    peak_score: float | None
    top_sensors: list[AlarmSensor]


class ScoreResponse(BaseModel):
    id: str | None
    score: float | None = Field(
        description="The model's score (docs: 'Score and threshold'); null when not finite (readings near "
        "float32's limits overflow inside the model), which counts as anomalous."
    )
    threshold: float
    is_anomaly: bool = Field(description="score > threshold (or the score is not finite).")
    model_version: str
    alarm: Alarm | None = Field(
        None,
        description="Only with an X-Asset: the asset's alarm after this reading (null when the version has "
        "no episode rule).",
    )
    late: bool | None = Field(
        None, description="Only when true: the reading is older than the asset's latest, so it moved nothing."
    )


class Acknowledgement(BaseModel):
    at: float
    by: str
    note: str


class Episode(BaseModel):
    id: str
    asset: str
    opened: float = Field(description="Unix seconds of the reading that met the rule.")
    since: float = Field(description="Unix seconds of the first reading above the level in that window.")
    closed: float | None
    closed_by: str | None = Field(description='"quiet", "shelved" or "evicted"; null while open.')
    readings: int
    peak_score: float | None
    evidence: str = Field(description="The rule that opened it, in words.")
    lead_sensor: str | None = Field(None, description="The top sensor when it opened (fixed).")
    top_sensors: list[AlarmSensor]
    acknowledgements: list[Acknowledgement]


class EpisodeList(BaseModel):
    alarms: list[Episode] = Field(description="Newest first.")


class AssetState(BaseModel):
    asset: str
    state: Literal["none", "pending", "open", "acknowledged", "closing", "shelved"]
    alarm_id: str | None
    lead_sensor: str | None = None
    readings: int
    last_reading_ts: float | None
    shelved_until: float | None
    shelve_note: str | None


class AssetList(BaseModel):
    assets: list[AssetState] = Field(description="Most recently active first.")


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
    value: float | None = Field(description="The reading's value for this sensor, as sent.")
    expected: float | None = Field(
        None,
        description="The value the model expected: its reconstruction of the reading, in the sensor's unit; "
        "null for a version whose explainer predates it (retrain, or add an explainer, to get it).",
    )
    out_of_range: float | None = Field(
        description="How far the value lies outside the sensor's training range [sensor_low, sensor_high] "
        "of /v1/model, in training ranges: 0 inside, 2.5 = two and a half ranges beyond its edge."
    )
    direction: Literal["high", "low"] | None = Field(
        description="'high' or 'low': against the training range when the value lies outside it, else "
        "against `expected`; null inside the range when there is no expected value."
    )
    unit: str | None = Field(
        None,
        description="The sensor's unit as the training data named it (value and expected are in it); null "
        "where the data named none.",
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
        description="top_k sensors in the operator's order: out of their training range first (furthest "
        "first), then by error share (largest first); ties by index. Attention is reported, not used to "
        "order."
    )


class BatchResult(BaseModel):
    id: str | None
    score: float | None
    is_anomaly: bool
    alarm: Alarm | None = Field(None, description="Only with an X-Asset, as in /v1/score.")
    late: bool | None = Field(None, description="Only when true, as in /v1/score.")


class BatchScoreResponse(BaseModel):
    model_version: str
    threshold: float
    asset: str | None = Field(None, description="Only with an X-Asset.")
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


class AlarmRule(BaseModel):
    k: int = Field(description="An episode opens when k of an asset's last n readings score above `level`.")
    n: int
    level: float
    close_after: int = Field(description="Readings without one above the level before an episode closes.")
    reading_period_s: float = Field(description="The reading period the target holds at.")
    target_episodes_per_day: float = Field(description="False episodes per asset-day on normal data.")
    method: str
    episodes_per_day_on_normal_scores: float | None = Field(
        None, description="What the rule gave on the out-of-fold normal scores it was fitted on."
    )
    episodes_per_day_ci95: list[float] | None = None
    days_covered: float | None = Field(None, description="Days of normal readings the level was fitted on.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    n_sensors: int
    sensor_names: list[str]
    sensor_units: list[str] | None = Field(
        None,
        description='Each sensor\'s unit, in sensor_names order, as the training data named it ("" where it '
        "named none); null when the version was trained without units (`train --sensor-units`).",
    )
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
    alarms: AlarmRule | None = Field(
        None, description="The per-asset episode rule (null: a version from before alarm episodes)."
    )


class ReloadResponse(BaseModel):
    name: str
    version: str
    previous_version: str | None
    provider: str
    load_seconds: float

    @classmethod
    def of(cls, swap: Any) -> ReloadResponse:
        """What a swap (`ModelRegistry.load`'s `Swap`) answers: the version now serving and the one before."""
        model = swap.model
        return cls(name=model.manifest.name, version=model.version, previous_version=swap.previous_version,
                   provider=model.provider, load_seconds=model.load_seconds)  # fmt: skip


class ShadowAgreement(BaseModel):
    both: int = Field(description="Readings both versions flagged.")
    serving_only: int = Field(description="Readings the serving version flagged and the shadow did not.")
    shadow_only: int = Field(description="Readings the shadow flagged and the serving version did not.")
    neither: int


class ShadowDropped(BaseModel):
    queue_full: int = Field(description="Readings not shadowed: SHADOW_QUEUE_ROWS were already waiting.")
    failed: int = Field(description="Readings whose shadow run failed (logged).")


class ShadowFlagRate(BaseModel):
    serving: float | None = Field(description="Share of the shadowed readings the serving version flagged.")
    shadow: float | None = Field(description="Share of the same readings the shadow flagged.")


class ShadowStatus(BaseModel):
    version: str | None = Field(description="The shadow version; null while none is loaded.")
    loaded_at: str | None
    threshold: float | None
    target_fpr: float | None = Field(description="The false-alarm rate the shadow's threshold promises.")
    readings: int = Field(description="Readings the shadow scored since it was loaded.")
    agreement: ShadowAgreement
    dropped: ShadowDropped
    flag_rate: ShadowFlagRate
    pending: int = Field(description="Readings waiting for the shadow now.")


class ShadowRequest(_Strict):
    version: str = Field(description="The version to load as the shadow.")


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
