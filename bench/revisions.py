"""The serving hot path of two checkouts side by side, in one run: is a change no slower than noise?

    python -m bench.revisions --before DIR --before-app app.main:app [--after .] [--reps 3] [--seconds 5]
        --out bench/results/revisions.json

Each checkout's own service (`python -m uvicorn <app>` in its directory, its own `model_store/factory-ae`,
this venv's packages) is started pinned to CPU 0 and loaded with wrk on CPU 1: `/v1/score` one JSON reading
at 1 and 8 connections, `/v1/score/batch` 64 binary readings at 1; then its RSS. The two alternate
(before, after, after, before, ...) so drift on this shared machine hits both alike; medians and the
after/before ratio are printed. A worktree of an older commit gives the "before": `git worktree add
/tmp/before <commit>` (its app module path is whatever that commit served, e.g. `app.main:app`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import (
    APP,
    JSON,
    OCTET,
    ROOT,
    WRK_LUA,
    free_port,
    markdown_table,
    results_head,
    write_results,
)

CASES = (
    ("/v1/score", JSON, "single", 1),
    ("/v1/score", JSON, "single", 8),
    ("/v1/score/batch", OCTET, "batch", 1),
)


def _bodies(store: Path, workdir: Path) -> dict[str, list[str]]:
    """Eight single JSON readings and one binary batch of 64, mid-range of the model's training range."""
    manifest = json.loads(next(store.glob("*/manifest.json")).read_text())
    low, high = np.array(manifest["sensor_low"]), np.array(manifest["sensor_high"])
    rng = np.random.default_rng(0)
    workdir.mkdir(parents=True, exist_ok=True)
    single = []
    for i in range(8):
        x = (low + (high - low) * rng.uniform(0.3, 0.7, size=len(low))).astype(np.float32)
        path = workdir / f"single{i}.json"
        path.write_bytes(json.dumps({"values": [float(v) for v in x]}).encode())
        single.append(str(path))
    batch = workdir / "batch.bin"
    batch.write_bytes(
        (low + (high - low) * rng.uniform(0.3, 0.7, size=(64, len(low)))).astype("<f4").tobytes()
    )
    return {"single": single, "batch": [str(batch)]}


def _wrk(url: str, path: str, media: str, files: list[str], connections: int, seconds: str) -> dict[str, Any]:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}", "-s", str(WRK_LUA)]
    out = subprocess.run(
        [*command, url, "--", path, media, *files], capture_output=True, text=True, check=True
    )
    line = next(line for line in out.stdout.splitlines() if line.startswith("WRK_JSON "))
    summary = json.loads(line.removeprefix("WRK_JSON "))
    if any(summary["errors"].values()):
        raise SystemExit(f"wrk saw errors on {path}: {summary['errors']}")
    return summary


def _run(directory: Path, app: str, bodies: dict[str, list[str]], seconds: float) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env |= {"ANOMALY_MODEL_STORE": str(directory / "model_store"), "ANOMALY_MODEL_NAME": "factory-ae"}
    server = ["taskset", "-c", "0", sys.executable, "-m", "uvicorn", app, "--port", str(port)]
    process = subprocess.Popen(
        server, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{app} in {directory} never became ready")
            time.sleep(0.1)
        result = {}
        for path, media, kind, connections in CASES:
            _wrk(url, path, media, bodies[kind], connections, "1s")  # warm-up
            summary = _wrk(url, path, media, bodies[kind], connections, f"{seconds:g}s")
            name = f"{path} x{connections}"
            result[f"{name} req/s"] = summary["requests"] / (summary["duration_us"] / 1e6)
            result[f"{name} p99 ms"] = summary["latency_us"]["p99"] / 1000
        status = Path(f"/proc/{process.pid}/status").read_text()
        result["RSS MiB"] = int(status.split("VmRSS:")[1].split()[0]) / 1024
        return result
    finally:
        process.terminate()
        process.wait(timeout=15)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout to compare against")
    parser.add_argument("--before-app", default="app.main:app", help="its ASGI app (uvicorn's argument)")
    parser.add_argument("--after", type=Path, default=ROOT, help="this checkout by default")
    parser.add_argument("--reps", type=int, default=3, help="runs of each checkout, alternating")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk's duration per case")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "revisions.json")
    args = parser.parse_args(argv)
    variants = {"before": (args.before.resolve(), args.before_app), "after": (args.after.resolve(), APP)}
    bodies = _bodies(args.after / "model_store" / "factory-ae", Path("/tmp/bench-revisions"))
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for rep in range(args.reps):
        for name in ("before", "after") if rep % 2 == 0 else ("after", "before"):
            runs[name].append(_run(*variants[name], bodies, args.seconds))
    rows, medians = [], {}
    for key in runs["before"][0]:
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        medians[key] = {"before": before, "after": after, "after/before": after / before}
        rows.append((key, f"{before:.2f}", f"{after:.2f}", f"{after / before:.3f}"))
    results = results_head("bench.revisions", argv) | {"variants": {k: str(v) for k, v in variants.items()}}
    results |= {"runs": runs, "medians": medians}
    print(markdown_table(("case", "before", "after", "after/before"), rows))
    write_results(results, args.out)


if __name__ == "__main__":
    main()
