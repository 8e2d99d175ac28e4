"""Latency of the running service end to end: a real uvicorn subprocess, called through the client
(`factory_anomaly_client`).

Measures (a) the time from spawning `python -m uvicorn factory_anomaly.app.main:app` to the first 200
from `/readyz` (polled every 5 ms), over `--starts` starts (uvicorn runs the lifespan, which loads and
warms the model, before it binds the port, so the first HTTP answer is normally already that 200);
(b) `--requests` sequential `POST /v1/score` calls with the sync client, after a warm-up, on real readings
of the synthetic plant the shipped model was trained on (plant seed 0, 10 % of readings in fault
episodes); (c) the same number of `POST /v1/score/batch` calls, binary float32, `--batch-rows` rows each;
(d) the server's resident memory (VmRSS, and the peak VmHWM) after the warm-up and after the run. Latency
is the client's: encoding, the HTTP round trip over loopback, the server's parsing, scoring and logging, and
decoding the answer.

The server runs with its defaults (ANOMALY_MODEL_STORE and ANOMALY_MODEL_NAME set, nothing else), pinned
to CPU 0; this process, the client, to CPU 1, when the machine allows it (the output says whether).
Prints a table with the command that produced it and the machine, and writes JSON. The figures, with the
command that measured them: docs/benchmarks.md, "Related measurements".

    .venv/bin/python -m bench.serve_latency [--starts 5] [--requests 1000] [--out FILE.json]

Needs the `train` extra (the synthetic plant). Run it alone: the machine has two cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from factory_anomaly_client import AnomalyClient

from bench.common import (
    ANOMALY_RATE,
    APP,
    PLANT_SEED,
    POLL_S,
    READINGS_SEED,
    Server,
    default_python,
    heading,
    latency_ms,
    markdown_table,
    pin_client,
    plant_readings,
    results_head,
    server_env,
    time_each_ms,
    write_results,
)


def _summary(ms: np.ndarray, rows_per_request: int) -> dict[str, Any]:
    """Percentiles, and the sequential rate the latencies add up to."""
    total_s = float(ms.sum()) / 1e3
    return {
        "requests": len(ms),
        "rows_per_request": rows_per_request,
        **latency_ms(ms),
        "requests_per_s": len(ms) / total_s,
        "readings_per_s": len(ms) * rows_per_request / total_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="server starts timed to /readyz 200")
    parser.add_argument("--requests", type=int, default=1000, help="timed requests of each kind")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests of each kind first")
    parser.add_argument("--batch-rows", type=int, default=64)
    parser.add_argument("--model-store", default="model_store")
    parser.add_argument("--model-name", default="factory-ae")
    parser.add_argument("--python", type=Path, default=default_python(), help="runs uvicorn")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_latency.json"))
    args = parser.parse_args(argv)
    if args.starts < 1 or args.requests < 1 or args.warmup < 0 or args.batch_rows < 1:
        parser.error("--starts, --requests and --batch-rows must be >= 1, --warmup >= 0")

    pinning = pin_client()
    env = server_env(args.model_store, args.model_name)
    workdir = Path(tempfile.mkdtemp(prefix="serve-latency-"))

    # (a) startup: every start timed; the last server stays up for the rest.
    first_answer_ms, ready_ms = [], []
    server: Server | None = None
    try:
        for i in range(args.starts):
            server = Server(args.python, APP, env, workdir / f"server-{i}.log", pinning.server_cpu)
            ready = server.wait_ready()
            answered = server.first_answer_s
            assert answered is not None
            first_answer_ms.append(answered * 1e3)
            ready_ms.append(ready * 1e3)
            if i < args.starts - 1:
                server.stop()
        assert server is not None

        with AnomalyClient(server.url, retries=0, timeout_s=30.0) as client:
            model = client.model()
            n_rows = max(args.requests + args.warmup, 32 * args.batch_rows)
            values = plant_readings(model["sensor_names"], n_rows)
            singles = list(values)
            batches = [
                values[j : j + args.batch_rows]
                for j in range(0, n_rows - args.batch_rows + 1, args.batch_rows)
            ]

            time_each_ms(client.score, singles[args.requests :] or singles, args.warmup)
            time_each_ms(client.score_batch, batches, args.warmup)
            memory_warm = server.memory_mib()
            single_ms = time_each_ms(client.score, singles, args.requests)  # (b)
            batch_ms = time_each_ms(client.score_batch, batches, args.requests)  # (c)
            memory_after = server.memory_mib()  # (d)
    finally:
        exit_status = server.stop() if server is not None else None

    results = results_head("bench.serve_latency", argv, pinning) | {
        "server": {
            "command": server.shown_command,
            "env": {k: v for k, v in env.items() if k.startswith("ANOMALY_")},
            "exit_status": exit_status,
        },
        "model": {key: model[key] for key in ("name", "version", "n_sensors", "provider") if key in model},
        "readings": {
            "plant_seed": PLANT_SEED,
            "seed": READINGS_SEED,
            "anomaly_rate": ANOMALY_RATE,
            "rows": n_rows,
        },
        "startup_ms": {
            "starts": args.starts,
            "to_ready": ready_ms,
            "to_first_answer": first_answer_ms,
            "ready_median": statistics.median(ready_ms),
            "ready_max": max(ready_ms),
            "first_answer_median": statistics.median(first_answer_ms),
            "poll_ms": POLL_S * 1e3,
        },
        "warmup_requests": args.warmup,
        "score": _summary(single_ms, 1),
        "score_batch_binary": _summary(batch_ms, args.batch_rows),
        "server_memory_mib": {"after_warmup": memory_warm, "after_run": memory_after},
    }
    _print(results)
    write_results(results, args.out)
    return 0


def _print(r: dict[str, Any]) -> None:
    s, model = r["startup_ms"], r["model"]
    print(heading(r))
    applied = "applied" if r["pinning"]["applied"] else "NOT applied"
    print(
        f"# model {model.get('name')} {model.get('version')} ({model.get('n_sensors')} sensors, "
        f"{model.get('provider')}); pinning {applied}: {r['pinning']['detail']}"
    )
    print(
        f"startup, spawn -> /readyz 200 over {s['starts']} starts: median {s['ready_median']:.0f} ms, "
        f"max {s['ready_max']:.0f} ms (first HTTP answer: median {s['first_answer_median']:.0f} ms)"
    )
    batch = r["score_batch_binary"]
    kinds = (
        ("POST /v1/score (JSON, 1 reading)", r["score"]),
        (f"POST /v1/score/batch (binary, {batch['rows_per_request']} rows)", batch),
    )
    print(
        markdown_table(
            ["request", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "readings/s"],
            (
                [label, x["requests"]]
                + [f"{x[key]:.2f}" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
                + [f"{x['readings_per_s']:.0f}"]
                for label, x in kinds
            ),
        )
    )
    memory = r["server_memory_mib"]
    if memory["after_warmup"] is None:
        print("server memory: /proc not available")
    else:
        warm, after = memory["after_warmup"], memory["after_run"]
        print(
            f"server RSS: {warm['VmRSS']:.1f} MiB after warm-up, {after['VmRSS']:.1f} MiB after the run "
            f"(peak {after['VmHWM']:.1f} MiB)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
