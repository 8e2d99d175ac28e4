"""What a loaded version holds on to: onnxruntime's copy of the serialized graph is let go on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from factory_anomaly.app.config import Settings
from factory_anomaly.app.model import load_model


def test_onnxruntime_still_keeps_the_graph_bytes_of_a_session_built_from_bytes(trained_small: Path) -> None:
    """Pins the private attribute the loader clears: an onnxruntime that renames it fails here."""
    graph = (trained_small / "model.onnx").read_bytes()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    assert session._model_bytes is graph


def test_a_cpu_version_keeps_no_copy_of_its_graphs_and_still_scores(trained_small: Path) -> None:
    model = load_model(trained_small, Settings(provider="cpu"))
    assert model.explainer is not None
    for session in (model.session, model.explainer):
        assert session._model_bytes is None
        assert session._enable_fallback is False  # nothing to rebuild it from, and no provider to fall to
    x = np.zeros((3, model.manifest.n_sensors), np.float32)
    again = load_model(trained_small, Settings(provider="cpu"))
    assert np.array_equal(model.score(x)[0], again.score(x)[0])
    assert np.isfinite(model.explain(x[:1])[0]).all()
