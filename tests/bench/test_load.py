"""`make bench`'s harness (bench/load.py) as a smoke run on the shipped model: every server answers every
route, the issue 17 comparison (ours twice, the lean app, in alternation) lands in one table with its
ratios and targets; and the lean reference refuses malformed and invalid readings, as ours does (with
our own codes and statuses)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from bench.common import ROOT, Server, default_python


@pytest.mark.slow
def test_a_short_load_run_measures_ours_lean_and_the_plant_configuration(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = [sys.executable, "-m", "bench.load", "--duration-s", "1", "--warmup-s", "0", "--connections", "1",
            "--repeats", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    by = {(r["key"], r["connections"]): r for r in results["runs"]}
    for key in ("score", "batch_json", "batch_binary", "explain", "plant_score", "plant_batch_json",
                "lean_score", "lean_batch", "typical_score", "floor", "floor_binary",
                "v2_batch_binary", "shadow_score"):  # fmt: skip
        assert by[(key, 1)]["requests"] > 0, key
    v2 = by[("v2_batch_binary", 1)]  # V2's binary extension next to /v1's binary batch (issue 18)
    assert v2["v2_vs_v1"] == pytest.approx(v2["readings_per_s"] / by[("batch_binary", 1)]["readings_per_s"])
    # ours, lean, ours-plant and ours-shadow ran twice each, alternating; every figure is the median of two
    assert [len(results["repetitions"][name]) for name in ("ours", "lean", "ours-plant", "ours-shadow")] == [
        2
    ] * 4
    shadowed = by[("shadow_score", 1)]  # a shadow loaded against none (issue 18)
    assert shadowed["p99_vs_unshadowed"] == pytest.approx(shadowed["p99_ms"] / by[("score", 1)]["p99_ms"])
    assert by[("score", 1)]["repetitions"] == 2
    first, second = (rows[0]["requests_per_s"] for rows in results["repetitions"]["ours"])
    assert by[("score", 1)]["requests_per_s"] == pytest.approx((first + second) / 2)
    assert by[("score", 1)]["vs_lean"] == pytest.approx(
        by[("score", 1)]["readings_per_s"] / by[("lean_score", 1)]["readings_per_s"]
    )
    assert by[("plant_batch_json", 1)]["vs_lean"] is not None
    targets = {t["target"]: t for t in results["targets"]}
    assert "single JSON, ours (as a plant runs it) >= 1.0x lean req/s at 1 connection(s)" in targets
    assert any(name.startswith("RSS after warm-up <= lean's + 15 MiB") for name in targets)
    assert "ours/lean" in done.stdout and "lean /score JSON x1" in done.stdout
    header, rule, *rows = done.stdout.split("\n\n")[0].strip().splitlines()[-len(results["runs"]) - 2 :]
    assert all(row.count("|") == header.count("|") for row in rows)  # every row fills every column
    # what the figures ran on (issue 17 §4): the provider asked for, and the one ours reports using
    accelerator = results["accelerator"]
    assert accelerator["provider"] == "cpu" and accelerator["onnxruntime_build"] in ("CPU", "GPU")
    assert results["servers"]["ours"]["provider_in_use"] == "CPUExecutionProvider"
    assert results["servers"]["ours-plant"]["provider_in_use"] == "CPUExecutionProvider"
    # how close binary batches can come to the ceiling: the graph's time plus HTTP's for the same body
    limit = results["binary_limit"]
    floor_rps = by[("floor_binary", 1)]["requests_per_s"]
    assert limit["floor_ms"] == pytest.approx(1e3 / floor_rps)
    assert 0 < limit["share_of_ceiling"] < 1 and "HTTP floor" in done.stdout


def test_cuda_without_a_cuda_onnxruntime_is_refused_before_any_server_starts(tmp_path: Path) -> None:
    """No GPU here: `--provider cuda` must say what is missing, not measure the CPU under a CUDA label."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    argv = [sys.executable, "-m", "bench.load", "--provider", "cuda", "--out", str(tmp_path / "l.json")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "--provider cuda: onnxruntime" in done.stderr, done.stderr[-2000:]
    assert "needs onnxruntime-gpu" in done.stderr and "ours:" not in done.stdout
    assert not (tmp_path / "l.json").exists()


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The lean app on a real uvicorn, serving the shipped model, started as `make bench` starts it."""
    env = {"LEAN_MODEL_DIR": str(ROOT / "model_store" / "factory-ae"), "PATH": "/usr/bin:/bin"}
    log_path = tmp_path_factory.mktemp("lean") / "lean.log"
    server = Server(default_python(), "bench.lean_service:app", env, log_path, None, ["--no-access-log"])
    try:
        server.wait_ready("/health")
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            yield client
    finally:
        server.stop()


N = 1000  # the shipped model's sensors


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/score", b"{", 400),
        ("/score", b'{"vals": []}', 400),
        ("/score", b'{"values": [1.0, 2.0]}', 422),
        ("/score", b'{"values": [' + b",".join([b"1.0"] * (N - 1) + [b"1e39"]) + b"]}", 422),
        ("/score", b'{"values": [' + b",".join([b"1.0"] * (N - 1) + [b'"x"']) + b"]}", 422),
        ("/score/batch", b'{"vectors": []}', 422),
        ("/score/batch", b'{"vectors": [[1.0]]}', 422),
    ],
)
def test_the_lean_app_refuses_malformed_and_invalid_readings(
    lean: httpx.Client, path: str, body: bytes, status: int
) -> None:
    response = lean.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_the_lean_app_scores_as_the_graph_does(lean: httpx.Client) -> None:
    from factory_anomaly.artifact import resolve_current, verify_artifact

    version = resolve_current(ROOT / "model_store" / "factory-ae")
    manifest = verify_artifact(version)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(0).normal(size=(3, N)).astype(np.float32)
    rows[2] *= 50.0  # far off: anomalous
    expected = session.run(["score"], {"readings": rows})[0]
    single = lean.post("/score", json={"values": rows[0].tolist()}).json()
    batch = lean.post("/score/batch", json={"vectors": rows.tolist()}).json()["results"]
    assert single["score"] == pytest.approx(float(expected[0]), rel=1e-5)
    assert [r["score"] for r in batch] == pytest.approx(expected.astype(float).tolist(), rel=1e-5)
    threshold = manifest.threshold.value
    assert [r["is_anomaly"] for r in batch] == [float(s) > threshold for s in expected]
    assert batch[2]["is_anomaly"]
