"""Does dynamic micro-batching pay? `/v1/score` (one JSON reading per request) with it off and on.

The same closed-loop wrk load as `bench.load` (server pinned to CPU 0, wrk to CPU 1 where the machine
allows it; bodies pre-built from real readings of the synthetic plant) against one uvicorn per
configuration, at 1, 8, 32 and 64 connections. Each configuration is a set of ANOMALY_MICROBATCH_*
variables (`factory_anomaly.app.serving.batcher`); after the runs the server's own metrics give the realised
batch size and the queue wait, so the table says not only how fast but how much batching actually happened.
The figures, with the command that measured them: docs/benchmarks.md, change 4
("Dynamic micro-batching").

    .venv/bin/python -m bench.microbatch [--duration-s 5] [--out bench/results/microbatch.json]

Needs `wrk` (`make bench` installs it); run it alone (two cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    APP,
    ROOT,
    SCORE,
    Samples,
    Server,
    default_python,
    fmt,
    heading,
    markdown_table,
    metric_samples,
    pin_client,
    plant_readings,
    require_wrk,
    results_head,
    server_env,
    write_bodies,
    write_results,
    wrk,
)
from factory_anomaly.artifact import resolve_current, verify_artifact

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "off": {},
    "max 32, no delay": {"ANOMALY_MICROBATCH_MAX_BATCH": "32", "ANOMALY_MICROBATCH_MAX_DELAY_US": "0"},
    "max 32, 250 µs": {"ANOMALY_MICROBATCH_MAX_BATCH": "32", "ANOMALY_MICROBATCH_MAX_DELAY_US": "250"},
    "max 32, 1 ms": {"ANOMALY_MICROBATCH_MAX_BATCH": "32", "ANOMALY_MICROBATCH_MAX_DELAY_US": "1000"},
}
READING_ROWS = 4096


def _histogram(samples: Samples, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram over all its label sets."""
    total = sum(value for (sample, _), value in samples.items() if sample == f"{name}_sum")
    count = sum(value for (sample, _), value in samples.items() if sample == f"{name}_count")
    return total, count


def _mean_between(before: Samples, after: Samples, name: str) -> float | None:
    """The mean of what a histogram observed between two scrapes; None when it observed nothing."""
    (sum_before, count_before), (sum_after, count_after) = _histogram(before, name), _histogram(after, name)
    count = count_after - count_before
    return (sum_after - sum_before) / count if count else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--connections", default="1,8,32,64")
    parser.add_argument("--python", type=Path, default=default_python())
    parser.add_argument("--out", type=Path, default=Path("bench/results/microbatch.json"))
    args = parser.parse_args(argv)
    connections = tuple(int(c) for c in args.connections.split(","))
    wrk_version = require_wrk()

    started = time.perf_counter()
    model_dir = resolve_current(ROOT / "model_store" / "factory-ae")
    manifest = verify_artifact(model_dir)
    values = plant_readings(manifest.sensor_names, READING_ROWS)
    pinning = pin_client()
    env = server_env("model_store", "factory-ae")
    workdir = Path(tempfile.mkdtemp(prefix="bench-microbatch-"))
    bodies = write_bodies(values, workdir)["single"]

    rows: list[dict[str, Any]] = []
    for name, extra in CONFIGURATIONS.items():
        server = Server(args.python, APP, env | extra, workdir / "server.log", pinning.server_cpu)
        try:
            server.wait_ready("/readyz")
            wrk(server.url, SCORE, bodies, 8, 1, pinning.client_cpu)  # warm-up
            for c in connections:
                if args.warmup_s > 0:
                    wrk(server.url, SCORE, bodies, c, args.warmup_s, pinning.client_cpu)
                before = metric_samples(httpx.get(f"{server.url}/metrics").text)
                r = wrk(server.url, SCORE, bodies, c, args.duration_s, pinning.client_cpu)
                after = metric_samples(httpx.get(f"{server.url}/metrics").text)
                wait_s = _mean_between(before, after, "anomaly_microbatch_queue_wait_seconds")
                row = {
                    "configuration": name,
                    "env": extra,
                    "connections": c,
                    "requests": r["requests"],
                    "requests_per_s": r["requests_per_s"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "mean_batch_rows": _mean_between(before, after, "anomaly_microbatch_size_rows"),
                    "mean_queue_wait_us": None if wait_s is None else wait_s * 1e6,
                    "rss_mib": server.rss_mib(),
                }
                rows.append(row)
                print(
                    f"  {name:<18} c={c:<3} {row['requests_per_s']:7.0f} req/s  p50 {row['p50_ms']:6.2f} ms  "
                    f"p99 {row['p99_ms']:6.2f} ms  mean batch {fmt(row['mean_batch_rows'], '.1f')}",
                    flush=True,
                )
        finally:
            server.stop()

    off = {r["connections"]: r for r in rows if r["configuration"] == "off"}
    for r in rows:
        r["throughput_vs_off"] = r["requests_per_s"] / off[r["connections"]]["requests_per_s"]
        r["p99_vs_off"] = r["p99_ms"] / off[r["connections"]]["p99_ms"]
    results = results_head("bench.microbatch", argv, pinning, manifest, wrk_version) | {
        "duration_s": args.duration_s,
        "runs": rows,
        "wall_s": time.perf_counter() - started,
    }
    print(f"\n{heading(results)}")
    print(
        markdown_table(
            [
                "configuration",
                "connections",
                "req/s",
                "vs off",
                "p50 ms",
                "p99 ms",
                "p99 vs off",
                "mean batch",
            ],
            (
                [r["configuration"], r["connections"], f"{r['requests_per_s']:.0f}"]
                + [f"{r['throughput_vs_off']:.2f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
                + [f"{r['p99_vs_off']:.2f}", fmt(r["mean_batch_rows"], ".1f")]
                for r in rows
            ),
        )
    )
    write_results(results, args.out)
    print(f"# in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
