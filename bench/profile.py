"""Where a request's time goes in the real server under load: py-spy samples it while wrk drives one route.

Issue 17 §3 asks for counting before changing. This runs the service (`factory_anomaly.app.main:app`,
default settings, or as a plant runs it with `--plant`: API keys and an X-Asset on every request) pinned
to CPU 0 and wrk on CPU 1 against one route. After a warm-up, `py-spy record` samples every thread of the
server for `--seconds` at `--rate` Hz (blocking mode: each stack is exact, at the cost of pausing the
process briefly). It writes the raw stacks, an icicle chart of them (SVG, drawn here from the same
samples) and the functions that hold most samples, inclusive and self, as a table and as JSON.
Percentages are of all samples of all threads; idle worker threads show as `_worker` and the idle event
loop as `Runner.run`.

    .venv/bin/python -m bench.profile [--route score|batch_json|batch_binary|explain] [--plant]
        [--connections 8] [--seconds 10] [--rate 250] [--out bench/results/profile-score.json]

Needs py-spy (the `dev` extra) and wrk, and the rights to trace a child process (root, or
ptrace_scope 0). Run it alone: two cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from html import escape
from pathlib import Path
from typing import Any

from bench.common import (
    APP,
    ASSETS,
    BATCH_BINARY,
    BATCH_JSON,
    BODY_ROWS,
    EXPLAIN,
    PLANT_HEADERS,
    ROOT,
    SCORE,
    Server,
    default_python,
    markdown_table,
    pin_client,
    plant_env,
    plant_readings,
    require_wrk,
    results_head,
    server_env,
    write_bodies,
    write_results,
    wrk,
)
from factory_anomaly.artifact import resolve_current, verify_artifact

ROUTES = {route.key: route for route in (SCORE, BATCH_JSON, BATCH_BINARY, EXPLAIN)}
TOP = 30
_PATH = re.compile(r" \((?:.*/(?:site-packages|lib/python3\.\d+)/|/.*?/(?=factory_anomaly/|bench/))")


def frame_name(frame: str) -> str:
    """`function (file:line)` with the file shortened to the package path."""
    return _PATH.sub(" (", frame)


def samples(raw: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw format (`frame;frame;... count` per line, outermost first) -> (frames, count) per
    stack, each frame as `frame_name` writes it."""
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [frame_name(f) for f in stack.split(";")], int(count)


def summarise(raw: str, top: int = TOP) -> dict[str, Any]:
    """Samples in py-spy's raw format -> the total and the `top` frames by inclusive and by self share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for frames, n in samples(raw):
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "share": n / total} for f, n in counter.most_common(top)] if total else []

    return {"samples": total, "inclusive": shares(inclusive), "self": shares(own)}


def py_spy() -> Path | None:
    """The py-spy beside this Python (the project's virtual environment), else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = beside if beside.exists() else shutil.which("py-spy")
    return None if found is None else Path(found)


def record(pid: int, seconds: float, rate: int, raw: Path) -> None:
    """py-spy on `pid` for `seconds`, its stacks in raw format to `raw`."""
    argv = [str(py_spy()), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(rate), "--format", "raw", "--output", str(raw)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed ({done.returncode}): {done.stderr[-2000:]}")


def flame_graph_svg(raw: str, width: int = 1400, row: int = 16) -> str:
    """A plain SVG icicle chart of the stacks (outermost at the top; width = share of samples), so the
    picture comes from the very samples the table counts."""
    tree: dict[str, Any] = {"n": 0, "kids": {}}
    for frames, n in samples(raw):
        node = tree
        node["n"] += n
        for frame in frames:
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += n
    total = tree["n"] or 1
    boxes: list[str] = []
    deepest = 0

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        nonlocal deepest
        for name, kid in sorted(node["kids"].items(), key=lambda kv: -kv[1]["n"]):
            w = kid["n"] / total * width
            if w >= 1.0:
                deepest = max(deepest, depth)
                label = name[: int(w / 7)]
                boxes.append(f'<g><title>{escape(name, quote=False)} ({kid["n"] / total:.1%})</title>'
                             f'<rect x="{x:.1f}" y="{depth * row}" width="{w:.1f}" height="{row - 1}" '
                             f'fill="hsl({sum(map(ord, name)) % 40 + 10},80%,65%)"/>'
                             f'<text x="{x + 2:.1f}" y="{depth * row + 12}" font-size="11">'
                             f"{escape(label, quote=False)}</text></g>")  # fmt: skip
                draw(kid, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{(deepest + 1) * row}" '
            f'font-family="monospace">{"".join(boxes)}</svg>\n')  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", choices=sorted(ROUTES), default="score")
    parser.add_argument("--plant", action="store_true", help="API keys set and an X-Asset on every request")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--python", type=Path, default=default_python(), help="runs uvicorn")
    parser.add_argument("--out", type=Path, help="JSON (default bench/results/profile-<route>[-plant].json)")
    args = parser.parse_args(argv)
    if py_spy() is None:
        raise SystemExit("py-spy is not installed (the `dev` extra has it: make dev)")
    wrk_version = require_wrk()
    out = args.out or ROOT / f"bench/results/profile-{args.route}{'-plant' if args.plant else ''}.json"
    manifest = verify_artifact(resolve_current(ROOT / "model_store" / "factory-ae"))
    route = ROUTES[args.route]
    if args.plant:
        route = replace(route, assets=ASSETS, headers=PLANT_HEADERS)
    pinning = pin_client()
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    files = write_bodies(plant_readings(manifest.sensor_names, BODY_ROWS), workdir)
    env = server_env("model_store", "factory-ae") | {"ANOMALY_ALARM_DB": str(workdir / "alarms.sqlite3")}
    if args.plant:
        env = plant_env(env)
    server = Server(args.python, APP, env, workdir / "server.log", pinning.server_cpu)
    raw, svg = out.with_suffix(".raw.txt"), out.with_suffix(".svg")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        server.wait_ready()
        wrk(server.url, route, files[route.body], args.connections, args.warmup_s, pinning.client_cpu)
        result: dict[str, Any] = {}

        def drive() -> None:  # wrk runs a little longer than the sampling: every sample sees load
            result.update(wrk(server.url, route, files[route.body], args.connections, args.seconds + 2,
                              pinning.client_cpu))  # fmt: skip

        driver = threading.Thread(target=drive)
        driver.start()
        record(server.process.pid, args.seconds, args.rate, raw)
        driver.join()
    finally:
        server.stop()
    summary = summarise(raw.read_text())
    svg.write_text(flame_graph_svg(raw.read_text()))
    results = results_head("bench.profile", argv, pinning, manifest, wrk_version) | {
        "route": route.label, "plant": args.plant, "connections": args.connections, "seconds": args.seconds,
        "rate": args.rate, "load": result, "raw": str(raw), "flame_graph": str(svg), **summary,
    }  # fmt: skip
    rate = result.get("requests_per_s", 0.0)
    print(f"# {route.label}{' as a plant runs it' if args.plant else ''}, {args.connections} connections: "
          f"{rate:.0f} req/s under the profiler; {summary['samples']} samples")  # fmt: skip
    for kind in ("inclusive", "self"):
        rows = [[f"{entry['share']:.1%}", entry["frame"]] for entry in summary[kind]]
        print(markdown_table([f"{kind} share", "frame"], rows, left=0))
    write_results(results, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
