"""The inference core: loading checks each way an artifact or the runtime can disappoint, with its own
code; a loaded model scores exactly as onnxruntime does on the artifact."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from factory_anomaly.app.config import Settings
from factory_anomaly.app.model import CPU, CUDA, LoadedModel, ModelLoadError, load_model, select_providers
from factory_anomaly.artifact import ArtifactError, Manifest, hash_files, read_manifest, write_manifest
from tests.app.conftest import anomalous

HAS_CUDA = CUDA in ort.get_available_providers()


@pytest.fixture(scope="module")
def model(trained_small: Path) -> LoadedModel:
    return load_model(trained_small, Settings(provider="cpu"))


def copy_version(trained_small: Path, tmp_path: Path) -> Path:
    target = tmp_path / trained_small.name
    target.mkdir()
    for path in trained_small.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def edit_manifest(directory: Path, edit: object) -> None:
    data = json.loads((directory / "manifest.json").read_text())
    edit(data)  # type: ignore[operator]
    (directory / "manifest.json").write_text(json.dumps(data))


def test_loaded_model_scores_like_onnxruntime(
    model: LoadedModel, reference: ort.InferenceSession, readings: np.ndarray, manifest: Manifest
) -> None:
    assert model.provider == CPU and model.version == manifest.version and model.load_seconds > 0
    scores, sensor_error = model.score(readings)
    expected_scores, expected_error = reference.run(["score", "sensor_error"], {"readings": readings})
    assert np.array_equal(scores, expected_scores) and np.array_equal(sensor_error, expected_error)


def test_assess_flags_above_threshold_and_non_finite_scores(model: LoadedModel, manifest: Manifest) -> None:
    overflow = np.array([[3.4e38 if i % 2 else -3.4e38 for i in range(40)]], np.float32)
    x = np.concatenate([anomalous(manifest)[None], overflow])
    assessment = model.assess(x, top_k=3)
    assert np.isnan(assessment.scores[1])
    assert assessment.is_anomaly.tolist() == [True, True]
    assert len(assessment.top_sensors[0]) == 3 and len(assessment.top_sensors[1]) == 3
    errors = [value for _, value in assessment.top_sensors[0]]
    assert errors == sorted(errors, reverse=True)


@pytest.mark.parametrize(
    "x",
    [np.zeros((1, 39), np.float32), np.zeros((1, 40), np.float64), np.zeros((0, 40), np.float32)],
    ids=["width", "dtype", "empty"],
)
def test_score_refuses_the_wrong_array(model: LoadedModel, x: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"float32 \[N >= 1, 40\]"):
        model.score(x)


def test_provider_selection() -> None:
    assert select_providers("cpu", [CUDA, CPU]) == [CPU]
    assert select_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert select_providers("auto", [CPU]) == [CPU]
    assert select_providers("cuda", [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(ModelLoadError) as caught:
        select_providers("cuda", ["AzureExecutionProvider", CPU])
    assert caught.value.code == "provider_unavailable"
    assert "CUDAExecutionProvider" in caught.value.message


def test_auto_uses_cuda_exactly_when_offered(trained_small: Path) -> None:
    loaded = load_model(trained_small, Settings(provider="auto"))
    assert loaded.provider == (CUDA if HAS_CUDA else CPU)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_cuda_requested_without_cuda_is_a_load_error(trained_small: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(trained_small, Settings(provider="cuda"))
    assert caught.value.code == "provider_unavailable"


def test_artifact_errors_pass_through(trained_small: Path, tmp_path: Path) -> None:
    version = copy_version(trained_small, tmp_path)
    (version / "model.onnx").write_bytes(b"corrupt")
    with pytest.raises(ArtifactError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "checksum_mismatch"


def test_a_graph_onnxruntime_cannot_load_is_model_invalid(trained_small: Path, tmp_path: Path) -> None:
    version = copy_version(trained_small, tmp_path)
    (version / "model.onnx").write_bytes(b"not an onnx graph")
    manifest = read_manifest(version)
    write_manifest(replace(manifest, files=hash_files(version)), version)
    with pytest.raises(ModelLoadError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "model_invalid"


def _rename_input(data: dict) -> None:  # type: ignore[type-arg]
    data["graphs"]["scorer"]["inputs"][0]["name"] = "x"


def _rename_output(data: dict) -> None:  # type: ignore[type-arg]
    data["graphs"]["scorer"]["outputs"][0]["name"] = "scores"


def _rank_of_score(data: dict) -> None:  # type: ignore[type-arg]
    data["graphs"]["scorer"]["outputs"][0]["shape"] = ["N", 1]


def _extra_input(data: dict) -> None:  # type: ignore[type-arg]
    inputs = data["graphs"]["scorer"]["inputs"]
    inputs.append(dict(inputs[0], name="mask"))


@pytest.mark.parametrize("edit", [_rename_input, _rename_output, _rank_of_score, _extra_input])
def test_graph_that_does_not_match_the_manifest_is_graph_mismatch(
    trained_small: Path, tmp_path: Path, edit: object
) -> None:
    version = copy_version(trained_small, tmp_path)
    edit_manifest(version, edit)
    with pytest.raises(ModelLoadError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "graph_mismatch"
