"""Latency of explaining one reading with the shipped model's attention explainer (`POST /v1/explain`).

Measures (a) in process: the explainer graph's onnxruntime session (the service's session options) at
batch 1, with 1 and with 2 intra-op threads, `--runs` timed runs each after a warm-up, p50/p99 ms; (b) over
HTTP: a real uvicorn (`python -m uvicorn factory_anomaly.app.main:app`, ANOMALY_MODEL_STORE /
ANOMALY_MODEL_NAME set,
every other setting at its default) on a free port, and `--requests` sequential `POST /v1/explain`
requests (top_k 10) from one keep-alive `httpx.Client`, after a warm-up, p50/p99 ms. An HTTP latency is
the client's: sending the pre-encoded body, the round trip over loopback, the server's parsing, explainer
run and logging, and decoding the answer. Readings are real readings of the synthetic plant the shipped
model was trained on (plant seed 0, run seed 5, 20 % of readings in fault episodes), cycled.

For (b) the server is pinned to CPU 0 and this process, the client, to CPU 1 where os.sched_setaffinity
works (the output says whether); (a) runs before the pinning, on every CPU this process may use.
Prints a table with the command that produced it and writes JSON.

    .venv/bin/python -m bench.explain_latency [--model model_store/factory-ae] [--runs 1000]
        [--requests 500] [--out bench/results/explain_latency.json]

Exits 1, saying so, when the model's CURRENT version has no explainer graph. Needs the `train` extra (the
synthetic plant). Run it alone: the machine has two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from bench.server import CLIENT_CPU, SERVER_CPU, Server, can_pin, default_python
from factory_anomaly.artifact import EXPLAINER, ArtifactError, resolve_current, verify_artifact
from factory_anomaly.plant.synthetic import Plant, PlantConfig

PLANT_SEED, READINGS_SEED, READING_ROWS, ANOMALY_RATE = 0, 5, 600, 0.2
TOP_K = 10
WARMUP_RUNS = 50


def _session(graph: Path, intra_op_threads: int) -> ort.InferenceSession:
    """The service's session options (app.scoring.load_model) with `intra_op_threads`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _summary(ms: np.ndarray) -> dict[str, float | int]:
    p50, p99 = np.percentile(ms, [50, 99])
    return {
        "n": len(ms),
        "p50_ms": round(float(p50), 4),
        "p99_ms": round(float(p99), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def _in_process(graph: Path, input_name: str, x: np.ndarray, threads: int, runs: int) -> np.ndarray:
    session = _session(graph, threads)
    rows = [x[i : i + 1] for i in range(len(x))]
    for i in range(WARMUP_RUNS):
        session.run(None, {input_name: rows[i % len(rows)]})
    ms = np.empty(runs)
    for i in range(runs):
        started = time.perf_counter()
        session.run(None, {input_name: rows[i % len(rows)]})
        ms[i] = (time.perf_counter() - started) * 1e3
    return ms


def _server_threads_pinned(pid: int) -> bool:
    """Every thread of the server is on SERVER_CPU only (threads inherit the affinity they start with)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        return all(os.sched_getaffinity(tid) == {SERVER_CPU} for tid in tids)
    except OSError:
        return False


def _over_http(
    python: Path, store: Path, name: str, x: np.ndarray, requests: int, pin: bool, log_path: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env |= {"ANOMALY_MODEL_STORE": str(store), "ANOMALY_MODEL_NAME": name}
    server = Server(python, "factory_anomaly.app.main:app", env, log_path, SERVER_CPU if pin else None)
    try:
        if pin:
            os.sched_setaffinity(0, {CLIENT_CPU})
        bodies = [json.dumps({"values": row.tolist(), "top_k": TOP_K}).encode() for row in x]
        headers = {"Content-Type": "application/json"}
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            for i in range(WARMUP_RUNS):
                _explain(client, bodies[i % len(bodies)], headers)
            ms = np.empty(requests)
            anomalous = 0
            for i in range(requests):
                started = time.perf_counter()
                answer = _explain(client, bodies[i % len(bodies)], headers)
                ms[i] = (time.perf_counter() - started) * 1e3
                anomalous += bool(answer["is_anomaly"])
        facts = {
            "server_threads_pinned": _server_threads_pinned(server.process.pid) if pin else False,
            "anomalous_answers": anomalous,
        }
        return ms, facts
    finally:
        server.stop()


def _explain(client: httpx.Client, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/v1/explain", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"/v1/explain answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return answer


def _readings(sensor_names: tuple[str, ...]) -> np.ndarray:
    """float32 [READING_ROWS, n] real plant readings in the model's sensor order."""
    plant = Plant(PlantConfig(), plant_seed=PLANT_SEED)
    values = plant.simulate(READING_ROWS, seed=READINGS_SEED, anomaly_rate=ANOMALY_RATE).values
    column = {sensor: j for j, sensor in enumerate(plant.sensor_names)}
    missing = [sensor for sensor in sensor_names if sensor not in column]
    if missing:
        raise SystemExit(
            f"the model's sensors are not the synthetic plant's (e.g. {missing[0]!r}); this benchmark "
            "needs a model trained on the default plant (`make model`)"
        )
    return np.ascontiguousarray(values[:, [column[sensor] for sensor in sensor_names]], dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("model_store/factory-ae"), help="<store>/<name>")
    parser.add_argument("--runs", type=int, default=1000, help="timed in-process runs per thread count")
    parser.add_argument("--requests", type=int, default=500, help="timed sequential HTTP requests")
    parser.add_argument("--python", type=Path, default=default_python(), help="interpreter for uvicorn")
    parser.add_argument("--out", type=Path, default=Path("bench/results/explain_latency.json"))
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python -m bench.explain_latency", *(argv or sys.argv[1:])])

    try:
        version = resolve_current(args.model)
        manifest = verify_artifact(version)
    except ArtifactError as exc:
        print(f"error: {args.model}: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    spec = manifest.graphs.get(EXPLAINER)
    if spec is None:
        print(
            f"error: {version} has no explainer graph (no {EXPLAINER!r} in manifest.json's graphs), so there "
            "is nothing to measure; publish a version with the explainer (`make model` trains it, or "
            "`python -m factory_anomaly.training explain` adds one to this version) and run again",
            file=sys.stderr,
        )
        return 1
    x = _readings(manifest.sensor_names)

    results: list[dict[str, Any]] = []
    for threads in (1, 2):
        ms = _in_process(version / spec.file, spec.inputs[0].name, x, threads, args.runs)
        results.append(
            {"what": "explainer session, batch 1", "threads": f"intra-op {threads}", **_summary(ms)}
        )
    pin, pinning = can_pin()
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ms, facts = _over_http(
                args.python,
                args.model.parent,
                args.model.name,
                x,
                args.requests,
                pin,
                Path(tmp) / "server.log",
            )
    finally:
        if pin and allowed is not None:
            os.sched_setaffinity(0, allowed)
    results.append(
        {"what": f"POST /v1/explain (top_k {TOP_K}) over HTTP", "threads": "server defaults", **_summary(ms)}
    )

    report = {
        "command": command,
        "machine": {
            "node": platform.node(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
        },
        "model": {"name": manifest.name, "version": manifest.version, "n_sensors": manifest.n_sensors},
        "readings": {
            "plant_seed": PLANT_SEED,
            "seed": READINGS_SEED,
            "rows": READING_ROWS,
            "anomaly_rate": ANOMALY_RATE,
        },
        "pinning": pinning,
        "http": facts,
        "results": results,
    }
    _print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _print(report: dict[str, Any]) -> None:
    machine, model = report["machine"], report["model"]
    print(f"# {report['command']}")
    print(
        f"# {machine['node']}, {machine['processor']}, {machine['cpus']} CPUs, onnxruntime "
        f"{machine['onnxruntime']}; model {model['name']}/{model['version']} ({model['n_sensors']} sensors)"
    )
    http = report["http"]
    pinned = "yes" if http["server_threads_pinned"] else "no"
    print(
        f"# pinning: {report['pinning']} (every server thread on its CPU: {pinned}); "
        f"HTTP answers flagged anomalous: {http['anomalous_answers']}"
    )
    header = f"{'measurement':<40} {'threads':<16} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(
            f"{r['what']:<40} {r['threads']:<16} {r['n']:>6} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} "
            f"{r['mean_ms']:>9.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
