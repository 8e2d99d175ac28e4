"""Latency of explaining one reading with the shipped model's attention explainer (`POST /v1/explain`).

Measures (a) in process: the explainer graph's onnxruntime session (the service's session options) at
batch 1, with 1 and with 2 intra-op threads, `--runs` timed runs each after a warm-up, p50/p99 ms; (b) over
HTTP: a real uvicorn (`python -m uvicorn factory_anomaly.app.main:app`, ANOMALY_MODEL_STORE /
ANOMALY_MODEL_NAME set, every other setting at its default) on a free port, and `--requests` sequential
`POST /v1/explain` requests (top_k 10) from one keep-alive `httpx.Client`, after a warm-up, p50/p99 ms. An
HTTP latency is the client's: sending the pre-encoded body, the round trip over loopback, the server's
parsing, explainer run and logging, and decoding the answer. Readings are real readings of the synthetic
plant the shipped model was trained on (plant seed 0, run seed 5, 20 % of readings in fault episodes),
cycled.

For (b) the server is pinned to CPU 0 and this process, the client, to CPU 1 where os.sched_setaffinity
works (the output says whether); (a) runs before the pinning, on every CPU this process may use.
Prints a table with the command that produced it and writes JSON. The figures, with the command that
measured them: docs/explainer.md, "Cost".

    .venv/bin/python -m bench.explain_latency [--model model_store/factory-ae] [--runs 1000]
        [--requests 500] [--out bench/results/explain_latency.json]

Exits 1, saying so, when the model's CURRENT version has no explainer graph. Needs the `train` extra (the
synthetic plant). Run it alone: the machine has two cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from bench.common import (
    APP,
    JSON,
    PLANT_SEED,
    READINGS_SEED,
    SERVER_CPU,
    Pinning,
    Server,
    default_python,
    heading,
    json_reading,
    latency_ms,
    markdown_table,
    ort_session,
    pin_client,
    plant_readings,
    results_head,
    server_env,
    time_each_ms,
    write_results,
)
from factory_anomaly.artifact import EXPLAINER, ArtifactError, resolve_current, verify_artifact

READING_ROWS, ANOMALY_RATE = 600, 0.2
TOP_K = 10
WARMUP_RUNS = 50


def _in_process(graph: Path, input_name: str, x: np.ndarray, threads: int, runs: int) -> np.ndarray:
    session = ort_session(graph, threads)
    rows = [x[i : i + 1] for i in range(len(x))]

    def run(row: np.ndarray) -> object:
        return session.run(None, {input_name: row})

    time_each_ms(run, rows, WARMUP_RUNS)
    return time_each_ms(run, rows, runs)


def _over_http(
    python: Path, store: Path, name: str, x: np.ndarray, requests: int, pinning: Pinning, log_path: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    server = Server(python, APP, server_env(store, name), log_path, pinning.server_cpu)
    try:
        bodies = [json_reading(row, top_k=TOP_K) for row in x]
        server.wait_ready()
        anomalous = 0
        with httpx.Client(base_url=server.url, timeout=30.0) as client:

            def explain(body: bytes) -> None:
                nonlocal anomalous
                response = client.post("/v1/explain", content=body, headers={"Content-Type": JSON})
                if response.status_code != 200:
                    raise RuntimeError(f"/v1/explain answered {response.status_code}: {response.text[:500]}")
                anomalous += bool(response.json()["is_anomaly"])

            time_each_ms(explain, bodies, WARMUP_RUNS)
            anomalous = 0
            ms = time_each_ms(explain, bodies, requests)
        facts = {
            "server_threads_pinned": pinning.applied and server.threads_on(SERVER_CPU),
            "anomalous_answers": anomalous,
        }
        return ms, facts
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("model_store/factory-ae"), help="<store>/<name>")
    parser.add_argument("--runs", type=int, default=1000, help="timed in-process runs per thread count")
    parser.add_argument("--requests", type=int, default=500, help="timed sequential HTTP requests")
    parser.add_argument("--python", type=Path, default=default_python(), help="interpreter for uvicorn")
    parser.add_argument("--out", type=Path, default=Path("bench/results/explain_latency.json"))
    args = parser.parse_args(argv)

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
    x = plant_readings(manifest.sensor_names, READING_ROWS, anomaly_rate=ANOMALY_RATE)

    results: list[dict[str, Any]] = []
    for threads in (1, 2):
        ms = _in_process(version / spec.file, spec.inputs[0].name, x, threads, args.runs)
        results.append(
            {"what": "explainer session, batch 1", "threads": f"intra-op {threads}", **latency_ms(ms, 4)}
        )
    pinning = pin_client()  # after the in-process runs, which may use every CPU
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        ms, facts = _over_http(
            args.python, args.model.parent, args.model.name, x, args.requests, pinning, log_path
        )
    results.append(
        {
            "what": f"POST /v1/explain (top_k {TOP_K}) over HTTP",
            "threads": "server defaults",
            **latency_ms(ms, 4),
        }
    )

    report = results_head("bench.explain_latency", argv, pinning, manifest) | {
        "onnxruntime": ort.__version__,
        "readings": {
            "plant_seed": PLANT_SEED,
            "seed": READINGS_SEED,
            "rows": READING_ROWS,
            "anomaly_rate": ANOMALY_RATE,
        },
        "http": facts,
        "results": results,
    }
    _print(report)
    write_results(report, args.out)
    return 0


def _print(report: dict[str, Any]) -> None:
    model, http = report["model"], report["http"]
    print(heading(report))
    print(
        f"# onnxruntime {report['onnxruntime']}; model {model['name']}/{model['version']} "
        f"({model['n_sensors']} sensors)"
    )
    pinned = "yes" if http["server_threads_pinned"] else "no"
    print(
        f"# pinning: {report['pinning']['detail']} (every server thread on its CPU: {pinned}); "
        f"HTTP answers flagged anomalous: {http['anomalous_answers']}"
    )
    print(
        markdown_table(
            ["measurement", "threads", "n", "p50 ms", "p99 ms", "mean ms"],
            (
                [r["what"], r["threads"], r["n"]]
                + [f"{r[key]:.3f}" for key in ("p50_ms", "p99_ms", "mean_ms")]
                for r in report["results"]
            ),
            left=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
