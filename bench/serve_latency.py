"""Latency of the running service end to end: a real uvicorn subprocess, called through the client
(`factory_anomaly_client`).

Measures (a) the time from spawning `python -m uvicorn factory_anomaly.app.main:app` to the first 200 from
`/readyz`
(polled every 5 ms), over `--starts` starts (uvicorn runs the lifespan, which loads and warms the model,
before it binds the port, so the first HTTP answer is normally already that 200); (b) `--requests`
sequential `POST /v1/score` calls with the sync client, after a warm-up, on real readings of the
synthetic plant the shipped model was trained on (plant seed 0, 10 % of readings in fault episodes);
(c) the same number of `POST /v1/score/batch` calls, binary float32, `--batch-rows` rows each; (d) the
server's resident memory (VmRSS, and the peak VmHWM) after the warm-up and after the run. Latency is the
client's: encoding, the HTTP round trip over loopback, the server's parsing, scoring and logging, and
decoding the answer.

The server runs with its defaults (ANOMALY_MODEL_STORE and ANOMALY_MODEL_NAME set, nothing else), pinned
to CPU 0; this process, the client, to CPU 1, when the machine allows it (the output says whether).
Prints a table with the command that produced it and the machine, and writes JSON.

    .venv/bin/python -m bench.serve_latency [--starts 5] [--requests 1000] [--out FILE.json]

Needs the `train` extra (the synthetic plant). Run it alone: the machine has two cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from factory_anomaly_client import AnomalyClient

from bench.server import CLIENT_CPU, POLL_S, SERVER_CPU, Server, can_pin, default_python
from factory_anomaly.plant.synthetic import Plant, PlantConfig

PLANT_SEED, READINGS_SEED, ANOMALY_RATE = 0, 5, 0.1


def _pin_client() -> tuple[bool, str]:
    """Pin this process (the client) to CLIENT_CPU when the server can have SERVER_CPU (pinned at spawn)."""
    pinned, how = can_pin()
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    return pinned, how


def _latencies_ms(call: Callable[[Any], object], inputs: list[Any], n: int) -> np.ndarray:
    gc.collect()
    out = np.empty(n)
    for i in range(n):
        x = inputs[i % len(inputs)]
        started = time.perf_counter()
        call(x)
        out[i] = time.perf_counter() - started
    return out * 1e3


def _summary(ms: np.ndarray, rows_per_request: int) -> dict[str, float | int]:
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    total_s = float(ms.sum()) / 1e3
    return {
        "requests": len(ms),
        "rows_per_request": rows_per_request,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "requests_per_s": len(ms) / total_s,
        "readings_per_s": len(ms) * rows_per_request / total_s,
    }


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
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

    pinned, pinning = _pin_client()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env |= {"ANOMALY_MODEL_STORE": args.model_store, "ANOMALY_MODEL_NAME": args.model_name}
    workdir = Path(tempfile.mkdtemp(prefix="serve-latency-"))

    # (a) startup: every start timed; the last server stays up for the rest.
    first_answer_ms, ready_ms = [], []
    server: Server | None = None
    try:
        for i in range(args.starts):
            server = Server(
                args.python,
                "factory_anomaly.app.main:app",
                env,
                workdir / f"server-{i}.log",
                SERVER_CPU if pinned else None,
            )
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
            plant = Plant(PlantConfig(n_sensors=model["n_sensors"]), plant_seed=PLANT_SEED)
            if list(plant.sensor_names) != model["sensor_names"]:
                raise SystemExit("the served model's sensors are not the synthetic plant's (plant seed 0)")
            n_rows = max(args.requests + args.warmup, 32 * args.batch_rows)
            values = plant.simulate(n_rows, seed=READINGS_SEED, anomaly_rate=ANOMALY_RATE).values
            singles = list(values)
            batches = [
                values[j : j + args.batch_rows]
                for j in range(0, n_rows - args.batch_rows + 1, args.batch_rows)
            ]

            _latencies_ms(client.score, singles[args.requests :] or singles, args.warmup)
            _latencies_ms(client.score_batch, batches, args.warmup)
            memory_warm = server.memory_mib()
            single_ms = _latencies_ms(client.score, singles, args.requests)  # (b)
            batch_ms = _latencies_ms(client.score_batch, batches, args.requests)  # (c)
            memory_after = server.memory_mib()  # (d)
    finally:
        exit_status = server.stop() if server is not None else None

    command = "python -m bench.serve_latency " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": command.strip(),
        "machine": _machine(),
        "pinning": {"applied": pinned, "detail": pinning},
        "server": {
            "command": (
                f"{args.python} -m uvicorn factory_anomaly.app.main:app --host 127.0.0.1 --port <free>"
            ),
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"# written to {args.out}")
    return 0


def _print(r: dict[str, Any]) -> None:
    m, s = r["machine"], r["startup_ms"]
    model = r["model"]
    print(f"# {r['command']}")
    print(f"# {m['host']}, {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['os']}")
    print(
        f"# model {model.get('name')} {model.get('version')} ({model.get('n_sensors')} sensors, "
        f"{model.get('provider')}); pinning {'applied' if r['pinning']['applied'] else 'NOT applied'}: "
        f"{r['pinning']['detail']}"
    )
    print(
        f"startup, spawn -> /readyz 200 over {s['starts']} starts: median {s['ready_median']:.0f} ms, "
        f"max {s['ready_max']:.0f} ms (first HTTP answer: median {s['first_answer_median']:.0f} ms)"
    )
    print(
        f"{'request':<40} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'readings/s':>11}"
    )
    for label, key in (
        ("POST /v1/score (JSON, 1 reading)", "score"),
        (
            f"POST /v1/score/batch (binary, {r['score_batch_binary']['rows_per_request']} rows)",
            "score_batch_binary",
        ),
    ):
        x = r[key]
        print(
            f"{label:<40} {x['requests']:>6} {x['p50_ms']:8.2f} {x['p90_ms']:8.2f} {x['p99_ms']:8.2f} "
            f"{x['max_ms']:8.2f} {x['readings_per_s']:11.0f}"
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
