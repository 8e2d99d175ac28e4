"""Export the trained scorer to one self-contained ONNX graph, and prove the graph computes what torch does.

The graph takes raw readings and holds the standardisation, the autoencoder and the scoring, so the
service re-implements nothing: the threshold was calibrated on exactly the `score` this graph returns.

  input   readings      float32 [N, n_sensors]   raw values, in the manifest's sensor order
  output  score         float32 [N]              mean over sensors of the squared standardised residual
  output  sensor_error  float32 [N, n_sensors]   per-sensor squared standardised residual

Exported with torch's dynamo exporter at a pinned opset; the result passes `onnx.checker` in full-check
mode (which also runs shape inference) and a parity check against torch on the caller's batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from factory_anomaly.artifact import EXPLAINER_FILE, SCORER_FILE, GraphSpec, TensorSpec
from factory_anomaly.training.explainer import SensorAttentionExplainer
from factory_anomaly.training.model import AnomalyScorer

log = logging.getLogger("training.export")

OPSET = 18
INPUT_NAME = "readings"
OUTPUT_NAMES = ("score", "sensor_error")
EXPLAINER_OUTPUT_NAMES = ("attention", "score", "sensor_error", "expected")
BATCH_DIM = "N"
PARITY_RTOL = 5e-5
"""Largest relative error of `score` (ORT vs torch) an export may show. 1e-5 held while the score was a
mean over sensors, which averages each sensor's float32 rounding away; a max-type score carries one
sensor's rounding whole (measured up to 1.2e-5 on an SMD machine), still far below any threshold's
meaning."""


SCORE_PARITY_FLOOR = 1e-2
"""Scores below this are compared absolutely: a normal reading scores about 1, and a near-perfect
reconstruction's tiny residuals are float32 cancellation noise in either runtime."""


class ExportError(RuntimeError):
    """The graph does not check, or does not compute what the torch module computes."""


def scorer_graph_spec(n_sensors: int, file: str = SCORER_FILE) -> GraphSpec:
    """The manifest's description of the exported scorer graph."""
    return GraphSpec(
        file=file,
        inputs=(TensorSpec(INPUT_NAME, "float32", (BATCH_DIM, n_sensors)),),
        outputs=(
            TensorSpec(OUTPUT_NAMES[0], "float32", (BATCH_DIM,)),
            TensorSpec(OUTPUT_NAMES[1], "float32", (BATCH_DIM, n_sensors)),
        ),
        opset=OPSET,
    )


def explainer_graph_spec(n_sensors: int, file: str = EXPLAINER_FILE) -> GraphSpec:
    """The manifest's description of the exported explainer graph (attention first, then the scores)."""
    return GraphSpec(
        file=file,
        inputs=(TensorSpec(INPUT_NAME, "float32", (BATCH_DIM, n_sensors)),),
        outputs=(
            TensorSpec("attention", "float32", (BATCH_DIM, n_sensors)),
            TensorSpec("score", "float32", (BATCH_DIM,)),
            TensorSpec("sensor_error", "float32", (BATCH_DIM, n_sensors)),
            TensorSpec("expected", "float32", (BATCH_DIM, n_sensors)),
        ),
        opset=OPSET,
    )


def export_scorer(scorer: AnomalyScorer, path: Path) -> Path:
    """Write `scorer` (eval mode, dynamic batch) as a single-file ONNX graph at `path`; return `path`."""
    n = int(scorer.mean.numel())
    return _export(scorer, path, OUTPUT_NAMES, scorer_graph_spec(n))


def export_explainer(explainer: SensorAttentionExplainer, path: Path) -> Path:
    """Write the attention explainer (raw readings → attention, score, sensor_error, expected) at `path`."""
    n = int(explainer.scorer.mean.numel())
    return _export(explainer, path, EXPLAINER_OUTPUT_NAMES, explainer_graph_spec(n))


def _export(module: torch.nn.Module, path: Path, outputs: tuple[str, ...], spec: GraphSpec) -> Path:
    module.eval()
    n = spec.inputs[0].shape[1]
    assert isinstance(n, int)
    example = (torch.zeros(2, n),)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            verbose=False,  # the exporter otherwise prints its progress to stdout
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            opset_version=OPSET,
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
            external_data=False,
        )
    assert program is not None
    program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc
    _check_io(model, spec)
    return path


def _check_io(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """The graph's declared inputs, outputs and opset are the ones the manifest will promise."""
    declared = {
        "inputs": [(v.name, _shape(v)) for v in model.graph.input],
        "outputs": [(v.name, _shape(v)) for v in model.graph.output],
    }
    promised = {
        "inputs": [(t.name, _normalise(t.shape)) for t in spec.inputs],
        "outputs": [(t.name, _normalise(t.shape)) for t in spec.outputs],
    }
    if declared != promised:
        raise ExportError(f"exported graph declares {declared}, the manifest would promise {promised}")
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != OPSET:
        raise ExportError(f"exported graph uses opset {opsets}, expected {OPSET}")


def _shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    """Dims as ints, or "?" for any symbolic dim (the exporter picks its own symbol names)."""
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else "?" for d in dims)


def _normalise(shape: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) else "?" for d in shape)


def check_parity(
    module: torch.nn.Module,
    path: Path,
    batches: Iterable[np.ndarray],
    outputs: tuple[str, ...] = OUTPUT_NAMES,
) -> dict[str, Any]:
    """Run torch and onnxruntime (CPU) on each batch; raise ExportError above PARITY_RTOL.

    `outputs` names the module's outputs in order; `score` and `sensor_error` are compared (and
    `attention`, when present, like `sensor_error`). Returns the worst relative error of `score`, and of
    the per-sensor outputs relative to the batch's largest value (so near-zero entries do not blow it up),
    and the rows compared.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst: dict[str, float] = dict.fromkeys(outputs, 0.0)
    rows = 0
    for batch in batches:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        got = dict(zip(outputs, session.run(list(outputs), {INPUT_NAME: x}), strict=True))
        with torch.no_grad():
            want = dict(zip(outputs, (t.numpy() for t in module(torch.from_numpy(x))), strict=True))
        for name in outputs:
            diff = np.abs(got[name].astype(np.float64) - want[name])
            if name == "score":
                err = diff / np.maximum(np.abs(want[name]), SCORE_PARITY_FLOOR)
            else:
                err = diff / max(float(np.abs(want[name]).max()), 1e-12)
            worst[name] = max(worst[name], float(err.max()))
        rows += len(x)
    worst_score = worst["score"]
    result: dict[str, Any] = {f"{name}_max_rel_error": value for name, value in worst.items()}
    result["rows"] = rows
    if not worst_score <= PARITY_RTOL:
        raise ExportError(
            f"ONNX vs torch score relative error {worst_score:.3g} > {PARITY_RTOL:g} ({result})"
        )
    log.info("parity ORT vs torch of %s over %d rows: %s", path.name, rows, result)
    return result
