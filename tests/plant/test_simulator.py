"""plant/simulate.py against a real uvicorn serving the session's small model: what it sends is what
the service counts, it refuses a plant whose sensors are not the model's, stops cleanly on SIGTERM, and
imports no training stack (the image's variant runs it without torch in
tests/deploy/test_serving_install.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app.conftest import API_KEY, MODEL_NAME, ROOT, LiveServer, server_env, start_server, stop_server

SIMULATE = [sys.executable, "-m", "factory_anomaly.plant.simulate"]


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("simulator") / "server.log", server_env(store))
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def plant_json(small_plant: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small plant as `python -m factory_anomaly.training synth` describes it (plant.json: config and
    plant seed)."""
    path = tmp_path_factory.mktemp("plant") / "plant.json"
    path.write_text(json.dumps({"config": asdict(small_plant.config), "plant_seed": small_plant.plant_seed}))
    return path


def samples(server: LiveServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def simulate(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIMULATE, f"--url={server.url}", f"--api-key={API_KEY}", "--report-every=0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_what_it_sends_is_what_the_service_counts(server: LiveServer, plant_json: Path) -> None:
    model = frozenset({("model", MODEL_NAME)})
    batches = frozenset({("model", MODEL_NAME), ("route", "/v1/score/batch")})
    before = samples(server)
    out = simulate(
        server, f"--plant={plant_json}", "--rate=400", "--count=96", "--batch=16", "--anomaly-rate=0.3",
        "--outlier-rate=0.1", "--seed=5",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    after = samples(server)

    def delta(name: str, labels: frozenset[tuple[str, str]]) -> float:
        return after[(name, labels)] - before[(name, labels)]

    assert summary["sent"] == 96 and summary["errors"] == {}
    assert delta("anomaly_readings_scored_total", model) == 96
    assert delta("anomaly_readings_anomalous_total", model) == summary["flagged"]
    assert summary["flagged"] == summary["flagged_faulty"] + summary["flagged_normal"]
    assert summary["faulty"] > 0 and summary["flagged_faulty"] > 0
    assert delta("anomaly_batch_size_rows_count", batches) == 6
    assert "simulate: done: sent 96" in out.stderr


def test_a_plant_that_is_not_the_model_s_is_refused(server: LiveServer) -> None:
    out = simulate(server, "--sensors=40", "--plant-seed=999", "--count=5")
    assert out.returncode == 2
    assert "the model serves 40 sensors" in out.stderr and "--plant plant.json" in out.stderr


def test_sigterm_ends_the_stream_with_its_summary(server: LiveServer, plant_json: Path) -> None:
    process = subprocess.Popen(
        [*SIMULATE, f"--url={server.url}", f"--api-key={API_KEY}", f"--plant={plant_json}", "--rate=50",
         "--report-every=0.5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        key = ("anomaly_readings_scored_total", frozenset({("model", MODEL_NAME)}))
        sent_before = samples(server)[key]
        while samples(server)[key] < sent_before + 40:  # 0.8 s: one status line (every 0.5 s) printed
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["sent"] >= 40
    assert "simulate: sent" in stderr  # the periodic status line


def test_bad_arguments_exit_2() -> None:
    out = subprocess.run(
        [*SIMULATE, "--url=http://x", "--anomaly-rate=0.7"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2 and "--anomaly-rate must be in [0, 0.5)" in out.stderr


def test_it_imports_no_training_stack() -> None:
    code = (
        "import sys, factory_anomaly.plant.simulate\n"
        "heavy = {'torch', 'onnx', 'pandas', 'scipy', 'sklearn'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_machines_stream_with_their_asset_and_alarms(server: LiveServer, plant_json: Path) -> None:
    out = simulate(
        server, f"--plant={plant_json}", "--rate=2000", "--count=600", "--batch=20", "--anomaly-rate=0.3",
        "--outlier-rate=0.05", "--seed=7", "--assets=3", "--asset-prefix=sim-line/m-",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["sent"] == 600 and summary["assets"] == 3 and summary["errors"] == {}
    assert summary["alarms_opened"] >= 1  # outliers on 5 % of readings: some machine's alarm opens
    assets = httpx.get(f"{server.url}/v1/assets", headers={"X-API-Key": API_KEY}).json()["assets"]
    readings = {a["asset"]: a["readings"] for a in assets if a["asset"].startswith("sim-line/")}
    assert readings == {"sim-line/m-1": 200, "sim-line/m-2": 200, "sim-line/m-3": 200}
    assert "3 machines" in out.stderr
