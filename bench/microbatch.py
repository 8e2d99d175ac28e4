"""Does dynamic micro-batching pay? `/v1/score` (one JSON reading per request) with it off and on.

The same closed-loop wrk load as `bench.load` (server pinned to CPU 0, wrk to CPU 1 where the machine
allows it; bodies pre-built from real readings of the synthetic plant) against one uvicorn per
configuration, at 1, 8, 32 and 64 connections. Each configuration is a set of ANOMALY_MICROBATCH_*
variables (`app.batching`); after the runs the server's own metrics give the realised batch size and the
queue wait, so the table says not only how fast but how much batching actually happened.

    .venv/bin/python -m bench.microbatch [--duration-s 5] [--out bench/results/microbatch.json]

Needs `wrk` (`make bench` installs it); run it alone (two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.load import ANOMALY_RATE, OURS, PLANT_SEED, READINGS_SEED, _bodies, _wrk_version, wrk
from bench.serve_latency import _machine
from bench.server import CLIENT_CPU, ROOT, SERVER_CPU, Server, can_pin, default_python
from factory_anomaly.artifact import resolve_current, verify_artifact
from factory_anomaly.plant.synthetic import Plant, PlantConfig

CONFIGURATIONS: dict[str, dict[str, str]] = {
    "off": {},
    "max 32, no delay": {"ANOMALY_MICROBATCH_MAX_BATCH": "32", "ANOMALY_MICROBATCH_MAX_DELAY_US": "0"},
    "max 32, 250 µs": {"ANOMALY_MICROBATCH_MAX_BATCH": "32", "ANOMALY_MICROBATCH_MAX_DELAY_US": "250"},
    "max 32, 1 ms": {"ANOMALY_MICROBATCH_MAX_BATCH": "32", "ANOMALY_MICROBATCH_MAX_DELAY_US": "1000"},
}
SCORE = next(route for route in OURS if route.key == "score")


def _histogram(metrics: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram series in Prometheus text."""
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{name}_sum{{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count{{"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--connections", default="1,8,32,64")
    parser.add_argument("--python", type=Path, default=default_python())
    parser.add_argument("--out", type=Path, default=Path("bench/results/microbatch.json"))
    args = parser.parse_args(argv)
    connections = tuple(int(c) for c in args.connections.split(","))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (`make bench` installs Debian's; or apt-get install wrk)")

    started = time.perf_counter()
    model_dir = resolve_current(ROOT / "model_store" / "factory-ae")
    manifest = verify_artifact(model_dir)
    plant = Plant(PlantConfig(n_sensors=manifest.n_sensors), plant_seed=PLANT_SEED)
    values = plant.simulate(4096, seed=READINGS_SEED, anomaly_rate=ANOMALY_RATE).values.astype(np.float32)
    pinned, pinning = can_pin()
    server_cpu, client_cpu = (SERVER_CPU, CLIENT_CPU) if pinned else (None, None)
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env |= {"ANOMALY_MODEL_STORE": "model_store", "ANOMALY_MODEL_NAME": "factory-ae"}
    workdir = Path(tempfile.mkdtemp(prefix="bench-microbatch-"))
    bodies = _bodies(values, workdir)["single"]

    rows: list[dict[str, Any]] = []
    for name, extra in CONFIGURATIONS.items():
        server = Server(
            args.python, "factory_anomaly.app.main:app", env | extra, workdir / "server.log", server_cpu
        )
        try:
            server.wait_ready("/readyz")
            wrk(server.url, SCORE, bodies, 8, 1, client_cpu)  # warm-up
            for c in connections:
                if args.warmup_s > 0:
                    wrk(server.url, SCORE, bodies, c, args.warmup_s, client_cpu)
                before = httpx.get(f"{server.url}/metrics").text
                r = wrk(server.url, SCORE, bodies, c, args.duration_s, client_cpu)
                after = httpx.get(f"{server.url}/metrics").text
                if sum(r["errors"].values()):
                    raise RuntimeError(f"{name} at {c} connections: errors {r['errors']}")
                rows_sum, runs = np.subtract(
                    _histogram(after, "anomaly_microbatch_size_rows"),
                    _histogram(before, "anomaly_microbatch_size_rows"),
                )
                wait_sum, waits = np.subtract(
                    _histogram(after, "anomaly_microbatch_queue_wait_seconds"),
                    _histogram(before, "anomaly_microbatch_queue_wait_seconds"),
                )
                seconds = r["duration_us"] / 1e6
                row = {
                    "configuration": name,
                    "env": extra,
                    "connections": c,
                    "requests": r["requests"],
                    "requests_per_s": r["requests"] / seconds,
                    "p50_ms": r["latency_us"]["p50"] / 1e3,
                    "p99_ms": r["latency_us"]["p99"] / 1e3,
                    "mean_batch_rows": float(rows_sum / runs) if runs else None,
                    "mean_queue_wait_us": float(wait_sum / waits * 1e6) if waits else None,
                    "rss_mib": server.rss_mib(),
                }
                rows.append(row)
                batch = "-" if row["mean_batch_rows"] is None else f"{row['mean_batch_rows']:.1f}"
                print(
                    f"  {name:<18} c={c:<3} {row['requests_per_s']:7.0f} req/s  p50 {row['p50_ms']:6.2f} ms  "
                    f"p99 {row['p99_ms']:6.2f} ms  mean batch {batch}",
                    flush=True,
                )
        finally:
            server.stop()

    off = {r["connections"]: r for r in rows if r["configuration"] == "off"}
    for r in rows:
        r["throughput_vs_off"] = r["requests_per_s"] / off[r["connections"]]["requests_per_s"]
        r["p99_vs_off"] = r["p99_ms"] / off[r["connections"]]["p99_ms"]
    results = {
        "command": ("python -m bench.microbatch " + " ".join(sys.argv[1:] if argv is None else argv)).strip(),
        "machine": _machine(),
        "pinning": {"applied": pinned, "detail": pinning},
        "load_generator": f"{_wrk_version()} -t1, closed loop",
        "model": {"name": manifest.name, "version": manifest.version, "n_sensors": manifest.n_sensors},
        "duration_s": args.duration_s,
        "runs": rows,
        "wall_s": time.perf_counter() - started,
    }
    print("\n| configuration | connections | req/s | vs off | p50 ms | p99 ms | p99 vs off | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        batch = "-" if r["mean_batch_rows"] is None else f"{r['mean_batch_rows']:.1f}"
        print(
            f"| {r['configuration']} | {r['connections']} | {r['requests_per_s']:.0f} | "
            f"{r['throughput_vs_off']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p99_vs_off']:.2f} | "
            f"{batch} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"# written to {args.out} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
