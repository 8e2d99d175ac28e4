"""Throughput and latency of the service under load, against the onnxruntime ceiling, a typical FastAPI +
torch service and the HTTP floor (issue 7, phase 1: measurement only).

1. In-process ceiling: the shipped version's scorer graph (`model.onnx`) in an onnxruntime session built
   as the service builds it (ORT_ENABLE_ALL, 1 inter-op thread), at batch 1, 8, 64 and 512 with 1 and 2
   intra-op threads -> readings/s. Runs before any server starts, on both cores.
2. End to end over loopback with Debian's `wrk` (one thread, N keep-alive connections; closed loop: each
   connection sends its next request when the previous answer arrives, so latency is per answered request
   and a slow server lowers the offered load; no coordinated-omission correction, the percentiles are
   service times under that concurrency, not response times at a fixed arrival rate). Bodies are
   pre-built from real readings of the synthetic plant the model was trained on (plant seed 0, 10 % in
   fault episodes) and sent round-robin. Each (target, connections) run: `--warmup-s` untimed, then
   `--duration-s` timed. Targets:
     ours      `uvicorn factory_anomaly.app.main:app` (defaults): /v1/score JSON, /v1/score/batch JSON and
     binary at 64
               rows, /v1/explain;
     typical   `uvicorn bench.typical_service:app`: /score and /score/batch JSON at 64 rows;
     floor     `uvicorn bench.floor:app`: POST /noop with the single-reading body (our app, no work).
   Every server runs pinned to CPU 0, `wrk` to CPU 1 (sched_setaffinity, as `taskset -c` does), when
   the machine allows it (the output says whether). Any non-2xx answer or socket error fails the run.
3. Server RSS (VmRSS) after the warm-up of every route and after each run; start (spawn) to ready.

Prints a table with the command and the machine and writes JSON (`--out`).

    .venv/bin/python -m bench.load [--duration-s 5] [--warmup-s 1] [--out bench/results/load.json]

Needs `wrk` (`make bench` installs it) and the `train` extra (torch, the synthetic plant). Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from bench.serve_latency import _machine
from bench.server import CLIENT_CPU, ROOT, SERVER_CPU, Server, can_pin, default_python, pinned_to
from factory_anomaly.artifact import SCORER, resolve_current, verify_artifact
from factory_anomaly.plant.synthetic import Plant, PlantConfig

LUA = ROOT / "bench" / "wrk" / "post_bodies.lua"
PLANT_SEED, READINGS_SEED, ANOMALY_RATE = 0, 5, 0.1
BATCH_ROWS = 64
CEILING_BATCHES = (1, 8, 64, 512)
CEILING_THREADS = (1, 2)
CEILING_SECONDS = 0.6
SINGLE_BODIES, BATCH_BODIES = 32, 8
WRK_TIMEOUT = "10s"
MIB = 1 << 20
JSON, OCTET = "application/json", "application/octet-stream"


@dataclass(frozen=True)
class Route:
    """One kind of request: `key` names it in the JSON, `body` which pre-built bodies it posts."""

    key: str
    label: str
    path: str
    content_type: str
    body: str  # "single" | "batch_json" | "batch_binary"
    rows: int
    ceiling_batch: int | None  # the in-process batch size it is compared with (None: no comparison)
    typical: str | None = None  # the typical service's route key it is compared with


OURS = (
    Route("score", "ours /v1/score JSON x1", "/v1/score", JSON, "single", 1, 1, "typical_score"),
    Route(
        "batch_json",
        f"ours /v1/score/batch JSON x{BATCH_ROWS}",
        "/v1/score/batch",
        JSON,
        "batch_json",
        BATCH_ROWS,
        BATCH_ROWS,
        "typical_batch",
    ),
    Route(
        "batch_binary",
        f"ours /v1/score/batch binary x{BATCH_ROWS}",
        "/v1/score/batch",
        OCTET,
        "batch_binary",
        BATCH_ROWS,
        BATCH_ROWS,
        "typical_batch",
    ),
    Route("explain", "ours /v1/explain JSON x1", "/v1/explain", JSON, "single", 1, None),
)
TYPICAL = (
    Route("typical_score", "typical /score JSON x1", "/score", JSON, "single", 1, 1),
    Route(
        "typical_batch",
        f"typical /score/batch JSON x{BATCH_ROWS}",
        "/score/batch",
        JSON,
        "batch_json",
        BATCH_ROWS,
        BATCH_ROWS,
    ),
)
FLOOR = (Route("floor", "floor POST /noop (x1 body)", "/noop", JSON, "single", 1, None),)


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0]


# --- 1. in-process ceiling ---------------------------------------------------------------------------------


def ceiling(model_path: Path, x: np.ndarray) -> list[dict[str, Any]]:
    """Readings/s of the scorer graph at each batch size and intra-op thread count (best of 3 windows)."""
    out = []
    for threads in CEILING_THREADS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for batch in CEILING_BATCHES:
            inputs = [np.ascontiguousarray(x[i : i + batch]) for i in range(0, len(x) - batch + 1, batch)]
            for b in inputs[:3]:
                session.run(None, {name: b})
            best = 0.0
            for _ in range(3):
                runs, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < CEILING_SECONDS / 3:
                    session.run(None, {name: inputs[runs % len(inputs)]})
                    runs += 1
                best = max(best, runs * batch / elapsed)
            out.append({"intra_op_threads": threads, "batch": batch, "readings_per_s": best})
    return out


# --- 2. servers and load ------------------------------------------------------------------------------------


def _bodies(values: np.ndarray, workdir: Path) -> dict[str, list[Path]]:
    """Pre-built request bodies on disk (wrk's Lua script reads them): float32 values written by orjson
    as the shortest text that round-trips, as the client sends them."""
    files: dict[str, list[Path]] = {"single": [], "batch_json": [], "batch_binary": []}

    def write(kind: str, i: int, data: bytes) -> None:
        path = workdir / f"{kind}-{i}.body"
        path.write_bytes(data)
        files[kind].append(path)

    for i in range(SINGLE_BODIES):
        write("single", i, orjson.dumps({"values": values[i]}, option=orjson.OPT_SERIALIZE_NUMPY))
    for i in range(BATCH_BODIES):
        rows = values[SINGLE_BODIES + i * BATCH_ROWS : SINGLE_BODIES + (i + 1) * BATCH_ROWS]
        write("batch_json", i, orjson.dumps({"vectors": rows}, option=orjson.OPT_SERIALIZE_NUMPY))
        write("batch_binary", i, rows.astype("<f4").tobytes())
    return files


def wrk(
    url: str, route: Route, bodies: list[Path], connections: int, seconds: float, cpu: int | None
) -> dict[str, Any]:
    """One closed-loop wrk run; the Lua script's summary as a dict (latencies in µs)."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(LUA),
        url,
        "--",
        route.path,
        route.content_type,
        *map(str, bodies),
    ]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=pinned_to(cpu), check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            summary: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return summary
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")


def measure(
    server: Server,
    routes: tuple[Route, ...],
    files: dict[str, list[Path]],
    connections: tuple[int, ...],
    args: argparse.Namespace,
    cpu: int | None,
) -> tuple[list[dict[str, Any]], float | None]:
    """Warm every route up (1 s each at 8 connections), read RSS, then the timed runs."""
    for route in routes:
        wrk(server.url, route, files[route.body], 8, 1, cpu)
    rss_warm = server.rss_mib()
    rows = []
    for route in routes:
        for c in connections:
            if args.warmup_s > 0:
                wrk(server.url, route, files[route.body], c, args.warmup_s, cpu)
            r = wrk(server.url, route, files[route.body], c, args.duration_s, cpu)
            errors = sum(r["errors"].values())
            seconds = r["duration_us"] / 1e6
            row = {
                "key": route.key,
                "label": route.label,
                "path": route.path,
                "content_type": route.content_type,
                "rows_per_request": route.rows,
                "connections": c,
                "requests": r["requests"],
                "seconds": seconds,
                "errors": r["errors"],
                "requests_per_s": r["requests"] / seconds,
                "readings_per_s": r["requests"] * route.rows / seconds,
                "p50_ms": r["latency_us"]["p50"] / 1e3,
                "p90_ms": r["latency_us"]["p90"] / 1e3,
                "p99_ms": r["latency_us"]["p99"] / 1e3,
                "max_ms": r["latency_us"]["max"] / 1e3,
                "rss_mib": server.rss_mib(),
            }
            rows.append(row)
            print(
                f"  {route.label:<38} c={c:<3} {row['requests_per_s']:9.0f} req/s "
                f"{row['readings_per_s']:9.0f} readings/s  p50 {row['p50_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:7.2f} ms  errors {errors}",
                flush=True,
            )
            if errors:
                raise RuntimeError(f"{route.label} at {c} connections: errors {r['errors']}")
    return rows, rss_warm


# --- 3. ratios, targets, output -----------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratios(results: dict[str, Any], intra_op_threads: int) -> None:
    """Adds `vs_typical`, `vs_ceiling` (readings/s; the ceiling at the route's batch size and the server's
    intra-op thread count) and `vs_floor` (req/s, same connections) to each of our rows."""
    by = {(r["key"], r["connections"]): r for r in results["runs"]}
    ceil = {(c["intra_op_threads"], c["batch"]): c["readings_per_s"] for c in results["ceiling"]}
    for route in OURS:
        for c in results["connections"]:
            row = by[(route.key, c)]
            typical = by.get((route.typical, c)) if route.typical else None
            floor = by.get(("floor", c))
            row["vs_typical"] = _ratio(row["readings_per_s"], typical and typical["readings_per_s"])
            cap = ceil.get((intra_op_threads, route.ceiling_batch)) if route.ceiling_batch else None
            row["vs_ceiling"] = _ratio(row["readings_per_s"], cap)
            row["vs_floor"] = _ratio(row["requests_per_s"], floor and floor["requests_per_s"])


def targets(results: dict[str, Any], intra_op_threads: int) -> list[dict[str, Any]]:
    """Issue 7's targets, each with the measured number and met / not met."""
    by = {(r["key"], r["connections"]): r for r in results["runs"]}
    ceil = {(c["intra_op_threads"], c["batch"]): c["readings_per_s"] for c in results["ceiling"]}
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, higher_is_better: bool, unit: str) -> None:
        met = None if value is None else (value >= goal if higher_is_better else value <= goal)
        out.append({"target": name, "measured": value, "goal": goal, "unit": unit, "met": met})

    add(
        "single JSON /v1/score >= 4x typical req/s at 8 connections",
        by[("score", 8)]["vs_typical"],
        4.0,
        True,
        "x",
    )
    add("single JSON /v1/score p99 <= 5 ms at 8 connections", by[("score", 8)]["p99_ms"], 5.0, False, "ms")
    add("single JSON /v1/score p50 <= 0.5 ms at 1 connection", by[("score", 1)]["p50_ms"], 0.5, False, "ms")
    best_binary = max(
        (by[("batch_binary", c)] for c in results["connections"]), key=lambda r: r["readings_per_s"]
    )
    cap = ceil[(intra_op_threads, BATCH_ROWS)]
    name = (
        f"binary batch-{BATCH_ROWS} >= 80 % of in-process ORT readings/s at {intra_op_threads} intra-op "
        f"thread(s) (batch {BATCH_ROWS}: {cap:.0f}/s); best over connections (c={best_binary['connections']})"
    )
    add(name, best_binary["readings_per_s"] / cap, 0.8, True, "of ceiling")
    best_json = max(
        (by[("batch_json", c)] for c in results["connections"]), key=lambda r: r["readings_per_s"]
    )
    name = f"JSON batch-{BATCH_ROWS} >= 25 k readings/s; best over connections (c={best_json['connections']})"
    add(name, best_json["readings_per_s"], 25_000.0, True, "readings/s")
    rss_mib = results["servers"]["ours"]["rss_after_warmup_mib"]
    add("RSS after warm-up <= 130 MB", rss_mib and rss_mib * MIB / 1e6, 130.0, False, "MB")
    add("start to ready <= 2 s", results["servers"]["ours"]["start_to_ready_s"], 2.0, False, "s")
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (also what is printed)."""
    lines = [
        "| run | conns | req/s | readings/s | p50 ms | p99 ms | RSS MiB | ours/typical | ours/ceiling "
        "| ours/floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['label']} | {r['connections']} | {r['requests_per_s']:.0f} | {r['readings_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {_fmt(r['rss_mib'], '.0f')} | "
            f"{_fmt(r.get('vs_typical'), '.2f')} | {_fmt(r.get('vs_ceiling'), '.2f')} | "
            f"{_fmt(r.get('vs_floor'), '.2f')} |"
        )
    lines += ["", "| in-process ORT | " + " | ".join(f"batch {b}" for b in CEILING_BATCHES) + " |"]
    lines.append("|---|" + "---:|" * len(CEILING_BATCHES))
    for t in CEILING_THREADS:
        cells = [c for c in results["ceiling"] if c["intra_op_threads"] == t]
        lines.append(
            f"| {t} intra-op thread(s), readings/s | "
            + " | ".join(f"{c['readings_per_s']:.0f}" for c in cells)
            + " |"
        )
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"| {t['target']} | {_fmt(t['measured'], '.3g')} {t['unit']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="timed seconds per run")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="untimed seconds before each run")
    parser.add_argument("--connections", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--model-store", default="model_store")
    parser.add_argument("--model-name", default="factory-ae")
    parser.add_argument("--python", type=Path, default=default_python(), help="runs uvicorn")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    args = parser.parse_args(argv)
    connections = tuple(int(c) for c in args.connections.split(","))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (`make bench` installs Debian's; or apt-get install wrk)")

    started = time.perf_counter()
    model_dir = resolve_current(ROOT / args.model_store / args.model_name)
    manifest = verify_artifact(model_dir)
    plant = Plant(PlantConfig(n_sensors=manifest.n_sensors), plant_seed=PLANT_SEED)
    if tuple(plant.sensor_names) != tuple(manifest.sensor_names):
        raise SystemExit("the shipped model's sensors are not the synthetic plant's (plant seed 0)")
    values = plant.simulate(4096, seed=READINGS_SEED, anomaly_rate=ANOMALY_RATE).values.astype(np.float32)

    print("in-process ceiling ...", flush=True)
    ceiling_rows = ceiling(model_dir / manifest.graphs[SCORER].file, values)

    pinned, pinning = can_pin()
    server_cpu, client_cpu = (SERVER_CPU, CLIENT_CPU) if pinned else (None, None)
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})  # this process too: keep CPU 0 for the server
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOMALY_", "TYPICAL_"))}
    env |= {"ANOMALY_MODEL_STORE": args.model_store, "ANOMALY_MODEL_NAME": args.model_name}
    env_typical = env | {"TYPICAL_MODEL_DIR": str(model_dir)}
    intra_op_threads = 1  # app.config.Settings' default, which the server runs with
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    files = _bodies(values, workdir)

    runs: list[dict[str, Any]] = []
    servers: dict[str, Any] = {}
    for name, target, routes, server_env, ready_path in (
        ("ours", "factory_anomaly.app.main:app", OURS, env, "/readyz"),
        ("typical", "bench.typical_service:app", TYPICAL, env_typical, "/health"),
        ("floor", "bench.floor:app", FLOOR, env, "/readyz"),
    ):
        print(f"{name}: {target} ...", flush=True)
        server = Server(args.python, target, server_env, workdir / f"{name}.log", server_cpu)
        try:
            ready_s = server.wait_ready(ready_path)
            rows, rss_warm = measure(server, routes, files, connections, args, client_cpu)
            servers[name] = {
                "command": " ".join(server.command[1:]).replace(str(server.port), "<free>"),
                "start_to_ready_s": ready_s,
                "ready_path": ready_path,
                "rss_after_warmup_mib": rss_warm,
            }
            runs += rows
        finally:
            server.stop()

    command = "python -m bench.load " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": command.strip(),
        "machine": _machine(),
        "pinning": {"applied": pinned, "detail": pinning},
        "load_generator": f"{_wrk_version()} -t1, closed loop (no coordinated-omission correction)",
        "model": {"name": manifest.name, "version": manifest.version, "n_sensors": manifest.n_sensors},
        "readings": {"plant_seed": PLANT_SEED, "seed": READINGS_SEED, "anomaly_rate": ANOMALY_RATE},
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "connections": list(connections),
        "server_intra_op_threads": intra_op_threads,
        "ceiling": ceiling_rows,
        "servers": servers,
        "runs": runs,
    }
    ratios(results, intra_op_threads)
    results["targets"] = targets(results, intra_op_threads)
    results["wall_s"] = time.perf_counter() - started
    m = results["machine"]
    print(f"\n# {results['command']}")
    print(f"# {m['host']}, {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['os']}")
    print(f"# {results['load_generator']}; pinning {'applied' if pinned else 'NOT applied'}: {pinning}")
    print(f"# {args.duration_s:g} s per run after {args.warmup_s:g} s warm-up; model {manifest.version}")
    for name, s in servers.items():
        rss = _fmt(s["rss_after_warmup_mib"], ".0f")
        print(
            f"# {name}: {s['command']}: ready in {s['start_to_ready_s']:.2f} s, RSS after warm-up {rss} MiB"
        )
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"# written to {args.out} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
