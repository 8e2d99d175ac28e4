"""The image's install, outside Docker: `make serving-install` runs deploy/install-serving.sh (the steps
the Dockerfile runs) into a fresh directory; the result has no torch, onnx or training code, the runtime
stage's own CMD serves the baked-in default model there, its HEALTHCHECK command says so, and the
simulator stage's entry point streams readings into it from the same virtual environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from tests.app.conftest import free_port
from tests.deploy.conftest import ROOT
from tests.deploy.test_containers import exec_form, healthcheck_command, stage_map

IMAGE_PREFIX = "/opt/anomaly"
MAX_INSTALLED_MB = 350
"""The serving install is ~220 MB (onnxruntime ~80 MB, numpy ~75 MB, pip ~20 MB, the model 13 MB); torch
alone would add ~700 MB."""
STARTUP_TIMEOUT_S = 60.0


def installed_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("serving") / "serving"
    out = subprocess.run(
        ["make", "--no-print-directory", "serving-install", f"SERVING_DIR={dest}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return dest


def in_image(args: list[str], dest: Path, port: int) -> list[str]:
    """A command of the Dockerfile with the image's paths and port mapped onto the installed directory."""
    mapped = [arg.replace(IMAGE_PREFIX, str(dest)).replace(":8000", f":{port}") for arg in args]
    return [str(port) if arg == "8000" else arg for arg in mapped]  # `--port 8000`


def runtime_env(dest: Path) -> dict[str, str]:
    """The runtime stage's ENV, with the image's /models mapped to the installed model store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOMALY_", "PYTHON"))}
    stages = stage_map()
    for stage in (stages["serving-base"], stages["runtime"]):
        for line in stage.all("ENV"):
            for pair in line.split():
                key, _, value = pair.partition("=")
                env[key] = str(dest / "model_store") if value == "/models" else value
    return env


@pytest.fixture(scope="module")
def serving(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = in_image(exec_form(stage_map()["runtime"].last("CMD")), installed, port)
    command = [arg if arg != "0.0.0.0" else "127.0.0.1" for arg in command]
    log = tmp_path_factory.mktemp("serving-log") / "server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=installed, env=runtime_env(installed), stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url, port
    finally:
        process.terminate()
        process.wait(10)


def test_the_install_has_no_training_stack_and_reports_its_size(installed: Path) -> None:
    python = installed / "venv" / "bin" / "python"
    probe = (
        "import importlib.util, json; "
        "print(json.dumps([m for m in ('torch', 'onnx', 'training', 'pandas', 'scipy', 'sklearn') "
        "if importlib.util.find_spec(m)]))"
    )
    out = subprocess.run([python, "-c", probe], cwd=installed, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    packages = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"fastapi", "uvicorn", "onnxruntime", "numpy", "prometheus_client"} <= packages
    assert not packages & {"torch", "onnx", "pandas", "scipy", "scikit-learn", "matplotlib"}
    assert sorted(p.name for p in installed.iterdir()) == [
        "factory_anomaly",
        "model_store",
        "requirements.txt",
        "venv",
    ]
    package = installed / "factory_anomaly"
    assert sorted(p.name for p in package.iterdir()) == [
        "__init__.py",
        "alarms",
        "app",
        "artifact",
        "explain",
    ]  # no training, no plant
    current = (ROOT / "model_store" / "factory-ae" / "CURRENT").read_text().strip()
    baked = {p.name for p in (installed / "model_store" / "factory-ae").iterdir()}
    assert baked == {"CURRENT", current}  # the version CURRENT names, and no other
    sizes = {part: installed_mb(installed / part) for part in ("venv", "factory_anomaly", "model_store")}
    total = sum(sizes.values())
    print(f"serving install: {total:.0f} MB ({', '.join(f'{k} {v:.1f} MB' for k, v in sizes.items())})")
    assert total < MAX_INSTALLED_MB


def test_the_install_is_exactly_the_lock(installed: Path) -> None:
    """Every package of the serving venv (pip aside) at the version deploy/requirements-serving.lock pins,
    and every locked package installed (the files were hash-checked by pip --require-hashes)."""
    from tests.deploy.test_security import LOCKS, parse_lock

    python = installed / "venv" / "bin" / "python"
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    packages = {
        canonicalize_name(p["name"]): p["version"]
        for p in json.loads(listed.stdout)
        if p["name"] not in ("pip", "setuptools", "wheel")
    }
    locked = {name: version for name, (version, _) in parse_lock(LOCKS["cpu"]).items()}
    assert packages == locked


def test_the_runtime_command_serves_the_baked_in_model_and_the_health_check_passes(
    installed: Path, serving: tuple[str, int]
) -> None:
    url, port = serving
    health = in_image(healthcheck_command(stage_map()["runtime"]), installed, port)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while subprocess.run(health, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the HEALTHCHECK command never passed"
        time.sleep(0.2)
    model = httpx.get(f"{url}/v1/model").json()
    assert model["version"] == (ROOT / "model_store" / "factory-ae" / "CURRENT").read_text().strip()
    assert model["provider"] == "CPUExecutionProvider"
    answer = httpx.post(f"{url}/v1/score", json={"values": [0.0] * model["n_sensors"]})
    assert answer.status_code == 200
    nobody = in_image(healthcheck_command(stage_map()["runtime"]), installed, free_port())
    assert subprocess.run(nobody, capture_output=True).returncode != 0  # nothing ready there


def test_the_simulator_stage_streams_into_it_without_torch(installed: Path, serving: tuple[str, int]) -> None:
    url, port = serving
    simulator = stage_map()["simulator"]
    copies = [copy.split() for copy in simulator.all("COPY")]
    assert copies, "the simulator stage copies nothing"
    for source, target in copies:  # each one directory of the tree to its place under /opt/anomaly
        destination = installed / Path(target).relative_to(IMAGE_PREFIX)
        shutil.copytree(ROOT / source, destination, dirs_exist_ok=True)
    before = scored(url)
    command = in_image(exec_form(simulator.last("ENTRYPOINT")), installed, port)
    command += [
        f"--url={url}",
        "--rate=200",
        "--count=40",
        "--outlier-rate=0.25",
        "--report-every=0",
        "--seed=4",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(command, cwd=installed, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["sent"] == 40 and summary["errors"] == {}
    assert summary["faulty"] >= summary["flagged_faulty"] > 0  # the outliers are flagged
    assert scored(url) == before + 40
    assert sys.executable not in command


def scored(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    [value] = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "anomaly_readings_scored_total"
    ]
    return value
