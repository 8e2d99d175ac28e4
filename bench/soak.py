"""Soak: minutes of mixed load against a real uvicorn, and proof that nothing was lost or leaked.

The server (`uvicorn factory_anomaly.app.main:app`, a subprocess, API keys and an admin token set) serves a
private copy of a model store: the version `CURRENT` names in `--store` (the shipped
`model_store/factory-ae` by default) and the same version published again under a second name (files
copied, manifest version rewritten; no training, no torch). `--concurrency` client tasks (asyncio + httpx)
pace themselves to `--rate` requests/s in all (closed loop when the server is slower: no
coordinated-omission correction, so the percentiles are service times under this load) and draw each
request at random from:

    score          POST /v1/score, one valid reading                                  -> 200
    batch_json     POST /v1/score/batch, 16 valid readings as JSON                    -> 200
    batch_binary   POST /v1/score/batch, 64 valid readings as float32 bytes           -> 200
    explain        POST /v1/explain, one valid reading (when the version has one)     -> 200
    invalid        one of: malformed JSON (400), wrong length (422), a NaN (422), no API key (401), a
                   wrong API key (401), text/plain (415), an unknown path (404)

and every `--reload-every-s` an admin reload alternates between the two versions (-> 200). Valid readings
come from the synthetic plant the shipped model was trained on when the model's sensors are that plant's,
otherwise every sensor at the middle of its training range.

Recorded: exactly one outcome per request sent (a status, or a transport error's class), so `lost` =
sent - outcomes; outcomes by class (2xx, 4xx by status, 5xx, transport errors by class) and by kind; p50,
p99 and max latency per `--window-s` window; the server's RSS (VmRSS) every `--rss-every-s`; and at the end
its /metrics against the client's own counts: requests by (route, method, status class), rejections by
error code, readings scored, reloads, requests in flight. Exits 1 when a request was lost, answered 5xx
or not as expected, failed in transport, when a counter differs, when RSS grew by more than
`--max-rss-growth-mib` after the warm-up, or when the server logged an error or a traceback. Prints a
table with the command; writes JSON (`--out`). The figures of the latest soak, with the command that
measured them: docs/reliability.md, "Soak".

    .venv/bin/python -m bench.soak [--minutes 10] [--rate 200] [--out bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import (
    ANOMALY_RATE,
    APP,
    JSON,
    OCTET,
    PLANT_SEED,
    ROOT,
    NotThePlant,
    Samples,
    Server,
    binary_batch,
    default_python,
    json_batch,
    json_reading,
    latency_ms,
    markdown_table,
    metric_samples,
    plant_readings,
    results_head,
    server_env,
    write_results,
)
from factory_anomaly.artifact import (
    EXPLAINER,
    Manifest,
    read_manifest,
    resolve_current,
    write_current,
    write_manifest,
)

API_KEY = "soak-key-3e1f"
ADMIN_TOKEN = "soak-admin-8c2d"
SECOND_VERSION_SUFFIX = "-soak-copy"
READINGS_SEED = 11
SINGLE_BODIES, BATCH_BODIES, JSON_ROWS, BINARY_ROWS = 256, 32, 16, 64
REQUEST_TIMEOUT_S = 30.0
# app.observability.metrics.UNMATCHED_ROUTE, not imported: the client stays off the app.
UNMATCHED = "<unmatched>"


@dataclass(frozen=True)
class Kind:
    """One kind of request: what it sends and the one answer it must get."""

    name: str
    weight: float
    method: str
    path: str
    route: str  # the server's route label for it
    status: int
    code: str | None = None  # the error code the answer must carry
    rows: int = 0  # readings it has scored when answered 200 (explain's are not counted)


KINDS = (
    Kind("score", 45, "POST", "/v1/score", "/v1/score", 200, rows=1),
    Kind("batch_json", 10, "POST", "/v1/score/batch", "/v1/score/batch", 200, rows=JSON_ROWS),
    Kind("batch_binary", 10, "POST", "/v1/score/batch", "/v1/score/batch", 200, rows=BINARY_ROWS),
    Kind("explain", 10, "POST", "/v1/explain", "/v1/explain", 200),
    Kind("malformed_json", 4, "POST", "/v1/score", "/v1/score", 400, "malformed_json"),
    Kind("wrong_length", 4, "POST", "/v1/score", "/v1/score", 422, "wrong_length"),
    Kind("non_finite", 4, "POST", "/v1/score/batch", "/v1/score/batch", 422, "non_finite_value"),
    Kind("missing_key", 3, "POST", "/v1/score", "/v1/score", 401, "missing_api_key"),
    Kind("wrong_key", 3, "POST", "/v1/score", "/v1/score", 401, "invalid_api_key"),
    Kind("wrong_media_type", 3, "POST", "/v1/score", "/v1/score", 415, "unsupported_media_type"),
    Kind("not_found", 4, "GET", "/v1/no-such-route", UNMATCHED, 404, "not_found"),
)
RELOAD = Kind("reload", 0, "POST", "/v1/admin/reload", "/v1/admin/reload", 200)


@dataclass
class Outcome:
    kind: str
    started_s: float  # since the load started
    latency_s: float
    result: int | str  # the HTTP status, or the transport error's class name
    code: str | None = None  # the error code of an error answer


@dataclass
class Tally:
    sent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)


# --- the store and the bodies ------------------------------------------------------------------------------


def prepare_store(source_store: Path, model_name: str, workdir: Path) -> tuple[Path, list[str], Manifest]:
    """A private store: the version CURRENT names in `source_store`, and the same published again under
    a second name (a reload between them swaps a real, fully verified model). Returns the store, the two
    version names and the manifest."""
    source = resolve_current(source_store / model_name)
    model_dir = workdir / "store" / model_name
    model_dir.mkdir(parents=True)
    first, second = source.name, source.name + SECOND_VERSION_SUFFIX
    shutil.copytree(source, model_dir / first)
    shutil.copytree(source, model_dir / second)
    manifest = read_manifest(model_dir / first)
    write_manifest(replace(manifest, version=second), model_dir / second)
    write_current(model_dir, first)
    return workdir / "store", [first, second], manifest


def valid_readings(manifest: Manifest, rows: int) -> tuple[np.ndarray, str]:
    """float32 [rows, n_sensors] and where they come from: the synthetic plant when the model's sensors are
    its sensors, otherwise every sensor near the middle of its training range."""
    try:
        values = plant_readings(manifest.sensor_names, rows, seed=READINGS_SEED)
        return values, f"synthetic plant seed {PLANT_SEED}, {ANOMALY_RATE:.0%} in faults"
    except NotThePlant:
        pass
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    jitter = np.random.default_rng(READINGS_SEED).uniform(-0.01, 0.01, (rows, manifest.n_sensors))
    values = (low + high) / 2 + jitter * (high - low)
    return values.astype(np.float32), "every sensor near the middle of its training range"


def bodies(x: np.ndarray) -> dict[str, list[tuple[dict[str, str], bytes]]]:
    """Pre-built (headers, body) per kind, so the client spends its time sending."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    as_json = {**auth, "Content-Type": JSON}
    as_octet = {**auth, "Content-Type": OCTET}
    n = x.shape[1]
    single = [json_reading(x[i]) for i in range(SINGLE_BODIES)]
    rest = x[SINGLE_BODIES:]
    nan = rest[:BINARY_ROWS].copy()
    nan[3, n // 2] = np.nan
    return {
        "score": [(as_json, b) for b in single],
        "batch_json": [
            (as_json, json_batch(rest[i * JSON_ROWS : (i + 1) * JSON_ROWS])) for i in range(BATCH_BODIES)
        ],
        "batch_binary": [
            (as_octet, binary_batch(rest[i * BINARY_ROWS : (i + 1) * BINARY_ROWS]))
            for i in range(BATCH_BODIES)
        ],
        "explain": [(as_json, b) for b in single],
        "malformed_json": [(as_json, single[0][: len(single[0]) // 2])],
        "wrong_length": [(as_json, json_reading(x[0, : n - 1]))],
        "non_finite": [(as_octet, binary_batch(nan))],
        "missing_key": [({"Content-Type": JSON}, single[1])],
        "wrong_key": [({"Content-Type": JSON, "X-API-Key": "not-" + API_KEY}, single[2])],
        "wrong_media_type": [({**auth, "Content-Type": "text/plain"}, single[3])],
        "not_found": [(auth, b"")],
    }


# --- the load ---------------------------------------------------------------------------------------------


async def send(
    client: httpx.AsyncClient, tally: Tally, kind: Kind, headers: dict[str, str], body: bytes, t0: float
) -> Outcome:
    """One request and exactly one outcome for it, whatever happens."""
    tally.sent += 1
    started = time.perf_counter()
    try:
        response = await client.request(kind.method, kind.path, headers=headers, content=body or None)
        result: int | str = response.status_code
        code = None
        if response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "<no error body>"
    except httpx.HTTPError as exc:  # transport errors, and any other failure to get an answer
        result, code = type(exc).__name__, None
    outcome = Outcome(kind.name, started - t0, time.perf_counter() - started, result, code)
    tally.outcomes.append(outcome)
    return outcome


async def worker(
    client: httpx.AsyncClient,
    tally: Tally,
    kinds: list[Kind],
    prepared: dict[str, list[tuple[dict[str, str], bytes]]],
    interval_s: float,
    t0: float,
    stop_at: float,
    rng: random.Random,
) -> None:
    weights = [kind.weight for kind in kinds]
    next_at = time.perf_counter() + rng.uniform(0, interval_s)
    while True:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() >= stop_at:
            return
        next_at += interval_s
        kind = rng.choices(kinds, weights)[0]
        headers, body = rng.choice(prepared[kind.name])
        await send(client, tally, kind, headers, body, t0)


async def reloader(
    client: httpx.AsyncClient, tally: Tally, versions: list[str], every_s: float, t0: float, stop_at: float
) -> None:
    """An admin reload every `every_s`, to the other version each time."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": JSON}
    i = 0
    while True:
        due = t0 + (i + 1) * every_s
        if due >= stop_at:
            return
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        version = versions[(i + 1) % len(versions)]
        outcome = await send(client, tally, RELOAD, headers, orjson.dumps({"version": version}), t0)
        tally.reloads.append(
            {"at_s": round(outcome.started_s, 3), "version": version, "result": outcome.result}
        )
        i += 1


async def sample_rss(
    server: Server, every_s: float, t0: float, stop: asyncio.Event, out: list[list[float]]
) -> None:
    while not stop.is_set():
        rss = server.rss_mib()
        if rss is not None:
            out.append([round(time.perf_counter() - t0, 1), round(rss, 1)])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def run_load(
    server: Server, args: argparse.Namespace, kinds: list[Kind], prepared: dict[str, Any], versions: list[str]
) -> tuple[Tally, list[list[float]], float, str]:
    """The load for `args.minutes`; returns the tally, the RSS series, the load's seconds and /metrics."""
    tally = Tally()
    rss: list[list[float]] = []
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        stop_at = t0 + args.minutes * 60
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(server, args.rss_every_s, t0, stop_sampling, rss))
        rng = random.Random(args.seed)
        interval_s = args.concurrency / args.rate
        tasks = [
            worker(client, tally, kinds, prepared, interval_s, t0, stop_at, random.Random(rng.random()))
            for _ in range(args.concurrency)
        ]
        tasks.append(reloader(client, tally, versions, args.reload_every_s, t0, stop_at))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - t0
        stop_sampling.set()
        await sampler
        final = server.rss_mib()
        if final is not None:
            rss.append([round(time.perf_counter() - t0, 1), round(final, 1)])
        metrics = (await client.get("/metrics")).text
    return tally, rss, seconds, metrics


# --- the summary ------------------------------------------------------------------------------------------


def status_class(result: int | str) -> str:
    return f"{result // 100}xx" if isinstance(result, int) else "transport"


def percentiles_ms(latencies_s: list[float]) -> dict[str, float | None]:
    """p50, p99 and max in ms, to 0.01 ms; None for each when there are none."""
    figures = latency_ms(np.asarray(latencies_s) * 1e3, digits=2)
    return {key: figures[key] for key in ("p50_ms", "p99_ms", "max_ms")}


def windows(outcomes: list[Outcome], window_s: float) -> list[dict[str, Any]]:
    count = int(max((o.started_s for o in outcomes), default=0.0) // window_s) + 1
    rows = []
    for w in range(count):
        inside = [o for o in outcomes if w * window_s <= o.started_s < (w + 1) * window_s]
        scored = [o.latency_s for o in inside if o.kind == "score" and o.result == 200]
        classes = Counter(status_class(o.result) for o in inside)
        rows.append(
            {
                "start_s": w * window_s,
                "requests": len(inside),
                **percentiles_ms([o.latency_s for o in inside]),
                "score_p99_ms": percentiles_ms(scored)["p99_ms"],
                "4xx": classes["4xx"],
                "5xx": classes["5xx"],
                "transport_errors": classes["transport"],
            }
        )
    return rows


def compare_counters(tally: Tally, samples: Samples, model_name: str) -> dict[str, Any]:
    """The server's counters against the client's counts of the same things."""
    kinds = {kind.name: kind for kind in (*KINDS, RELOAD)}
    client_http: Counter[tuple[str, str, str]] = Counter()
    client_codes: Counter[str] = Counter()
    rows = 0
    for o in tally.outcomes:
        kind = kinds[o.kind]
        client_http[(kind.route, kind.method, status_class(o.result))] += 1
        if o.code is not None:
            client_codes[o.code] += 1
        if o.result == 200:
            rows += kind.rows
    http = []
    routes = {route for route, _, _ in client_http}
    for name, labels in samples:  # the server's series of those routes the client never saw: 0 there too
        label = dict(labels)
        if name == "anomaly_http_request_duration_seconds_count" and label["route"] in routes:
            client_http.setdefault((label["route"], label["method"], label["status_class"]), 0)
    for key, count in sorted(client_http.items()):
        route, method, klass = key
        labels = frozenset({("route", route), ("method", method), ("status_class", klass)})
        server = samples.get(("anomaly_http_request_duration_seconds_count", labels), 0.0)
        http.append(
            {"route": route, "method": method, "status_class": klass, "client": count, "server": server}
        )
    server_codes = {
        dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "anomaly_requests_rejected_total" and value
    }
    rejected = [
        {"code": code, "client": client_codes.get(code, 0), "server": server_codes.get(code, 0.0)}
        for code in sorted(set(client_codes) | set(server_codes))
    ]
    model = ("model", model_name)
    reloads_ok = sum(1 for r in tally.reloads if r["result"] == 200)
    scalars = {
        "readings_scored": {
            "client": rows,
            "server": samples.get(("anomaly_readings_scored_total", frozenset({model})), None),
        },
        "reloads_success": {
            "client": 1 + reloads_ok,  # the load at startup
            "server": samples.get(
                ("anomaly_model_reloads_total", frozenset({model, ("outcome", "success")})), None
            ),
        },
        "reloads_failure": {
            "client": 0,
            "server": samples.get(
                ("anomaly_model_reloads_total", frozenset({model, ("outcome", "failure")})), None
            ),
        },
        "in_flight_during_the_scrape": {
            "client": 1,  # the scrape itself
            "server": samples.get(("anomaly_http_requests_in_flight", frozenset()), None),
        },
    }
    match = (
        all(row["client"] == row["server"] for row in http)
        and all(row["client"] == row["server"] for row in rejected)
        and all(v["client"] == v["server"] for v in scalars.values())
    )
    return {"http": http, "rejected": rejected, **scalars, "match": match}


def summarise(
    tally: Tally,
    seconds: float,
    rss: list[list[float]],
    rss_at_ready: float | None,
    samples: Samples,
    args: argparse.Namespace,
) -> dict[str, Any]:
    kinds = {kind.name: kind for kind in (*KINDS, RELOAD)}
    outcomes = tally.outcomes
    by_class: dict[str, Any] = {"2xx": 0, "4xx": {}, "5xx": {}, "transport": {}}
    for o in outcomes:
        klass = status_class(o.result)
        if klass == "2xx":
            by_class["2xx"] += 1
        else:
            bucket = by_class.setdefault(klass, {})
            bucket[str(o.result)] = bucket.get(str(o.result), 0) + 1
    unexpected = [
        {"kind": o.kind, "at_s": round(o.started_s, 3), "result": o.result, "code": o.code}
        for o in outcomes
        if o.result != kinds[o.kind].status or o.code != kinds[o.kind].code
    ]
    by_kind = {}
    for name, kind in kinds.items():
        mine = [o for o in outcomes if o.kind == name]
        if mine:
            by_kind[name] = {
                "requests": len(mine),
                "expected": kind.status,
                "outcomes": dict(Counter(str(o.result) for o in mine)),
                **percentiles_ms([o.latency_s for o in mine]),
            }
    warm_s = min(args.window_s, args.minutes * 60 / 4)
    after_warmup = [mib for t, mib in rss if t >= warm_s] or [mib for _, mib in rss]
    rss_summary = {
        "at_ready": None if rss_at_ready is None else round(rss_at_ready, 1),
        "after_warmup": after_warmup[0] if after_warmup else None,
        "end": rss[-1][1] if rss else None,
        "max": max((mib for _, mib in rss), default=None),
        "warmup_s": warm_s,
        "series": rss,
    }
    rss_summary["growth_after_warmup"] = (
        round(rss_summary["end"] - rss_summary["after_warmup"], 1) if after_warmup else None
    )
    return {
        "totals": {
            "sent": tally.sent,
            "received": len(outcomes),
            "lost": tally.sent - len(outcomes),
            "seconds": round(seconds, 2),
            "requests_per_s": round(len(outcomes) / seconds, 1),
            "unexpected": len(unexpected),
        },
        "by_class": by_class,
        "by_kind": by_kind,
        "unexpected": unexpected[:50],
        "windows": windows(outcomes, args.window_s),
        "rss_mib": rss_summary,
        "reloads": tally.reloads,
        "counters": compare_counters(tally, samples, args.model_name),
    }


def server_log(path: Path) -> dict[str, Any]:
    """Lines, errors and tracebacks of the server's JSON log."""
    lines = errors = tracebacks = not_json = 0
    for raw in path.read_text(errors="replace").splitlines():
        if not raw.strip():
            continue
        lines += 1
        try:
            entry = json.loads(raw)
        except ValueError:
            not_json += 1
            continue
        errors += entry.get("level") in ("ERROR", "CRITICAL")
        tracebacks += "exc" in entry
    return {"lines": lines, "errors": errors, "tracebacks": tracebacks, "not_json": not_json}


def table(result: dict[str, Any]) -> str:
    t, rss, c = result["totals"], result["rss_mib"], result["counters"]
    by_class, reloads, window_s = result["by_class"], result["reloads"], result["config"]["window_s"]
    reloaded = sum(1 for r in reloads if r["result"] == 200)
    m, rate = result["machine"], result["config"]["rate"]
    figures = [
        [
            "duration",
            f"{t['seconds']:.0f} s at {t['requests_per_s']:.0f} req/s (target {rate:.0f})",
        ],
        ["requests sent / answered / lost", f"{t['sent']} / {t['received']} / {t['lost']}"],
        ["2xx", by_class["2xx"]],
        [
            f"4xx (all as expected: {t['unexpected'] == 0})",
            ", ".join(f"{k}: {v}" for k, v in sorted(by_class["4xx"].items())) or "0",
        ],
        ["5xx", sum(by_class["5xx"].values())],
        ["transport errors", sum(by_class["transport"].values())],
        ["admin reloads answered 200", f"{reloaded} of {len(reloads)}"],
        [
            "RSS at ready / after warm-up / end / max",
            f"{rss['at_ready']} / {rss['after_warmup']} / {rss['end']} / {rss['max']} MiB "
            f"(growth after warm-up {rss['growth_after_warmup']} MiB)",
        ],
        [
            "server counters = client counts",
            f"{c['match']} ({len(c['http'])} route/status series, {len(c['rejected'])} error codes, "
            f"readings {c['readings_scored']['server']:.0f})",
        ],
    ]
    windows_table = markdown_table(
        ["window", "requests", "p50 ms", "p99 ms", "max ms", "/v1/score p99 ms", "4xx", "5xx", "transport"],
        (
            [f"{w['start_s']:.0f}-{w['start_s'] + window_s:.0f} s"]
            + [w[key] for key in ("requests", "p50_ms", "p99_ms", "max_ms", "score_p99_ms", "4xx", "5xx")]
            + [w["transport_errors"]]
            for w in result["windows"]
        ),
    )
    checks = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items())
    return "\n".join(
        [
            f"`{result['command']}` on {m['cpu']} ({m['cpus']} CPUs), load average {m['load_average_start']} "
            "at the start",
            "",
            markdown_table(["figure", "value"], figures, left=2),
            "",
            windows_table,
            "",
            f"checks: {checks}",
        ]
    )


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="target requests/s, all clients together")
    parser.add_argument("--concurrency", type=int, default=8, help="client tasks (and connections)")
    parser.add_argument("--reload-every-s", type=float, default=30.0)
    parser.add_argument("--window-s", type=float, default=30.0, help="latency percentiles per window")
    parser.add_argument("--rss-every-s", type=float, default=5.0)
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--model-name", default="factory-ae")
    parser.add_argument("--python", type=Path, default=default_python(), help="the server's interpreter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        store, versions, manifest = prepare_store(args.store, args.model_name, workdir)
        x, source = valid_readings(manifest, SINGLE_BODIES + BATCH_BODIES * BINARY_ROWS)
        prepared = bodies(x)
        kinds = [k for k in KINDS if k.name != "explain" or EXPLAINER in manifest.graphs]
        env = server_env(store, args.model_name) | {
            "ANOMALY_API_KEYS": API_KEY,
            "ANOMALY_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        log_path = workdir / "server.log"
        load_start = os.getloadavg()
        server = Server(args.python, APP, env, log_path, cpu=None)
        try:
            start_to_ready_s = server.wait_ready("/readyz")
            rss_at_ready = server.rss_mib()
            tally, rss, seconds, metrics_text = asyncio.run(run_load(server, args, kinds, prepared, versions))
        finally:
            stop_started = time.perf_counter()
            server.stop()
            stop_s = time.perf_counter() - stop_started
        log = server_log(log_path)
        result = results_head("bench.soak", argv) | {
            "config": {
                k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out",)
            }
            | {"kinds": {k.name: k.weight for k in kinds}, "readings": source},
            "model": {"name": args.model_name, "versions": versions, "n_sensors": manifest.n_sensors},
            "server": {
                "start_to_ready_s": round(start_to_ready_s, 2),
                "exit_code": server.process.returncode,
                "stop_s": round(stop_s, 2),
                "log": log,
            },
        }
        result["machine"] |= {
            "load_average_start": [round(v, 2) for v in load_start],
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
        }
        result |= summarise(tally, seconds, rss, rss_at_ready, metric_samples(metrics_text), args)
    t, rss_summary = result["totals"], result["rss_mib"]
    growth = rss_summary["growth_after_warmup"]
    result["checks"] = {
        "nothing_lost": t["lost"] == 0,
        "no_5xx": not result["by_class"]["5xx"],
        "no_transport_errors": not result["by_class"]["transport"],
        "every_answer_as_expected": t["unexpected"] == 0,
        "counters_match": result["counters"]["match"],
        "every_reload_succeeded": bool(result["reloads"])
        and all(r["result"] == 200 for r in result["reloads"]),
        "rss_growth_bounded": growth is not None and growth <= args.max_rss_growth_mib,
        "server_log_clean": log["errors"] == 0 and log["tracebacks"] == 0 and log["not_json"] == 0,
        "server_stopped_cleanly": result["server"]["exit_code"] in (0, -15),
    }
    result["passed"] = all(result["checks"].values())
    print(table(result), flush=True)
    if args.out is not None:
        write_results(result, args.out)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
