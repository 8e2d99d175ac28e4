"""`pip install ./client` on its own gives a working client: a fresh virtual environment (`python -m venv`,
no system site-packages) gets only a copy of client/ pip-installed into it (its dependencies come from the
configured package index), has nothing of the server importable, and scores readings against the session's
real uvicorn (`live`) exactly as onnxruntime does.

The venv's Python runs isolated (`-I`: no PYTHONPATH, no user site, no current directory on sys.path) from
a directory outside the repository, so nothing of the tree or of the test venv can stand in for the install.
About 10-15 s on two cores with a warm pip cache (venv ~4 s, install ~8 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from factory_anomaly.artifact import Manifest
from tests.app.conftest import API_KEY, ROOT, LiveServer, anomalous

Completed = subprocess.CompletedProcess[str]

pytestmark = pytest.mark.timeout(900)  # the install may download numpy & co. (pip's own timeout: 180 s)

INSTALL_TIMEOUT_S = 600
SERVER_MODULES = (
    *("fastapi", "onnxruntime", "pydantic", "torch", "factory_anomaly"),
    *("starlette", "uvicorn", "onnx", "pydantic_settings", "prometheus_client"),
)
"""What a client install must not bring: the server and its framework, the inference and training stacks."""

SCORE_SCRIPT = textwrap.dedent(
    """
    import json, sys, sysconfig
    import factory_anomaly_client
    from factory_anomaly_client import AnomalyClient, BadRequestError

    job = json.load(sys.stdin)
    with AnomalyClient(job["url"], api_key=job["api_key"]) as client:
        ready = client.ready()
        model = client.model()
        singles = [client.score(row, id=f"r{i}") for i, row in enumerate(job["rows"])]
        outlier = client.score(job["outlier"])
        binary = client.score_batch(job["rows"])
        with_ids = client.score_batch(job["rows"], ids=[f"b{i}" for i in range(len(job["rows"]))])
        try:
            client.score(job["rows"][0][:-1])
            error = None
        except BadRequestError as exc:
            error = [exc.status, exc.code]
    print(json.dumps({
        "client_file": factory_anomaly_client.__file__,
        "site_packages": sysconfig.get_paths()["purelib"],
        "ready": ready,
        "model": [model["version"], model["n_sensors"]],
        "singles": [[r.id, r.score, r.threshold, r.is_anomaly, r.model_version] for r in singles],
        "outlier": [outlier.score, outlier.is_anomaly],
        "binary": [binary.model_version, [[i.id, i.score, i.is_anomaly] for i in binary.results]],
        "with_ids": [[i.id, i.score] for i in with_ids.results],
        "error": error,
    }))
    """
)


def isolated_env() -> dict[str, str]:
    """The environment minus what would point Python at the test venv or the tree (pip's settings stay)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


@dataclass(frozen=True)
class FreshVenv:
    python: Path
    workdir: Path  # outside the repository: the current directory of every command

    def run(self, *args: str, stdin: str | None = None, timeout_s: float = 120) -> Completed:
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.workdir,
            env=isolated_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    """A new venv with `pip install <copy of client/>` and nothing else. A copy, because the build writes
    build/ and *.egg-info beside the sources, and the copy shows client/ needs nothing else of the tree."""
    base = tmp_path_factory.mktemp("client-venv")
    source = shutil.copytree(
        ROOT / "client", base / "client", ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    venv = base / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)],
        cwd=base,
        env=isolated_env(),
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    fresh = FreshVenv(venv / "bin" / "python", base)
    pip = fresh.run("-m", "pip", "install", "--quiet", str(source), timeout_s=INSTALL_TIMEOUT_S)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return fresh


def test_the_fresh_venv_has_the_client_and_nothing_of_the_server(fresh_venv: FreshVenv) -> None:
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m)]))"
    )
    out = fresh_venv.run("-I", "-c", probe)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    listed = fresh_venv.run("-m", "pip", "list", "--format=json")
    packages = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"factory-anomaly-client", "httpx", "numpy", "orjson"} <= packages
    assert not packages & {"fastapi", "onnxruntime", "pydantic", "torch", "factory-anomaly", "uvicorn"}
    check = fresh_venv.run("-m", "pip", "check")
    assert check.returncode == 0, check.stdout  # every requirement of what is installed is met


def test_the_fresh_venv_scores_against_the_live_service(
    fresh_venv: FreshVenv,
    live: LiveServer,
    reference: ort.InferenceSession,
    manifest: Manifest,
    readings: np.ndarray,
) -> None:
    rows = readings[:4]
    outlier = anomalous(manifest).tolist()
    job = {"url": live.url, "api_key": API_KEY, "rows": rows.tolist(), "outlier": outlier}
    out = fresh_venv.run("-I", "-c", SCORE_SCRIPT, stdin=json.dumps(job))
    assert out.returncode == 0, out.stderr
    got: dict[str, Any] = json.loads(out.stdout)

    # the installed copy answered, not client/ of the tree
    assert Path(got["client_file"]).is_relative_to(got["site_packages"])
    assert (Path(got["client_file"]).parent / "py.typed").is_file()  # the wheel carries its PEP 561 marker
    expected = reference.run(["score"], {"readings": np.ascontiguousarray(rows, np.float32)})[0].tolist()
    threshold, version = manifest.threshold.value, manifest.version
    assert got["ready"] is True
    assert got["model"] == [version, manifest.n_sensors]
    assert got["singles"] == [
        [f"r{i}", score, threshold, score > threshold, version] for i, score in enumerate(expected)
    ]  # the float32 scores, exactly
    outlier_score, outlier_flagged = got["outlier"]
    assert outlier_flagged is True and outlier_score > threshold
    assert got["binary"] == [version, [[None, score, score > threshold] for score in expected]]
    assert got["with_ids"] == [[f"b{i}", score] for i, score in enumerate(expected)]
    assert got["error"] == [422, "wrong_length"]
