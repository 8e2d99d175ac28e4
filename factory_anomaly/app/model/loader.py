"""Loading a version: verify the artifact, open its graph(s) in onnxruntime on the chosen provider, check
them against the manifest and the service's contract, and warm them up.

Blocking (hashing, session creation, warm-up): the registry runs it in a worker thread. A broken explainer
fails the whole load: a version is served complete or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import ErrorCode
from factory_anomaly.app.model.loaded import (
    EXPECTED_OUTPUT,
    EXPLAINER_OUTPUTS,
    OUTPUT_RANKS,
    OUTPUTS,
    LoadedModel,
)
from factory_anomaly.app.serving.drift import DriftDetector
from factory_anomaly.artifact import (
    EXPLAINER,
    SCORER,
    ArtifactCode,
    ArtifactError,
    GraphSpec,
    Manifest,
    iso_utc,
    verify_artifact,
)

log = logging.getLogger("app.scoring")

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


def select_providers(choice: str, available: Sequence[str]) -> list[str]:
    """onnxruntime providers to ask for, in order; `cuda` without CUDA is `provider_unavailable`."""
    if choice == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if choice == "cuda":
        raise ModelLoadError(
            ErrorCode.PROVIDER_UNAVAILABLE,
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
        optional = (
            (EXPECTED_OUTPUT,) if any(t.name == EXPECTED_OUTPUT for t in explainer_spec.outputs) else ()
        )
        _check_contract(explainer_spec, manifest.n_sensors, EXPLAINER, (*EXPLAINER_OUTPUTS, *optional))
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
        calibration=DriftDetector(manifest.threshold.target_fpr, settings.drift_settings()),
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
        raise ArtifactError(
            ArtifactCode.CHECKSUM_MISMATCH, f"{spec.file}: changed while the version was being loaded"
        )
    try:
        session = ort.InferenceSession(graph_bytes, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise ModelLoadError(
            ErrorCode.MODEL_INVALID, f"{spec.file}: onnxruntime cannot load it: {exc}"
        ) from exc
    used: str = session.get_providers()[0]
    if settings.provider == "cuda" and used != CUDA:
        raise ModelLoadError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"PROVIDER=cuda but the session of {spec.file} runs on {used}: CUDA failed to initialise",
        )
    if providers[0] != used:
        log.warning("asked onnxruntime for %s, running %s on %s", providers[0], spec.file, used)
    _check_session(session, spec)
    if used == CPU:
        _drop_graph_copy(session)
    return session, used


def _drop_graph_copy(session: ort.InferenceSession) -> None:
    """Let go of the serialized graph onnxruntime's Python session keeps (the graph's size, per session;
    its own comment calls holding it "bad").

    It is kept only to rebuild the session when a run fails in an execution provider and falls back to the
    next one. A CPU session has no provider to fall back to, so its fallback is switched off (a failed run
    raises, as any other does) and the copy is dropped. `tests/app/test_memory.py` pins the attribute,
    so an onnxruntime that renames it fails a test instead of silently keeping the copy.
    """
    session.disable_fallback()
    if isinstance(getattr(session, "_model_bytes", None), bytes):
        session._model_bytes = None


def _mismatch(message: str) -> ModelLoadError:
    return ModelLoadError(ErrorCode.GRAPH_MISMATCH, message)


def _check_contract(spec: GraphSpec, n: int, role: str, outputs: tuple[str, ...]) -> None:
    """The graph the service needs in `role`: one input [N, n] (its dtype and width are the manifest's
    consistency checks) and each of `outputs` float32, [N] for score, [N, n] for the others."""
    if len(spec.inputs) != 1:
        raise _mismatch(f"the {role} graph must take one input, the manifest lists {len(spec.inputs)}")
    declared = {t.name: t for t in spec.outputs}
    for name in outputs:
        rank = OUTPUT_RANKS[name]
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
            raise ModelLoadError(ErrorCode.WARMUP_FAILED, f"warm-up on {rows} rows failed: {exc}") from exc
        shapes = (np.shape(score), np.shape(sensor_error))
        finite = bool(np.isfinite(score).all())
        if shapes != ((rows,), (rows, n)) or not finite:
            raise ModelLoadError(
                ErrorCode.WARMUP_FAILED,
                f"warm-up on {rows} rows gave shapes {shapes}, all scores finite: {finite}",
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
            raise ModelLoadError(
                ErrorCode.WARMUP_FAILED, f"{file}: warm-up on {rows} rows failed: {exc}"
            ) from exc
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
            raise ModelLoadError(ErrorCode.WARMUP_FAILED, f"{file}: warm-up on {rows} rows {problem}")
