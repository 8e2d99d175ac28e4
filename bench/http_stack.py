"""Which HTTP stack under uvicorn? h11 + asyncio against httptools + uvloop, A-B-A-B in one run.

Same apps (`factory_anomaly.app.main:app` for `/v1/score`, `bench.floor:app` for the no-op floor), same
pre-built bodies
and wrk runs as `bench.load` (server on CPU 0, wrk on CPU 1 where the machine allows it); only uvicorn's
`--http` and `--loop` change. Each stack runs twice, alternating, so drift on a shared machine shows.

    .venv/bin/python -m bench.http_stack [--duration-s 5]

Needs wrk and both stacks installed (uvloop and httptools are base dependencies). Run it alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.load import FLOOR, OURS, PLANT_SEED, READINGS_SEED, _bodies, wrk
from bench.server import CLIENT_CPU, SERVER_CPU, Server, can_pin, default_python
from factory_anomaly.plant.synthetic import Plant, PlantConfig

STACKS = {
    "h11 + asyncio": ["--http", "h11", "--loop", "asyncio"],
    "httptools + uvloop": ["--http", "httptools", "--loop", "uvloop"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    pinned, _ = can_pin()
    server_cpu, client_cpu = (SERVER_CPU, CLIENT_CPU) if pinned else (None, None)
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    plant = Plant(PlantConfig(n_sensors=1000), plant_seed=PLANT_SEED)
    values = plant.simulate(200, seed=READINGS_SEED, anomaly_rate=0.1).values.astype(np.float32)
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-stack-"))
    bodies = _bodies(values, workdir)["single"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env |= {"ANOMALY_MODEL_STORE": "model_store", "ANOMALY_MODEL_NAME": "factory-ae"}
    print("| stack | route | conns | req/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|---:|")
    for name in [*STACKS, *STACKS]:
        for target, route in (("factory_anomaly.app.main:app", OURS[0]), ("bench.floor:app", FLOOR[0])):
            server = Server(default_python(), target, env, workdir / "server.log", server_cpu, STACKS[name])
            try:
                server.wait_ready("/readyz")
                wrk(server.url, route, bodies, 8, 1, client_cpu)  # warm-up
                for c in (1, 8):
                    r = wrk(server.url, route, bodies, c, args.duration_s, client_cpu)
                    rate = r["requests"] / (r["duration_us"] / 1e6)
                    p50, p99 = r["latency_us"]["p50"] / 1e3, r["latency_us"]["p99"] / 1e3
                    print(
                        f"| {name} | `{route.path}` | {c} | {rate:.0f} | {p50:.2f} | {p99:.2f} |", flush=True
                    )
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
