"""The explainer in the inference core: loaded with the scorer or the load fails with a precise code; its
outputs are onnxruntime's on the artifact's explainer.onnx, its scores the scorer's up to float rounding,
and an explanation ranks sensors in the operator's order (out of range first, then by error) with each
sensor's attention, share of the reconstruction error and place against its training range."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import ExplainerUnavailable
from factory_anomaly.app.model import EXPLAINER_OUTPUTS, LoadedModel, ModelLoadError, load_model
from factory_anomaly.app.serving.explaining import explain_reading
from factory_anomaly.artifact import ArtifactError, Manifest, hash_files, read_manifest, write_manifest
from tests.app.conftest import MODEL_NAME, anomalous, copy_store, publish_without_explainer

N = 40


@pytest.fixture(scope="module")
def model(trained_small: Path) -> LoadedModel:
    return load_model(trained_small, Settings(provider="cpu"))


@pytest.fixture(scope="module")
def x(readings: np.ndarray, manifest: Manifest) -> np.ndarray:
    """float32 [65, 40]: 64 normal readings and one far above the threshold."""
    return np.concatenate([readings, anomalous(manifest)[None]])


def copy_version(trained_small: Path, tmp_path: Path) -> Path:
    target = tmp_path / trained_small.name
    target.mkdir()
    for path in trained_small.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def rehash(version: Path) -> None:
    """Make the manifest vouch for the files as they are now (a graph replaced on purpose)."""
    write_manifest(replace(read_manifest(version), files=hash_files(version)), version)


def test_a_version_with_an_explainer_loads_it(model: LoadedModel, manifest: Manifest) -> None:
    assert "explainer" in manifest.graphs
    assert model.has_explainer and model.require_explainer() is model.explainer
    assert model.explainer is not None and model.explainer.get_providers()[0] == model.provider


def test_explainer_outputs_equal_onnxruntime_exactly(
    model: LoadedModel, explainer_reference: ort.InferenceSession, x: np.ndarray
) -> None:
    got = model.explain(x)
    expected = explainer_reference.run(list(EXPLAINER_OUTPUTS), {"readings": x})
    for actual, wanted in zip(got, expected, strict=True):
        assert actual.dtype == np.float32 and np.array_equal(actual, wanted)
    attention = got[0]
    assert (attention >= 0).all()
    np.testing.assert_allclose(attention.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=1e-5)


def test_explainer_scores_equal_the_scorers(model: LoadedModel, x: np.ndarray, manifest: Manifest) -> None:
    """The explainer contains the frozen scorer: its score and sensor_error are the scorer's up to float
    rounding, so /v1/explain can report its own score and decide as /v1/score does."""
    _, score, sensor_error = model.explain(x)
    scorer_score, scorer_error = model.score(x)
    np.testing.assert_allclose(score, scorer_score, rtol=1e-5, atol=0)
    np.testing.assert_allclose(sensor_error, scorer_error, rtol=1e-5, atol=0)
    flags = model.assess_outputs(score, sensor_error, 0).is_anomaly
    assert flags.tolist() == model.assess(x, 0).is_anomaly.tolist()
    assert flags[-1] and not flags.all()


@pytest.mark.parametrize("top_k", [1, 10, N])
@pytest.mark.parametrize("row", [0, 1, 64], ids=["normal-0", "normal-1", "anomalous"])
def test_an_explanation_ranks_out_of_range_first_then_by_error(
    model: LoadedModel,
    explainer_reference: ort.InferenceSession,
    x: np.ndarray,
    manifest: Manifest,
    row: int,
    top_k: int,
) -> None:
    reading = x[row : row + 1]
    explanation = explain_reading(model, reading, top_k, log_top_k=5)
    attention, score, sensor_error, expected = (
        out[0] for out in explainer_reference.run([*EXPLAINER_OUTPUTS, "expected"], {"readings": reading})
    )
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    value = reading[0].astype(np.float64)
    outside = np.maximum(np.maximum(low - value, value - high), 0) / np.maximum(high - low, 1e-6)
    order = sorted(range(N), key=lambda j: (-outside[j], -float(sensor_error[j]), j))[:top_k]
    assert [s.index for s in explanation.sensors] == order
    assert [s.name for s in explanation.sensors] == [manifest.sensor_names[j] for j in order]
    assert [s.attention for s in explanation.sensors] == [float(attention[j]) for j in order]
    assert [s.value for s in explanation.sensors] == [float(value[j]) for j in order]
    assert [s.out_of_range for s in explanation.sensors] == pytest.approx([outside[j] for j in order])
    assert [s.expected for s in explanation.sensors] == [float(expected[j]) for j in order]
    directions = [("high" if value[j] > high[j] else "low") if outside[j] > 0
                  else ("high" if value[j] >= expected[j] else "low") for j in order]  # fmt: skip
    assert [s.direction for s in explanation.sensors] == directions
    total = float(np.sum(sensor_error, dtype=np.float64))
    shares = [s.error_share for s in explanation.sensors]
    assert shares == [float(sensor_error[j]) / total for j in order]
    assert all(share is not None and 0 <= share <= 1 for share in shares)
    assert sum(s for s in shares if s is not None) <= 1 + 1e-12
    if top_k == N:
        assert sum(s for s in shares if s is not None) == pytest.approx(1.0, abs=1e-9)
    assert explanation.score == float(score)
    assert explanation.is_anomaly == (float(score) > manifest.threshold.value)
    assert explanation.is_anomaly == (row == 64)
    if row == 64:  # the three sensors pushed far above their range come first, named "high"
        first = explanation.sensors[:3]
        assert {s.index for s in first} <= {3, 17, 29} and len(first) == min(3, top_k)
        assert all(s.direction == "high" and s.out_of_range > 40 for s in first)
    if explanation.is_anomaly:  # the anomaly log names the top sensors by sensor_error, as /v1/score does
        by_error = np.argsort(-sensor_error, kind="stable")[:5]
        logged = explanation.assessment.top_sensors[0]
        assert logged == [(manifest.sensor_names[j], float(sensor_error[j])) for j in by_error]


def test_a_gross_reading_names_the_sensors_furthest_out_and_says_how_far(
    model: LoadedModel, manifest: Manifest
) -> None:
    """What a new user tries first: random values on every sensor, most far outside their training range.
    The sensors named first are the ones furthest out, each with its value, direction and distance, so a
    technician sent there finds the absurd value (the error ranking and attention would name others)."""
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    reading = np.random.default_rng(0).uniform(low - 20 * (high - low), high + 20 * (high - low))
    explanation = explain_reading(model, reading[None].astype(np.float32), 3, log_top_k=5)
    value = reading.astype(np.float32).astype(np.float64)
    outside = np.maximum(np.maximum(low - value, value - high), 0) / (high - low)
    assert [s.index for s in explanation.sensors] == np.argsort(-outside, kind="stable")[:3].tolist()
    for s in explanation.sensors:
        assert s.out_of_range == pytest.approx(outside[s.index]) and s.out_of_range > 10
        assert s.direction == ("high" if value[s.index] > high[s.index] else "low")
        assert s.value == value[s.index] and s.error_share is not None


def test_an_explanation_is_of_one_reading(model: LoadedModel, x: np.ndarray) -> None:
    with pytest.raises(ValueError, match="one reading"):
        explain_reading(model, x[:2], 3, 5)


def test_a_version_without_an_explainer_scores_and_refuses_to_explain(
    model: LoadedModel, store: Path, trained_small: Path, tmp_path: Path, x: np.ndarray
) -> None:
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    version = publish_without_explainer(model_dir, trained_small.name, "20991231T000002Z-00000e00")
    assert not (version / "explainer.onnx").exists()
    loaded = load_model(version, Settings(provider="cpu"))
    assert not loaded.has_explainer and loaded.explainer is None
    assert np.array_equal(loaded.score(x)[0], model.score(x)[0])
    with pytest.raises(ExplainerUnavailable) as caught:
        loaded.explain(x[:1])
    assert caught.value.status == 404 and caught.value.code == "explainer_unavailable"
    assert "20991231T000002Z-00000e00 has no explainer" in caught.value.message
    assert "retrain with the explainer" in caught.value.message


def test_a_corrupted_explainer_fails_the_load(trained_small: Path, tmp_path: Path) -> None:
    version = copy_version(trained_small, tmp_path)
    data = bytearray((version / "explainer.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (version / "explainer.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "checksum_mismatch"
    assert caught.value.message.startswith("explainer.onnx: checksum mismatch")


def test_an_explainer_onnxruntime_cannot_load_is_model_invalid(trained_small: Path, tmp_path: Path) -> None:
    version = copy_version(trained_small, tmp_path)
    (version / "explainer.onnx").write_bytes(b"not an onnx graph")
    rehash(version)
    with pytest.raises(ModelLoadError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "model_invalid"
    assert caught.value.message.startswith("explainer.onnx: onnxruntime cannot load it")


def _explainer(data: dict) -> dict:  # type: ignore[type-arg]
    graph: dict = data["graphs"]["explainer"]  # type: ignore[type-arg]
    return graph


def _no_attention(data: dict) -> None:  # type: ignore[type-arg]
    _explainer(data)["outputs"] = _explainer(data)["outputs"][1:]


def _attention_width(data: dict) -> None:  # type: ignore[type-arg]
    _explainer(data)["outputs"][0]["shape"] = ["N", N - 1]


def _score_rank(data: dict) -> None:  # type: ignore[type-arg]
    _explainer(data)["outputs"][1]["shape"] = ["N", 1]


def _error_dtype(data: dict) -> None:  # type: ignore[type-arg]
    _explainer(data)["outputs"][2]["dtype"] = "float64"


def _extra_input(data: dict) -> None:  # type: ignore[type-arg]
    inputs = _explainer(data)["inputs"]
    inputs.append(dict(inputs[0], name="mask"))


def _renamed_input(data: dict) -> None:  # type: ignore[type-arg]
    _explainer(data)["inputs"][0]["name"] = "x"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_no_attention, "the explainer graph needs an output 'attention'"),
        (_attention_width, "the explainer graph's output 'attention' must be float32 [N, 40]"),
        (_score_rank, "the explainer graph's output 'score' must be float32 [N]"),
        (_error_dtype, "the explainer graph's output 'sensor_error' must be float32 [N, 40]"),
        (_extra_input, "the explainer graph must take one input"),
        (_renamed_input, "explainer.onnx: the graph's inputs are"),
    ],
    ids=["no-attention", "attention-width", "score-rank", "error-dtype", "extra-input", "renamed-input"],
)
def test_an_explainer_that_does_not_match_the_contract_is_graph_mismatch(
    trained_small: Path, tmp_path: Path, edit: object, fragment: str
) -> None:
    version = copy_version(trained_small, tmp_path)
    data = json.loads((version / "manifest.json").read_text())
    edit(data)  # type: ignore[operator]
    (version / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "graph_mismatch"
    assert fragment in caught.value.message


def _wrong_explainer(path: Path, n: int) -> None:
    """A graph with the explainer's inputs and outputs whose `attention` is |reading|: the right shapes,
    non-negative, but not a distribution over the sensors."""
    floats = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["readings"], ["attention"]),
            helper.make_node("ReduceMean", ["readings", "axes"], ["score"], keepdims=0),
            helper.make_node("Identity", ["readings"], ["sensor_error"]),
            helper.make_node("Identity", ["readings"], ["expected"]),
        ],
        "wrong_explainer",
        [helper.make_tensor_value_info("readings", floats, ["N", n])],
        [
            helper.make_tensor_value_info("attention", floats, ["N", n]),
            helper.make_tensor_value_info("score", floats, ["N"]),
            helper.make_tensor_value_info("sensor_error", floats, ["N", n]),
            helper.make_tensor_value_info("expected", floats, ["N", n]),
        ],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_an_explainer_whose_attention_is_not_a_distribution_fails_the_warm_up(
    trained_small: Path, tmp_path: Path
) -> None:
    version = copy_version(trained_small, tmp_path)
    _wrong_explainer(version / "explainer.onnx", N)
    rehash(version)
    with pytest.raises(ModelLoadError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "warmup_failed"
    assert caught.value.message.startswith("explainer.onnx: warm-up on 1 rows gave attention rows summing")


def test_an_explainer_from_before_the_expected_output_still_explains(
    trained_small: Path, tmp_path: Path, manifest: Manifest
) -> None:
    """Versions exported before `expected` was an output load and explain as before: no expected value,
    and a direction only where the reading is out of its range."""
    version = copy_version(trained_small, tmp_path)
    graph = onnx.load(str(version / "explainer.onnx"))
    kept = [o for o in graph.graph.output if o.name != "expected"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, str(version / "explainer.onnx"))
    data = json.loads((version / "manifest.json").read_text())
    outputs = data["graphs"]["explainer"]["outputs"]
    data["graphs"]["explainer"]["outputs"] = [o for o in outputs if o["name"] != "expected"]
    (version / "manifest.json").write_text(json.dumps(data))
    rehash(version)
    loaded = load_model(version, Settings(provider="cpu"))
    explanation = explain_reading(loaded, anomalous(manifest)[None], N, log_top_k=5)
    assert all(s.expected is None for s in explanation.sensors)
    assert [s.direction for s in explanation.sensors[:3]] == ["high"] * 3  # the pushed sensors, out of range
    assert all(s.direction is None for s in explanation.sensors if s.out_of_range == 0)
