"""The exported ONNX graph: what it declares, that it checks, and that it computes what torch computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from factory_anomaly.artifact import verify_artifact
from factory_anomaly.training.checkpoint import load_trained
from factory_anomaly.training.export import OPSET, PARITY_RTOL, ExportError, check_parity, export_scorer
from factory_anomaly.training.model import aggregate_errors


def test_graph_declares_the_contract(trained_small: Path) -> None:
    model = onnx.load(str(trained_small / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == OPSET >= 17
    n = verify_artifact(trained_small).n_sensors
    (readings,) = model.graph.input
    assert readings.name == "readings" and readings.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = readings.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == n  # dynamic batch, fixed width
    assert [o.name for o in model.graph.output] == ["score", "sensor_error"]
    # one self-contained file: no external data, standardisation and scoring inside the graph
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    ops = {node.op_type for node in model.graph.node}
    assert {"Sub", "Div", "Gemm", "Relu", "ReduceMean"} <= ops


def test_onnxruntime_matches_torch_on_real_and_random_batches(trained_small: Path, small_plant) -> None:
    trained = load_trained(trained_small)
    session = ort.InferenceSession(str(trained_small / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    real = small_plant.simulate(777, seed=31, anomaly_rate=0.2).values
    random_rows = (real.mean(0) + real.std(0) * rng.normal(0, 3, size=(300, real.shape[1]))).astype(
        np.float32
    )
    for batch in (real, real[:1], random_rows):
        score, sensor_error = session.run(None, {"readings": batch})
        with torch.no_grad():
            t_score, t_error = (t.numpy() for t in trained.scorer(torch.from_numpy(batch)))
        assert score.shape == (len(batch),) and sensor_error.shape == batch.shape
        np.testing.assert_allclose(score, t_score, rtol=PARITY_RTOL)
        np.testing.assert_allclose(sensor_error, t_error, rtol=1e-4, atol=1e-5 * float(t_error.max()))
        # score = the scorer's aggregate of the errors (mean+max by default)
        scorer = trained.scorer
        want = aggregate_errors(
            torch.from_numpy(sensor_error), scorer.aggregate, scorer.aggregate_scale
        ).numpy()
        np.testing.assert_allclose(want, score, rtol=PARITY_RTOL)


def test_parity_check_catches_a_graph_that_differs(trained_small: Path, tmp_path: Path, small_plant) -> None:
    trained = load_trained(trained_small)
    path = export_scorer(trained.scorer, tmp_path / "model.onnx")
    batch = small_plant.simulate(64, seed=3).values
    assert check_parity(trained.scorer, path, [batch])["score_max_rel_error"] <= PARITY_RTOL
    with torch.no_grad():  # the torch side moves on; the graph on disk no longer matches it
        trained.scorer.residual_scale.mul_(1.001)
    with pytest.raises(ExportError, match="score relative error"):
        check_parity(trained.scorer, path, [batch])
