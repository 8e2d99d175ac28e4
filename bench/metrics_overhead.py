"""What the Prometheus instrumentation costs a request, measured in process (no sockets, no model).

(a) Middleware: an ASGI app that only answers 200 (and, as Starlette's router does, leaves the matched
route in the scope), called `--requests` times directly, bare and wrapped in
`app.observability.middleware.ServiceMiddleware` with no access lines (ACCESS_LOG_SAMPLE=0); the
difference per request is the layer's cost (the request id, two clock reads, the in-flight gauge up and
down, one histogram observation on a cached child). (b) Scoring
metrics: `Metrics.observe_scoring` for a batch of 1 and of 1024 readings of 1000 sensors (counters,
batch-size and inference histograms, score ratios and the drift share as numpy passes). (c) Rendering
`GET /metrics` of a fresh app's registry.

    .venv/bin/python -m bench.metrics_overhead [--requests 200000] [--out bench/results/metrics_overhead.json]

Prints a table with the command that produced it and writes JSON. Best of 3 repetitions for each. The
figures, with the command that measured them: docs/metrics.md, "What it costs".
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from bench.common import heading, markdown_table, results_head, write_results
from factory_anomaly.app.config import Settings
from factory_anomaly.app.main import create_app
from factory_anomaly.app.model import Assessment
from factory_anomaly.app.observability.metrics import Metrics
from factory_anomaly.app.observability.middleware import ServiceMiddleware
from factory_anomaly.app.serving.drift import DriftDetector

REPEATS = 3


class _Route:
    path_format = "/v1/score"


async def _answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _Route
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _send(message: dict[str, Any]) -> None:
    pass


async def _per_request_s(app: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await app({"type": "http", "method": "POST", "path": "/v1/score", "headers": []}, _receive, _send)
    return (time.perf_counter() - started) / n


def _best(fn: Any, n: int) -> float:
    return min(fn(n) for _ in range(REPEATS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/metrics_overhead.json"))
    args = parser.parse_args(argv)

    metrics = Metrics(CollectorRegistry(), "bench")
    wrapped = ServiceMiddleware(_answer, metrics, access_log_sample=0.0)
    bare_s = _best(lambda n: asyncio.run(_per_request_s(_answer, n)), args.requests)
    wrapped_s = _best(lambda n: asyncio.run(_per_request_s(wrapped, n)), args.requests)

    n_sensors = 1000
    rng = np.random.default_rng(0)
    model = SimpleNamespace(
        threshold=10.0,
        out_of_range_share=lambda x: np.count_nonzero((x < -2) | (x > 2), axis=1) / x.shape[1],
        calibration=DriftDetector(1e-4),  # the real calibration-drift detector every reading feeds
    )
    scoring: dict[str, float] = {}
    for rows in (1, 1024):
        x = rng.normal(size=(rows, n_sensors)).astype(np.float32)
        scores = rng.exponential(1.0, rows).astype(np.float32)
        assessment = Assessment(scores, scores > 10.0, {}, 0.001)
        calls = max(50, 20_000 // rows)

        def observe(n: int, x: np.ndarray = x, assessment: Assessment = assessment) -> float:
            started = time.perf_counter()
            for _ in range(n):
                metrics.observe_scoring("/v1/score/batch", model, x, assessment)  # type: ignore[arg-type]
            return (time.perf_counter() - started) / n

        scoring[str(rows)] = _best(observe, calls)

    app = create_app(Settings(log_level="WARNING"))
    registry = app.state.metrics.registry

    def render(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            generate_latest(registry)
        return (time.perf_counter() - started) / n

    render_s = _best(render, 200)
    report = results_head("bench.metrics_overhead", argv) | {
        "middleware_us_per_request": {
            "bare": round(bare_s * 1e6, 2),
            "with_metrics": round(wrapped_s * 1e6, 2),
            "overhead": round((wrapped_s - bare_s) * 1e6, 2),
        },
        "observe_scoring_us": {rows: round(s * 1e6, 1) for rows, s in scoring.items()},
        "render_metrics_ms": round(render_s * 1e3, 3),
        "exposition_bytes": len(generate_latest(registry)),
    }
    mw = report["middleware_us_per_request"]
    print(heading(report))
    print(
        markdown_table(
            ["what", "cost"],
            [
                ["ASGI app, bare (µs/request)", mw["bare"]],
                ["ASGI app + ServiceMiddleware, no access lines (µs/request)", mw["with_metrics"]],
                ["middleware overhead (µs/request)", mw["overhead"]],
                *(
                    [f"observe_scoring, {rows} x 1000 sensors (µs)", us]
                    for rows, us in report["observe_scoring_us"].items()
                ),
                ["render GET /metrics (ms)", report["render_metrics_ms"]],
            ],
        )
    )
    write_results(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
