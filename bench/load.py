"""Throughput and latency of the service under load, against the onnxruntime ceiling, a lean one-file app,
a typical FastAPI + torch service and the HTTP floor (issues 7 and 17).

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
     ours        `uvicorn factory_anomaly.app.main:app` (defaults): /v1/score JSON, /v1/score/batch JSON
                 and binary at 64 rows, /v1/explain, the alarm path (X-Asset) single and binary, and the
                 Open Inference Protocol's infer with the binary batch's readings, binary both ways;
     ours-plant  the same app as a plant runs it: API keys set (every request sends one) and every
                 reading carries an asset: /v1/score JSON x1 and /v1/score/batch JSON x64;
     ours-shadow the same app with a shadow of the shipped version loaded (ANOMALY_SHADOW_VERSION):
                 /v1/score JSON x1, for what shadow scoring costs the serving path;
     lean        `uvicorn bench.lean_service:app --no-access-log`: the one-file reference of issue 17,
                 /score and /score/batch JSON at 64 rows;
     typical     `uvicorn bench.typical_service:app`: /score and /score/batch JSON at 64 rows;
     floor       `uvicorn bench.floor:app`: POST /noop with the single-reading body (our app, no work).
   ours, lean, ours-plant and ours-shadow run `--repeats` times, alternating (ours, lean, ours-plant,
   ours-shadow, ours, ...), so drift on a shared machine lands on all four; each figure is the median
   over the repetitions, and every
   repetition is kept in the JSON. Every server runs pinned to CPU 0, `wrk` to CPU 1 (sched_setaffinity,
   as `taskset -c` does), when the machine allows it (the output says whether). Any non-2xx answer or
   socket error fails the run.
3. Server RSS (VmRSS) after the warm-up of every route and after each run; start (spawn) to ready.

Prints a table with the command and the machine and writes JSON (`--out`). The figures, with the command
that measured them and what stands between them and issue 7's targets: docs/benchmarks.md.

    .venv/bin/python -m bench.load [--duration-s 5] [--warmup-s 1] [--repeats 2]
                                   [--out bench/results/load.json]

Needs `wrk` (`make bench` installs it) and the `train` extra (torch, the synthetic plant). Run it alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import (
    ANOMALY_RATE,
    APP,
    ASSETS,
    BATCH_BINARY,
    BATCH_JSON,
    BATCH_ROWS,
    EXPLAIN,
    FLOOR,
    JSON,
    MIB,
    OCTET,
    PLANT_HEADERS,
    PLANT_SEED,
    PROVIDERS,
    READINGS_SEED,
    ROOT,
    SCORE,
    Route,
    Server,
    default_python,
    fmt,
    heading,
    markdown_table,
    ort_session,
    pin_client,
    plant_env,
    plant_readings,
    providers_for,
    ratio,
    require_wrk,
    results_head,
    server_env,
    v2_batch_binary,
    write_bodies,
    write_results,
    wrk,
)
from factory_anomaly.artifact import SCORER, resolve_current, verify_artifact

CEILING_BATCHES = (1, 8, 64, 512)
CEILING_THREADS = (1, 2)
CEILING_SECONDS = 0.6
READING_ROWS = 4096

OURS = (
    SCORE,
    BATCH_JSON,
    BATCH_BINARY,
    EXPLAIN,
    Route("score_asset", f"ours /v1/score JSON x1, X-Asset of {ASSETS}", "/v1/score", JSON, "single", 1,
          ASSETS),
    Route("batch_binary_asset", f"ours /v1/score/batch binary x{BATCH_ROWS}, X-Asset of {ASSETS}",
          "/v1/score/batch", OCTET, "batch_binary", BATCH_ROWS, ASSETS),
)  # fmt: skip
# The alarm path (X-Asset) against the same route without it: its per-reading cost.
PLAIN_OF = {"score_asset": "score", "batch_binary_asset": "batch_binary"}
# Ours as a plant runs it (issue 17): API keys set, every reading with an asset.
PLANT = (
    Route("plant_score", f"ours-plant /v1/score JSON x1, API key, X-Asset of {ASSETS}", "/v1/score", JSON,
          "single", 1, ASSETS, PLANT_HEADERS),
    Route("plant_batch_json", f"ours-plant /v1/score/batch JSON x{BATCH_ROWS}, API key, X-Asset of {ASSETS}",
          "/v1/score/batch", JSON, "batch_json", BATCH_ROWS, ASSETS, PLANT_HEADERS),
)  # fmt: skip
# Ours with a shadow of the shipped version loaded (issue 18 §3): what the shadow costs the serving path.
SHADOWED = (
    Route("shadow_score", "ours-shadow /v1/score JSON x1, shadow loaded", "/v1/score", JSON, "single", 1),
)
LEAN = (
    Route("lean_score", "lean /score JSON x1", "/score", JSON, "single", 1),
    Route("lean_batch", f"lean /score/batch JSON x{BATCH_ROWS}", "/score/batch", JSON, "batch_json",
          BATCH_ROWS),
)  # fmt: skip
# The floor with the binary batch's body (256 KiB at 1000 sensors): what HTTP alone costs that request.
FLOOR_BINARY = Route("floor_binary", f"floor POST /noop (binary x{BATCH_ROWS} body)", "/noop", OCTET,
                     "batch_binary", BATCH_ROWS)  # fmt: skip
LEAN_OF = {"score": "lean_score", "plant_score": "lean_score", "batch_json": "lean_batch",
           "plant_batch_json": "lean_batch"}  # fmt: skip
TYPICAL = (
    Route("typical_score", "typical /score JSON x1", "/score", JSON, "single", 1),
    Route(
        "typical_batch",
        f"typical /score/batch JSON x{BATCH_ROWS}",
        "/score/batch",
        JSON,
        "batch_json",
        BATCH_ROWS,
    ),
)
# What each of our routes is compared with: the in-process ceiling at a batch size, a typical route.
CEILING_BATCH = {"score": 1, "batch_json": BATCH_ROWS, "batch_binary": BATCH_ROWS}
TYPICAL_OF = {"score": "typical_score", "batch_json": "typical_batch", "batch_binary": "typical_batch"}


# --- 1. in-process ceiling ---------------------------------------------------------------------------------


def ceiling(model_path: Path, x: np.ndarray, providers: Sequence[str]) -> list[dict[str, Any]]:
    """Readings/s of the scorer graph at each batch size and intra-op thread count (best of 3 windows)."""
    out = []
    for threads in CEILING_THREADS:
        session = ort_session(model_path, threads, providers=providers)
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


def measure(
    server: Server,
    routes: tuple[Route, ...],
    files: dict[str, list[Path]],
    connections: tuple[int, ...],
    args: argparse.Namespace,
    cpu: int | None,
) -> tuple[list[dict[str, Any]], float | None]:
    """Warm every route up (1 s each at 8 connections), read RSS, then the timed runs (wrk raises on any
    error)."""
    for route in routes:
        wrk(server.url, route, files[route.body], 8, 1, cpu)
    rss_warm = server.rss_mib()
    rows = []
    for route in routes:
        for c in connections:
            if args.warmup_s > 0:
                wrk(server.url, route, files[route.body], c, args.warmup_s, cpu)
            r = wrk(server.url, route, files[route.body], c, args.duration_s, cpu)
            row = {
                "key": route.key,
                "label": route.label,
                "path": route.path,
                "content_type": route.content_type,
                "rows_per_request": route.rows,
                "connections": c,
                **r,
                "rss_mib": server.rss_mib(),
            }
            rows.append(row)
            print(
                f"  {route.label:<38} c={c:<3} {row['requests_per_s']:9.0f} req/s "
                f"{row['readings_per_s']:9.0f} readings/s  p50 {row['p50_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:7.2f} ms",
                flush=True,
            )
    return rows, rss_warm


# --- 3. ratios, targets, output -----------------------------------------------------------------------------


def ratios(results: dict[str, Any], intra_op_threads: int) -> None:
    """Adds `vs_typical`, `vs_ceiling` (readings/s; the ceiling at the route's batch size and the server's
    intra-op thread count) and `vs_floor` (req/s, same connections) to each of our rows."""
    by = {(r["key"], r["connections"]): r for r in results["runs"]}
    ceil = {(c["intra_op_threads"], c["batch"]): c["readings_per_s"] for c in results["ceiling"]}
    for route in (*OURS, *PLANT):
        for c in results["connections"]:
            row = by[(route.key, c)]
            typical = by.get((TYPICAL_OF.get(route.key, ""), c))
            floor = by.get(("floor", c))
            row["vs_typical"] = ratio(row["readings_per_s"], typical and typical["readings_per_s"])
            batch = CEILING_BATCH.get(route.key)
            cap = None if batch is None else ceil.get((intra_op_threads, batch))
            row["vs_ceiling"] = ratio(row["readings_per_s"], cap)
            row["vs_floor"] = ratio(row["requests_per_s"], floor and floor["requests_per_s"])
            plain = by.get((PLAIN_OF.get(route.key, ""), c))
            row["vs_plain"] = ratio(row["readings_per_s"], plain and plain["readings_per_s"])
            lean = by.get((LEAN_OF.get(route.key, ""), c))
            row["vs_lean"] = ratio(row["readings_per_s"], lean and lean["readings_per_s"])
            row["p99_vs_lean"] = ratio(row["p99_ms"], lean and lean["p99_ms"])
    for c in results["connections"]:  # a shadow loaded against none, the same route
        shadowed, plain = by.get(("shadow_score", c)), by.get(("score", c))
        if shadowed is not None and plain is not None:
            shadowed["p99_vs_unshadowed"] = ratio(shadowed["p99_ms"], plain["p99_ms"])
            shadowed["vs_unshadowed"] = ratio(shadowed["readings_per_s"], plain["readings_per_s"])
    for c in results["connections"]:  # V2's binary extension against /v1's binary batch, the same readings
        v2, v1 = by.get(("v2_batch_binary", c)), by.get(("batch_binary", c))
        if v2 is not None and v1 is not None:
            v2["v2_vs_v1"] = ratio(v2["readings_per_s"], v1["readings_per_s"])
            v2["p99_vs_v1"] = ratio(v2["p99_ms"], v1["p99_ms"])


def targets(results: dict[str, Any], intra_op_threads: int) -> list[dict[str, Any]]:
    """Issues 7 and 17's targets, each with the measured number and met / not met (n/a where the run
    did not measure it, e.g. a connection count left out)."""
    by = {(r["key"], r["connections"]): r for r in results["runs"]}
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, higher_is_better: bool, unit: str) -> None:
        met = None if value is None else (value >= goal if higher_is_better else value <= goal)
        out.append({"target": name, "measured": value, "goal": goal, "unit": unit, "met": met})

    def at(key: str, c: int, figure: str) -> float | None:
        row = by.get((key, c))
        return None if row is None else row.get(figure)

    def best(key: str) -> dict[str, Any]:
        return max((by[(key, c)] for c in results["connections"]), key=lambda r: r["readings_per_s"])

    # issue 7
    add("single JSON /v1/score >= 4x typical req/s at 8 connections", at("score", 8, "vs_typical"), 4.0,
        True, "x")  # fmt: skip
    add("single JSON /v1/score p99 <= 5 ms at 8 connections", at("score", 8, "p99_ms"), 5.0, False, "ms")
    add("single JSON /v1/score p50 <= 0.5 ms at 1 connection", at("score", 1, "p50_ms"), 0.5, False, "ms")
    binary, cap = best("batch_binary"), ceiling_at(results, intra_op_threads)
    add(f"binary batch-{BATCH_ROWS} >= 80 % of in-process ORT readings/s at {intra_op_threads} intra-op "
        f"thread(s) (batch {BATCH_ROWS}: {cap:.0f}/s); best over connections (c={binary['connections']})",
        binary["readings_per_s"] / cap, 0.8, True, "of ceiling")  # fmt: skip
    batch_json = best("batch_json")
    add(f"JSON batch-{BATCH_ROWS} >= 25 k readings/s; best over connections (c={batch_json['connections']})",
        batch_json["readings_per_s"], 25_000.0, True, "readings/s")  # fmt: skip
    for key, label in (("score_asset", "single JSON"), ("batch_binary_asset", f"binary batch-{BATCH_ROWS}")):
        add(f"{label} with X-Asset (alarm path) >= 0.9x the same route without, readings/s at 8 connections",
            at(key, 8, "vs_plain"), 0.9, True, "x")  # fmt: skip
    rss_mib = results["servers"]["ours"]["rss_after_warmup_mib"]
    add("RSS after warm-up <= 130 MB", rss_mib and rss_mib * MIB / 1e6, 130.0, False, "MB")
    add("start to ready <= 2 s", results["servers"]["ours"]["start_to_ready_s"], 2.0, False, "s")
    # issue 17: against the lean one-file app, in the same run
    for key, config in (("score", "defaults"), ("plant_score", "as a plant runs it")):
        for c in (1, 8):
            add(f"single JSON, ours ({config}) >= 1.0x lean req/s at {c} connection(s)",
                at(key, c, "vs_lean"), 1.0, True, "x")  # fmt: skip
        add(f"single JSON, ours ({config}) p99 <= 1.2x lean's at 8 connections", at(key, 8, "p99_vs_lean"),
            1.2, False, "x")  # fmt: skip
    lean_json = best("lean_batch")["readings_per_s"]
    add(f"JSON batch-{BATCH_ROWS} >= 1.3x lean readings/s; best of each over connections",
        ratio(batch_json["readings_per_s"], lean_json), 1.3, True, "x")  # fmt: skip
    lean_rss = results["servers"]["lean"]["rss_after_warmup_mib"]
    over_lean = None if rss_mib is None or lean_rss is None else rss_mib - lean_rss
    add("RSS after warm-up <= lean's + 15 MiB", over_lean, 15.0, False, "MiB over lean")
    # issue 18: shadow scoring off the hot path
    add("single JSON p99 with a shadow loaded <= 1.2x without, at 8 connections",
        at("shadow_score", 8, "p99_vs_unshadowed"), 1.2, False, "x")  # fmt: skip
    return out


def ceiling_at(results: dict[str, Any], intra_op_threads: int) -> float:
    """The in-process readings/s of a batch of BATCH_ROWS at the server's thread count."""
    return next(c["readings_per_s"] for c in results["ceiling"]
                if (c["intra_op_threads"], c["batch"]) == (intra_op_threads, BATCH_ROWS))  # fmt: skip


def provider_in_use(url: str, headers: Sequence[tuple[str, str]]) -> str:
    """The onnxruntime provider our server reports in GET /v1/model (with the run's headers: its API key)."""
    with httpx.Client(base_url=url, timeout=5.0, headers=list(headers)) as client:
        return str(client.get("/v1/model").json()["provider"])


def binary_limit(results: dict[str, Any], ceiling: float) -> dict[str, Any]:
    """How close the binary batch can come to the ceiling on one core: the graph's time for the batch
    (from the ceiling) plus what HTTP alone costs the same body (the floor's best req/s with it), as
    readings/s and as a share of the ceiling."""
    rows = [r for r in results["runs"] if r["key"] == "floor_binary"]
    floor_s = 1.0 / max(r["requests_per_s"] for r in rows)
    graph_s = BATCH_ROWS / ceiling
    limit = BATCH_ROWS / (graph_s + floor_s)
    return {"floor_ms": floor_s * 1e3, "graph_ms": graph_s * 1e3, "readings_per_s": limit,
            "share_of_ceiling": limit / ceiling}  # fmt: skip


RATIO_KEYS = (
    "vs_lean",
    "p99_vs_lean",
    "vs_typical",
    "vs_ceiling",
    "vs_floor",
    "vs_plain",
    "v2_vs_v1",
    "p99_vs_v1",
    "p99_vs_unshadowed",
)


def median_runs(repetitions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (route, connections): the first repetition's row with every figure replaced by the
    median over the repetitions (each figure on its own), and `repetitions` the count."""
    out = []
    for rows in zip(*repetitions, strict=True):
        row = dict(rows[0])
        for key, value in rows[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "connections":
                present = [r[key] for r in rows if r.get(key) is not None]
                row[key] = float(np.median(present)) if present else None
        row["repetitions"] = len(rows)
        out.append(row)
    return out


def table(results: dict[str, Any]) -> str:
    """The results as Markdown tables: the runs, the in-process ceiling, the targets (what is printed)."""
    runs = markdown_table(
        ["run", "conns", "req/s", "readings/s", "p50 ms", "p99 ms", "RSS MiB"]
        + ["ours/lean", "p99/lean's", "ours/typical", "ours/ceiling", "ours/floor", "asset/plain"]
        + ["V2/v1", "p99 V2/v1", "p99 shadow/none"],
        (
            [r["label"], r["connections"], f"{r['requests_per_s']:.0f}", f"{r['readings_per_s']:.0f}"]
            + [f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", fmt(r["rss_mib"], ".0f")]
            + [fmt(r.get(key), ".2f") for key in RATIO_KEYS]
            for r in results["runs"]
        ),
    )
    ceiling_table = markdown_table(
        ["in-process ORT", *(f"batch {b}" for b in CEILING_BATCHES)],
        (
            [f"{t} intra-op thread(s), readings/s"]
            + [f"{c['readings_per_s']:.0f}" for c in results["ceiling"] if c["intra_op_threads"] == t]
            for t in CEILING_THREADS
        ),
    )
    met = {None: "n/a", True: "met", False: "NOT met"}
    target_table = markdown_table(
        ["target", "measured", "met"],
        (
            [t["target"], f"{fmt(t['measured'], '.3g')} {t['unit']}", met[t["met"]]]
            for t in results["targets"]
        ),
    )
    return "\n\n".join([runs, ceiling_table, target_table])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="timed seconds per run")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="untimed seconds before each run")
    parser.add_argument("--connections", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating runs of ours, lean, ours-plant, ours-shadow"
    )
    provider = os.environ.get("ANOMALY_PROVIDER", "cpu").replace("auto", "cpu")
    parser.add_argument("--provider", choices=PROVIDERS, default=provider,
                        help="onnxruntime provider of ours, lean and the ceiling (default: ANOMALY_PROVIDER, "
                        "auto read as cpu)")  # fmt: skip
    parser.add_argument("--model-store", default="model_store")
    parser.add_argument("--model-name", default="factory-ae")
    parser.add_argument("--python", type=Path, default=default_python(), help="runs uvicorn")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    providers = providers_for(args.provider)  # exits before anything is set up when CUDA is missing
    connections = tuple(int(c) for c in args.connections.split(","))
    wrk_version = require_wrk()

    started = time.perf_counter()
    model_dir = resolve_current(ROOT / args.model_store / args.model_name)
    manifest = verify_artifact(model_dir)
    values = plant_readings(manifest.sensor_names, READING_ROWS)

    print(f"in-process ceiling ({', '.join(providers)}) ...", flush=True)
    ceiling_rows = ceiling(model_dir / manifest.graphs[SCORER].file, values, providers)

    pinning = pin_client()  # after the ceiling, which may use both cores
    env = server_env(args.model_store, args.model_name)
    env_typical = env | {"TYPICAL_MODEL_DIR": str(model_dir)}
    intra_op_threads = 1  # app.config.Settings' default, which the server runs with
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    files = write_bodies(values, workdir)

    # the provider, stated to every server (server_env drops the caller's ANOMALY_ variables, and the
    # service's own default, auto, would take CUDA where there is one while lean and the ceiling did not)
    env = env | {"ANOMALY_PROVIDER": args.provider}
    env_lean = env | {"LEAN_MODEL_DIR": str(model_dir), "LEAN_PROVIDER": args.provider}
    env_plant = plant_env(env)
    targets_ = {  # name -> (uvicorn target, routes, environment, readiness path, uvicorn options)
        "ours": (APP, (*OURS, v2_batch_binary(args.model_name, values.shape[1])), env, "/readyz", []),
        "lean": ("bench.lean_service:app", LEAN, env_lean, "/health", ["--no-access-log"]),
        "ours-plant": (APP, PLANT, env_plant, "/readyz", []),
        "ours-shadow": (APP, SHADOWED, env | {"ANOMALY_SHADOW_VERSION": manifest.version}, "/readyz", []),
        "typical": ("bench.typical_service:app", TYPICAL, env_typical, "/health", []),
        "floor": ("bench.floor:app", (FLOOR, FLOOR_BINARY), env, "/readyz", []),
    }
    alternating = ("ours", "lean", "ours-plant", "ours-shadow")
    order = [*alternating * args.repeats, "typical", "floor"]
    by_server: dict[str, list[list[dict[str, Any]]]] = {}
    servers: dict[str, Any] = {}
    for i, name in enumerate(order):
        target, routes, target_env, ready_path, options = targets_[name]
        print(f"{name}: {target} ...", flush=True)
        log = workdir / f"{i:02d}-{name}.log"
        # each start its own alarm journal, so no episode carries over (the others ignore the variable)
        target_env = target_env | {"ANOMALY_ALARM_DB": str(workdir / f"{i:02d}-alarms.sqlite3")}
        server = Server(args.python, target, target_env, log, pinning.server_cpu, options)
        try:
            ready_s = server.wait_ready(ready_path)
            in_use = provider_in_use(server.url, routes[0].headers) if target == APP else None
            rows, rss_warm = measure(server, routes, files, connections, args, pinning.client_cpu)
        finally:
            server.stop()
        by_server.setdefault(name, []).append(rows)
        first = {"command": server.shown_command, "ready_path": ready_path,
                 "start_to_ready_s_each": [], "rss_after_warmup_mib_each": []}  # fmt: skip
        seen = servers.setdefault(name, first)
        seen["start_to_ready_s_each"].append(ready_s)
        if in_use is not None:
            seen["provider_in_use"] = in_use
        seen["rss_after_warmup_mib_each"].append(rss_warm)
    for seen in servers.values():
        seen["start_to_ready_s"] = float(np.median(seen["start_to_ready_s_each"]))
        rss = [r for r in seen["rss_after_warmup_mib_each"] if r is not None]
        seen["rss_after_warmup_mib"] = float(np.median(rss)) if rss else None
    runs = [row for name in targets_ for row in median_runs(by_server[name])]

    results = results_head("bench.load", argv, pinning, manifest, wrk_version, args.provider) | {
        "readings": {"plant_seed": PLANT_SEED, "seed": READINGS_SEED, "anomaly_rate": ANOMALY_RATE},
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "connections": list(connections),
        "repeats": args.repeats,
        "repetitions": by_server,
        "server_intra_op_threads": intra_op_threads,
        "ceiling": ceiling_rows,
        "servers": servers,
        "runs": runs,
    }
    ratios(results, intra_op_threads)
    results["targets"] = targets(results, intra_op_threads)
    limit = results["binary_limit"] = binary_limit(results, ceiling_at(results, intra_op_threads))
    results["wall_s"] = time.perf_counter() - started
    print(f"\n{heading(results)}")
    applied = "applied" if pinning.applied else "NOT applied"
    print(f"# {results['load_generator']}; pinning {applied}: {pinning.detail}")
    acc = results["accelerator"]
    in_use, gpus = servers["ours"].get("provider_in_use"), ", ".join(acc["gpus"]) or "none"
    print(f"# provider {acc['provider']} (ours reports {in_use}); onnxruntime {acc['onnxruntime']} "
          f"{acc['onnxruntime_build']}; GPUs: {gpus}")  # fmt: skip
    print(f"# {args.duration_s:g} s per run after {args.warmup_s:g} s warm-up; model {manifest.version}")
    for name, s in servers.items():
        warm = fmt(s["rss_after_warmup_mib"], ".0f")
        print(
            f"# {name}: {s['command']}: ready in {s['start_to_ready_s']:.2f} s, RSS after warm-up {warm} MiB"
        )
    print(table(results))
    graph, floor = limit["graph_ms"], limit["floor_ms"]
    print(f"# binary batch-{BATCH_ROWS}: graph {graph:.2f} ms + HTTP floor {floor:.2f} ms a request: "
          f"at most {limit['readings_per_s']:.0f} readings/s on one core, "
          f"{limit['share_of_ceiling']:.2f} of the ceiling")  # fmt: skip
    write_results(results, args.out)
    print(f"# in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
