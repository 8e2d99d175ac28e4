"""The inference core: a verified artifact loaded into an onnxruntime session, and scoring with it.

Framework-free (no FastAPI): `load_model` is blocking (hashing, session creation, warm-up) and runs in a
worker thread; `InferencePool` runs a request's CPU work (parsing, `LoadedModel.assess`) on dedicated
threads so the event loop never waits on it (onnxruntime's `run` releases the GIL).

The scorer graph (see `training/export.py`): input float32 [N, n_sensors] raw readings in the manifest's
sensor order; outputs `score` float32 [N] and `sensor_error` float32 [N, n_sensors]. A reading is anomalous
when score > threshold, compared in float64 as training calibrated it.

The optional explainer graph (manifest role "explainer", `explainer.onnx`; see `training/explainer.py`) takes
the same input and outputs `attention` float32 [N, n_sensors] (non-negative, rows sum to 1), `score` and
`sensor_error` as the scorer's (it contains the frozen scorer). A version that has one gets it loaded,
checked and warmed up with the scorer, or not at all; `app.explaining` turns its outputs into answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import ExplainerUnavailable
from factory_anomaly.artifact import (
    EXPLAINER,
    SCORER,
    ArtifactError,
    GraphSpec,
    Manifest,
    iso_utc,
    verify_artifact,
)

T = TypeVar("T")
log = logging.getLogger("app.scoring")
anomaly_log = logging.getLogger("app.anomaly")

SCORE_OUTPUT = "score"
SENSOR_ERROR_OUTPUT = "sensor_error"
ATTENTION_OUTPUT = "attention"
OUTPUTS = (SCORE_OUTPUT, SENSOR_ERROR_OUTPUT)
EXPLAINER_OUTPUTS = (ATTENTION_OUTPUT, SCORE_OUTPUT, SENSOR_ERROR_OUTPUT)
_OUTPUT_RANKS = {ATTENTION_OUTPUT: 2, SCORE_OUTPUT: 1, SENSOR_ERROR_OUTPUT: 2}  # [N, n] or [N]
WARMUP_ROWS = (1, 64)
"""Batch sizes run once at load, so the first requests do not pay for allocation and kernel selection."""
EXPLAINER_WARMUP_ROWS = (1,)
"""The explainer answers one reading per request."""
ATTENTION_SUM_TOLERANCE = 1e-3
"""How far a warm-up row's attention may sum from 1 (float32 softmax over n sensors) before the explainer
graph is refused as broken."""

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "float16": "tensor(float16)"}


class ModelLoadError(ArtifactError):
    """A verified artifact that still cannot be served; codes `provider_unavailable`, `model_invalid`
    (onnxruntime cannot load the graph), `graph_mismatch` (the graph is not what the manifest or the
    service contract says) and `warmup_failed`. An ArtifactError, so callers handle both alike."""


@dataclass(frozen=True)
class Assessment:
    """The outcome for N readings: `scores` float32 [N], `is_anomaly` bool [N], for each anomalous row
    the top sensors by `sensor_error` as (name, value), largest first, and how long the graph ran."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    top_sensors: dict[int, list[tuple[str, float]]]
    run_seconds: float = 0.0  # wall time of the onnxruntime run that produced the scores


@dataclass(frozen=True)
class LoadedModel:
    """A verified manifest, its warmed-up onnxruntime session(s) and the provider it actually runs on.

    Immutable: a reload builds a new one, and a request keeps the one it started with. `explainer` is the
    explainer graph's session when the version has one (same options and provider as `session`).
    """

    manifest: Manifest
    path: Path
    session: ort.InferenceSession
    provider: str  # the execution provider actually used, e.g. "CPUExecutionProvider"
    input_name: str
    loaded_at: str  # ISO 8601 UTC
    load_seconds: float  # verification + session creation + warm-up
    explainer: ort.InferenceSession | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return self.manifest.sensor_names

    @property
    def has_explainer(self) -> bool:
        return self.explainer is not None

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x float32 [N, n_sensors] -> (score float32 [N], sensor_error float32 [N, n_sensors])."""
        self._check_input(x)
        score, sensor_error = self.session.run(list(OUTPUTS), {self.input_name: x})
        return score, sensor_error

    def require_explainer(self) -> ort.InferenceSession:
        """The explainer graph's session, or 404 `explainer_unavailable` saying how to get one."""
        if self.explainer is None:
            raise ExplainerUnavailable(
                f"model version {self.version} has no explainer graph; retrain with the explainer "
                "(`python -m factory_anomaly.training train` trains it unless --no-explainer; "
                "`python -m factory_anomaly.training explain` "
                "adds one to an existing version), then reload"
            )
        return self.explainer

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x float32 [N, n_sensors] -> the explainer graph's (attention float32 [N, n_sensors], score
        float32 [N], sensor_error float32 [N, n_sensors]); `explainer_unavailable` without an explainer."""
        session = self.require_explainer()
        self._check_input(x)
        input_name = self.manifest.graphs[EXPLAINER].inputs[0].name  # checked against the session at load
        attention, score, sensor_error = session.run(list(EXPLAINER_OUTPUTS), {input_name: x})
        return attention, score, sensor_error

    @cached_property
    def _training_range(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray(self.manifest.sensor_low, dtype=np.float32),
            np.asarray(self.manifest.sensor_high, dtype=np.float32),
        )

    def out_of_range_share(self, x: np.ndarray) -> np.ndarray:
        """x float32 [N, n_sensors] -> float64 [N]: each reading's share of sensors strictly outside the
        training range [sensor_low, sensor_high] of the manifest (input drift; 0 for a typical reading)."""
        low, high = self._training_range
        return np.count_nonzero((x < low) | (x > high), axis=1) / x.shape[1]

    def _check_input(self, x: np.ndarray) -> None:
        n = self.manifest.n_sensors
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != n or len(x) == 0:
            raise ValueError(f"expected float32 [N >= 1, {n}], got {x.dtype} {list(x.shape)}")

    def assess(self, x: np.ndarray, top_k: int) -> Assessment:
        """Score `x` and name the `top_k` sensors of each anomalous row (score > threshold, or not finite)."""
        started = time.perf_counter()
        scores, sensor_error = self.score(x)
        return self.assess_outputs(scores, sensor_error, top_k, time.perf_counter() - started)

    def assess_outputs(
        self, scores: np.ndarray, sensor_error: np.ndarray, top_k: int, run_seconds: float = 0.0
    ) -> Assessment:
        """The threshold rule on graph outputs already computed (the scorer's or the explainer's): scores
        float32 [N], sensor_error float32 [N, n_sensors]; names the `top_k` sensors of each anomalous row
        by sensor_error. `run_seconds` is the graph's run time, passed through for the metrics."""
        # Compared in float64 (a float32 comparison would round the threshold), and written as "not <=" so
        # that a NaN score (readings near float32's limits overflow inside the graph) counts as anomalous.
        is_anomaly = ~(scores.astype(np.float64) <= self.threshold)
        top: dict[int, list[tuple[str, float]]] = {}
        if top_k > 0:
            for row in np.flatnonzero(is_anomaly).tolist():
                errors = sensor_error[row]
                order = np.argsort(-np.nan_to_num(errors, nan=np.inf), kind="stable")[:top_k]
                top[row] = [(self.sensor_names[j], float(errors[j])) for j in order.tolist()]
        return Assessment(scores, is_anomaly, top, run_seconds)


def log_anomalies(model: LoadedModel, ids: Sequence[str | None], assessment: Assessment) -> None:
    """One log line per anomalous reading (the request id comes from the logging context)."""
    for row in np.flatnonzero(assessment.is_anomaly).tolist():
        anomaly_log.warning(
            "anomalous reading",
            extra={
                "reading_id": ids[row],
                "row": row,
                "score": finite_or_none(float(assessment.scores[row])),
                "threshold": model.threshold,
                "model_version": model.version,
                "top_sensors": [
                    {"sensor": name, "sensor_error": finite_or_none(value)}
                    for name, value in assessment.top_sensors.get(row, [])
                ],
            },
        )


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or Infinity: a non-finite number (or None) is written as null."""
    return value if value is not None and math.isfinite(value) else None


class InferencePool:
    """Dedicated threads for request CPU work (body parsing and onnxruntime), so the event loop never
    waits on it and a burst of scoring never starves the loop's default pool (used for reloads)."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ort")

    async def run(self, fn: Callable[[], T], *, inline: bool = False) -> T:
        """`fn()` on a pool thread (or here, when `inline`: small work costs less than the hop); its
        exception, if any, is raised here."""
        if inline:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        """Wait for running inferences, then stop the threads."""
        self._executor.shutdown(wait=True)


# --- loading ----------------------------------------------------------------------------------------------


def select_providers(choice: str, available: Sequence[str]) -> list[str]:
    """onnxruntime providers to ask for, in order; `cuda` without CUDA is `provider_unavailable`."""
    if choice == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if choice == "cuda":
        raise ModelLoadError(
            "provider_unavailable",
            f"PROVIDER=cuda but onnxruntime {ort.__version__} offers no {CUDA} "
            f"(available: {', '.join(available)}); install onnxruntime-gpu on a CUDA host, "
            f"or set ANOMALY_PROVIDER=auto or cpu",
        )
    return [CPU]


def load_model(version_dir: Path, settings: Settings) -> LoadedModel:
    """Verify `version_dir`, open its scorer graph (and its explainer graph when the manifest lists one),
    check them against the manifest and the service's contract, and warm them up.

    Blocking; raises ArtifactError (ModelLoadError included) with one precise code. A broken explainer
    fails the whole load: a version is served complete or not at all.
    """
    started = time.perf_counter()
    manifest = verify_artifact(version_dir)
    spec = manifest.graphs[SCORER]
    _check_contract(spec, manifest.n_sensors, SCORER, OUTPUTS)
    explainer_spec = manifest.graphs.get(EXPLAINER)
    if explainer_spec is not None:
        _check_contract(explainer_spec, manifest.n_sensors, EXPLAINER, EXPLAINER_OUTPUTS)
    providers = select_providers(settings.provider, ort.get_available_providers())
    options = _session_options(settings)
    session, used = _open_session(version_dir, manifest, spec, options, providers, settings)
    explainer = None
    if explainer_spec is not None:
        explainer, _ = _open_session(version_dir, manifest, explainer_spec, options, providers, settings)
    model = LoadedModel(
        manifest=manifest,
        path=version_dir,
        session=session,
        provider=used,
        input_name=spec.inputs[0].name,
        loaded_at=iso_utc(datetime.now(UTC)),
        load_seconds=0.0,
        explainer=explainer,
    )
    _warm_up(model)
    if explainer is not None:
        _warm_up_explainer(model)
    return replace(model, load_seconds=round(time.perf_counter() - started, 4))


def _session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not JSON lines
    return options


def _open_session(
    version_dir: Path,
    manifest: Manifest,
    spec: GraphSpec,
    options: ort.SessionOptions,
    providers: list[str],
    settings: Settings,
) -> tuple[ort.InferenceSession, str]:
    """An onnxruntime session on exactly the bytes the manifest vouches for, its inputs and outputs checked
    against `spec`; returns it with the provider it actually runs on."""
    # Hash the bytes onnxruntime is given: what runs is exactly what the manifest vouches for, even if the
    # file changed after verify_artifact read it.
    graph_bytes = (version_dir / spec.file).read_bytes()
    if hashlib.sha256(graph_bytes).hexdigest() != manifest.files[spec.file]:
        raise ArtifactError("checksum_mismatch", f"{spec.file}: changed while the version was being loaded")
    try:
        session = ort.InferenceSession(graph_bytes, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise ModelLoadError("model_invalid", f"{spec.file}: onnxruntime cannot load it: {exc}") from exc
    used: str = session.get_providers()[0]
    if settings.provider == "cuda" and used != CUDA:
        raise ModelLoadError(
            "provider_unavailable",
            f"PROVIDER=cuda but the session of {spec.file} runs on {used}: CUDA failed to initialise",
        )
    if providers[0] != used:
        log.warning("asked onnxruntime for %s, running %s on %s", providers[0], spec.file, used)
    _check_session(session, spec)
    return session, used


def _mismatch(message: str) -> ModelLoadError:
    return ModelLoadError("graph_mismatch", message)


def _check_contract(spec: GraphSpec, n: int, role: str, outputs: tuple[str, ...]) -> None:
    """The graph the service needs in `role`: one input [N, n] (its dtype and width are the manifest's
    consistency checks) and each of `outputs` float32, [N] for score, [N, n] for the others."""
    if len(spec.inputs) != 1:
        raise _mismatch(f"the {role} graph must take one input, the manifest lists {len(spec.inputs)}")
    declared = {t.name: t for t in spec.outputs}
    for name in outputs:
        rank = _OUTPUT_RANKS[name]
        tensor = declared.get(name)
        if tensor is None:
            raise _mismatch(f"the {role} graph needs an output {name!r}; the manifest lists {list(declared)}")
        if tensor.dtype != "float32" or len(tensor.shape) != rank or (rank == 2 and tensor.shape[1] != n):
            expected = "[N]" if rank == 1 else f"[N, {n}]"
            found = f"{tensor.dtype} {list(tensor.shape)}"
            raise _mismatch(
                f"the {role} graph's output {name!r} must be float32 {expected}, the manifest says {found}"
            )


def _check_session(session: ort.InferenceSession, spec: GraphSpec) -> None:
    """onnxruntime's view of the graph's inputs and outputs agrees with the manifest's."""
    for kind, actual, promised in (
        ("inputs", session.get_inputs(), spec.inputs),
        ("outputs", session.get_outputs(), spec.outputs),
    ):
        seen = [(t.name, t.type, _dims(t.shape)) for t in actual]
        expected = [(t.name, _ORT_TYPES.get(t.dtype, t.dtype), _dims(t.shape)) for t in promised]
        if seen != expected:
            raise _mismatch(f"{spec.file}: the graph's {kind} are {seen}, the manifest promises {expected}")


def _dims(shape: Sequence[int | str | None]) -> list[int | str]:
    """Fixed dims as ints, any symbolic or unknown dim as "?" (exporters choose their own symbol names)."""
    return [d if isinstance(d, int) else "?" for d in shape]


def _mid_range(manifest: Manifest, rows: int) -> np.ndarray:
    """float32 [rows, n_sensors]: every sensor at the middle of its training range."""
    middle = (np.asarray(manifest.sensor_low) + np.asarray(manifest.sensor_high)) / 2
    return np.ascontiguousarray(np.broadcast_to(middle.astype(np.float32), (rows, manifest.n_sensors)))


def _warm_up(model: LoadedModel) -> None:
    """Run each WARMUP_ROWS batch of mid-range readings; the outputs must have the promised shapes and
    finite scores, or the model is not served."""
    n = model.manifest.n_sensors
    for rows in WARMUP_ROWS:
        x = _mid_range(model.manifest, rows)
        try:
            score, sensor_error = model.score(x)
        except Exception as exc:
            raise ModelLoadError("warmup_failed", f"warm-up on {rows} rows failed: {exc}") from exc
        shapes = (np.shape(score), np.shape(sensor_error))
        finite = bool(np.isfinite(score).all())
        if shapes != ((rows,), (rows, n)) or not finite:
            raise ModelLoadError(
                "warmup_failed", f"warm-up on {rows} rows gave shapes {shapes}, all scores finite: {finite}"
            )


def _warm_up_explainer(model: LoadedModel) -> None:
    """Run the explainer on EXPLAINER_WARMUP_ROWS mid-range readings: the promised shapes, a finite score,
    and attention that is a distribution over the sensors (finite, non-negative, summing to 1)."""
    n = model.manifest.n_sensors
    file = model.manifest.graphs[EXPLAINER].file
    for rows in EXPLAINER_WARMUP_ROWS:
        try:
            attention, score, sensor_error = model.explain(_mid_range(model.manifest, rows))
        except Exception as exc:
            raise ModelLoadError("warmup_failed", f"{file}: warm-up on {rows} rows failed: {exc}") from exc
        shapes = (np.shape(attention), np.shape(score), np.shape(sensor_error))
        problem = None
        if shapes != ((rows, n), (rows,), (rows, n)):
            problem = f"gave shapes {shapes}"
        elif not np.isfinite(score).all():
            problem = f"gave a score that is not finite ({score.tolist()})"
        elif not (np.isfinite(attention).all() and (attention >= 0).all()):
            problem = "gave attention that is negative or not finite"
        elif not np.allclose(
            attention.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=ATTENTION_SUM_TOLERANCE
        ):
            problem = f"gave attention rows summing to {attention.sum(axis=1).tolist()}, not 1"
        if problem is not None:
            raise ModelLoadError("warmup_failed", f"{file}: warm-up on {rows} rows {problem}")
