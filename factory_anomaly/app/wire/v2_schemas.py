"""The Open Inference Protocol's (V2) bodies as pydantic models, for the OpenAPI document and the
metadata answers. The infer route reads and writes its bytes itself (`wire.v2`), as /v1's scoring
routes do; `V2InferRequest` only documents what it accepts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests (documentation only) ------------------------------------------------------------------------


class V2InputParameters(_Strict):
    binary_data_size: int | None = Field(
        None,
        ge=0,
        description="Triton's binary tensor extension: the input's bytes (N x n_sensors x 4, little-endian "
        "float32) follow the JSON, whose length the Inference-Header-Content-Length header gives.",
    )
    content_type: Literal["np"] | None = Field(
        None, description="MLServer's NumPy codec's mark: the tensor is a plain array, as read here."
    )


class V2Input(_Strict):
    name: Literal["readings"]
    datatype: Literal["FP32"]
    shape: list[int] = Field(min_length=2, max_length=2, description="[N, n_sensors].")
    data: list[float] | list[list[float]] | None = Field(
        None, description="N x n_sensors numbers, row-major: flat, or one list per reading."
    )
    parameters: V2InputParameters | None = None


class V2OutputParameters(_Strict):
    binary_data: bool | None = Field(None, description="Answer this output's bytes after the JSON.")


class V2RequestedOutput(_Strict):
    name: Literal["score", "is_anomaly", "sensor_error"]
    parameters: V2OutputParameters | None = None


class V2RequestParameters(_Strict):
    binary_data_output: bool | None = Field(
        None, description="Every output binary unless it says otherwise (tritonclient's default)."
    )


class V2InferRequest(_Strict):
    id: str | None = Field(None, description="Echoed as the answer's id (else the request id).")
    parameters: V2RequestParameters | None = None
    inputs: list[V2Input] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestedOutput] | None = Field(
        None, description="Absent or empty: score and is_anomaly. sensor_error only when named here."
    )


# --- answers ----------------------------------------------------------------------------------------------


class V2Error(BaseModel):
    error: str = Field(description="'<code>: <message>', the code one of /v1's error codes.")


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any number of readings.")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The version serving now.")
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2OutputTensorParameters(BaseModel):
    binary_data_size: int


class V2OutputTensor(BaseModel):
    name: str
    datatype: Literal["FP32", "BOOL"]
    shape: list[int]
    data: list[float | bool | None] | None = Field(
        None, description="Flat, row-major; a score that is not finite is null."
    )
    parameters: V2OutputTensorParameters | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None
    parameters: dict[str, float | str] = Field(
        description="threshold; with X-Asset, asset and alarms (a JSON string: each reading's alarm as "
        "/v1/score/batch gives it)."
    )
    outputs: list[V2OutputTensor]


def v2_error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a V2 route: each error status, described, with V2's error body."""
    return {status: {"model": V2Error, "description": text} for status, text in descriptions.items()}
