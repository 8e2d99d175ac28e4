"""Which HTTP stack under uvicorn? h11 + asyncio against httptools + uvloop, A-B-A-B in one run.

Same apps (`factory_anomaly.app.main:app` for `/v1/score`, `bench.floor:app` for the no-op floor), same
pre-built bodies and wrk runs as `bench.load` (server on CPU 0, wrk on CPU 1 where the machine allows it);
only uvicorn's `--http` and `--loop` change. Each stack runs twice, alternating, so drift on a shared
machine shows. The figures, with the command that measured them: docs/benchmarks.md, change 2 ("uvicorn on
uvloop + httptools").

    .venv/bin/python -m bench.http_stack [--duration-s 5] [--out bench/results/http_stack.json]

Needs wrk and both stacks installed (uvloop and httptools are base dependencies). Run it alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    APP,
    BODY_ROWS,
    FLOOR,
    ROOT,
    SCORE,
    Server,
    default_python,
    heading,
    markdown_table,
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

STACKS = {
    "h11 + asyncio": ["--http", "h11", "--loop", "asyncio"],
    "httptools + uvloop": ["--http", "httptools", "--loop", "uvloop"],
}
CONNECTIONS = (1, 8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/http_stack.json"))
    args = parser.parse_args(argv)
    wrk_version = require_wrk()
    manifest = verify_artifact(resolve_current(ROOT / "model_store" / "factory-ae"))
    values = plant_readings(manifest.sensor_names, BODY_ROWS)
    pinning = pin_client()
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-stack-"))
    bodies = write_bodies(values, workdir)["single"]
    env = server_env("model_store", "factory-ae")
    rows: list[dict[str, Any]] = []
    for stack in [*STACKS, *STACKS]:
        for target, route in ((APP, SCORE), ("bench.floor:app", FLOOR)):
            log_path = workdir / "server.log"
            server = Server(default_python(), target, env, log_path, pinning.server_cpu, STACKS[stack])
            try:
                server.wait_ready("/readyz")
                wrk(server.url, route, bodies, 8, 1, pinning.client_cpu)  # warm-up
                for c in CONNECTIONS:
                    r = wrk(server.url, route, bodies, c, args.duration_s, pinning.client_cpu)
                    rows.append({"stack": stack, "route": route.path, "connections": c, **r})
                    print(
                        f"  {stack:<20} {route.path:<10} c={c:<3} {r['requests_per_s']:7.0f} req/s",
                        flush=True,
                    )
            finally:
                server.stop()

    results = results_head("bench.http_stack", argv, pinning, manifest, wrk_version) | {
        "duration_s": args.duration_s,
        "runs": rows,
    }
    print(f"\n{heading(results)}")
    print(
        markdown_table(
            ["stack", "route", "conns", "req/s", "p50 ms", "p99 ms"],
            (
                [r["stack"], f"`{r['route']}`", r["connections"], f"{r['requests_per_s']:.0f}"]
                + [f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
                for r in rows
            ),
            left=2,
        )
    )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
