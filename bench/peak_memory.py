"""Peak memory of one server process on the largest bodies it accepts: what a pod's memory limit must
hold (deploy/k8s/deployment.yaml, docs/deploy.md).

One `uvicorn factory_anomaly.app.main:app` on the shipped model, default settings (MAX_BODY_BYTES 64 MiB,
MAX_BATCH 1024, two scoring threads). In turn, with VmRSS and VmHWM (the peak) read from /proc after each:
  1. the largest valid JSON batch (MAX_BATCH rows);
  2. a JSON batch of `--body-mib` (default: MAX_BODY_BYTES, just under), refused 413 `batch_too_large`
     from simdjson's row count;
  3. two of those at once (one per scoring thread);
  4. four largest valid batches at once;
  5. that body with an escaped id, which simdjson's path declines, so the full parse reads every number
     (then 413), once and twice at once: the most a client can make the server hold;
  6. the same numbers as a V2 infer request with one NaN token, which simdjson refuses, so the standard
     library reads all of it (then 413: more rows than MAX_BATCH), once and twice at once.
Prints a table with the command and writes JSON (`--out`).

    python -m bench.peak_memory [--body-mib 64] [--out bench/results/peak_memory.json]   (make bench-memory)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import (
    APP,
    ROOT,
    Server,
    default_python,
    heading,
    markdown_table,
    results_head,
    server_env,
    write_results,
)
from factory_anomaly.app.config import Settings
from factory_anomaly.artifact import resolve_current, verify_artifact

SETTINGS = Settings(model_store=Path("unused"))  # the defaults the server runs with


def json_batch_of(rows: int, n: int, seed: int) -> bytes:
    """`{"vectors": ...}` of `rows` random float32 readings, as the client writes them."""
    x = np.random.default_rng(seed).normal(size=(rows, n)).astype(np.float32)
    return orjson.dumps({"vectors": x}, option=orjson.OPT_SERIALIZE_NUMPY)


def json_body_of_size(size: int, n: int) -> bytes:
    """A JSON batch just under `size` bytes (whole rows)."""
    one_row = len(json_batch_of(1, n, 0)) - len(b'{"vectors":[]}')
    body = json_batch_of(max(1, size // (one_row + 1)), n, 1)
    while len(body) >= size:  # orjson's shortest floats vary a little in length
        body = body[: body.rfind(b"],[")] + b"]]}"
    return body


def escaped(body: bytes) -> bytes:
    """The batch with an escaped id: simdjson's path declines any body with a backslash, so the full
    parse reads it (every number a Python float) before refusing it."""
    return body[:-1] + b',"ids":["\\u0041"]}'


def v2_with_a_nan(body: bytes, n: int) -> bytes:
    """The same numbers as one V2 infer request, its last value a NaN token: simdjson refuses NaN, so the
    standard library's reading parses all of it to name the element."""
    rows = body.count(b"],[") + 1
    data = body[len(b'{"vectors":') : -1]
    data = data[: data.rfind(b",")] + b",NaN]]"
    head = f'{{"inputs":[{{"name":"readings","datatype":"FP32","shape":[{rows},{n}],"data":'.encode()
    return head + data + b"}]}"


def post_at_once(url: str, path: str, body: bytes, copies: int) -> list[int]:
    statuses: list[int] = []

    def post() -> None:
        headers = {"Content-Type": "application/json"}
        answer = httpx.post(url + path, content=body, headers=headers, timeout=300)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=post) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--model-name", default="factory-ae")
    parser.add_argument("--body-mib", type=float, default=SETTINGS.max_body_bytes / 2**20,
                        help="size of the refused body (default: MAX_BODY_BYTES)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peak_memory.json")
    args = parser.parse_args(argv)

    model_dir = args.model_store / args.model_name
    manifest = verify_artifact(resolve_current(model_dir))
    n = manifest.n_sensors
    largest_valid = json_batch_of(SETTINGS.max_batch, n, 2)
    largest_body = json_body_of_size(int(args.body_mib * 2**20), n)

    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    env = server_env(args.model_store, args.model_name) | {
        "ANOMALY_ALARM_DB": str(workdir / "alarms.sqlite3")
    }
    server = Server(default_python(), APP, env, workdir / "server.log", None, ["--no-access-log"])
    steps: list[dict[str, Any]] = []
    try:
        server.wait_ready()

        def record(step: str, body: bytes, copies: int, statuses: list[int]) -> None:
            memory = server.memory_mib() or {}
            sizes = {"body_mib": len(body) / 2**20, "at_once": copies, "statuses": statuses}
            steps.append(
                {"step": step, **sizes, "rss_mib": memory.get("VmRSS"), "peak_mib": memory.get("VmHWM")}
            )

        record("ready", b"", 0, [])
        batch, infer = "/v1/score/batch", f"/v2/models/{args.model_name}/infer"
        slow, v2 = escaped(largest_body), v2_with_a_nan(largest_body, n)
        for step, path, body, copies in (
            (f"largest valid JSON batch ({SETTINGS.max_batch} rows)", batch, largest_valid, 1),
            ("largest body, refused once counted", batch, largest_body, 1),
            ("two largest bodies at once", batch, largest_body, 2),
            ("four largest valid batches at once", batch, largest_valid, 4),
            ("largest body with an escape: the full parse", batch, slow, 1),
            ("two of those at once", batch, slow, 2),
            ("largest V2 JSON with a NaN token: the full parse", infer, v2, 1),
            ("two of those at once", infer, v2, 2),
        ):
            record(step, body, copies, post_at_once(server.url, path, body, copies))
    finally:
        server.stop()

    results = results_head("bench.peak_memory", argv, manifest=manifest) | {
        "max_body_bytes": SETTINGS.max_body_bytes,
        "max_batch": SETTINGS.max_batch,
        "scoring_threads": SETTINGS.scoring_threads,
        "steps": steps,
    }
    print(heading(results))
    print(markdown_table(
        ["step", "body MiB", "at once", "statuses", "RSS MiB", "peak MiB"],
        ([s["step"], f"{s['body_mib']:.1f}", s["at_once"], " ".join(map(str, s["statuses"])),
          f"{s['rss_mib']:.0f}", f"{s['peak_mib']:.0f}"] for s in steps),
    ))  # fmt: skip
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
