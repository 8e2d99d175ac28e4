"""A live plant: streams synthetic readings with injected faults to the scoring API at a steady rate.

    python -m factory_anomaly.plant.simulate --url http://127.0.0.1:8000 [--rate 5] [--anomaly-rate 0.05]
        [--outlier-rate 0.01] [--batch 1] [--count N | --duration S] [--seed 0]
        [--sensors 1000 --plant-seed 0 | --plant plant.json] [--api-key KEY] [--report-every 10] [--wait 120]
        [--assets N --asset-prefix line-1/machine-]

numpy and the service's own Python client (`factory_anomaly_client`: httpx, numpy, orjson; no torch, no
pandas): the simulator container runs it on the serving image's virtual environment, with the client package
copied beside it. The plant is `plant.synthetic.Plant`; by default the one the shipped model was trained on
(1000 sensors, plant seed 0; `make model`), or the plant a `python -m factory_anomaly.training synth` run
describes
(`--plant its/plant.json`). Readings are simulated in chunks of `--chunk` rows (each a new run of the same
plant, `anomaly_rate` of its rows inside fault episodes of the six kinds; `--outlier-rate` of the readings
with a few sensors far out of range on top) and sent in time order: one reading per `POST /v1/score`
(`--batch 1`), or `--batch` readings per binary `POST /v1/score/batch`. Each request is sent once (the
client's retries are off): a failure is counted in the summary by its HTTP status, or by the client's code
(`connection_failed`, `timeout`, `invalid_response`) when there is none, and the stream keeps its pace.

With `--assets N`, the plant runs as N machines (`<prefix>1` … `<prefix>N`), each its own stream of runs
(its own seeds, its own fault episodes); requests go to them in turn, each carrying its machine in
`X-Asset`, so the service keeps an alarm per machine and the operator dashboard has assets to show. The
summary then also counts the alarm episodes the answers opened.

It waits for `/readyz`, checks that the model serving has the plant's sensors (`GET /v1/model`, when the key
allows), then paces requests to `--rate` readings per second. Every `--report-every` seconds one status line
goes to stderr; at the end (`--count`, `--duration`, SIGINT or SIGTERM) one JSON summary goes to stdout:
readings sent, faulty (ground truth: in a fault episode or an outlier), flagged by the API, flagged among
the faulty and among the others, errors. Exit status 0, or 2 for bad arguments, a model whose sensors are
not the plant's, or an API that never gets ready.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from factory_anomaly_client import AnomalyClient, ConnectionFailedError, ServiceError

from factory_anomaly.plant.synthetic import Plant, PlantConfig

RETRY_AFTER_S = 1.0
"""Pause after a request that got no answer (nothing listening, a timeout) before the next one."""
READY_POLL_S = 1.0


@dataclass
class Summary:
    sent: int = 0  # readings the API scored
    faulty: int = 0  # of those, in a fault episode or an outlier (ground truth)
    flagged: int = 0  # of those, anomalous according to the API
    flagged_faulty: int = 0
    flagged_normal: int = 0  # false alarms
    errors: dict[str, int] = field(default_factory=dict)  # error_kind(...) -> requests
    seconds: float = 0.0
    assets: int = 0  # machines streamed with X-Asset (0: none)
    alarms_opened: int = 0  # distinct alarm episodes the answers named (with --assets)

    def count_error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (
            f"sent {self.sent} ({rate:.1f}/s), faulty {self.faulty}, flagged {self.flagged} "
            f"({self.flagged_faulty} faulty, {self.flagged_normal} normal), "
            f"errors {sum(self.errors.values())}"
            + (f", {self.assets} machines, {self.alarms_opened} alarm episodes" if self.assets else "")
        )


def error_kind(exc: ServiceError) -> str:
    """The summary's key for a failed request: the HTTP error status ("503", "422"), else the client's code
    ("connection_failed", "timeout"; "invalid_response" for a success answer that is not the service's)."""
    if exc.status is not None and exc.status >= 400:
        return str(exc.status)
    return exc.code


class Stop(Exception):
    """SIGTERM or SIGINT: finish the summary and exit 0."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def load_plant(args: argparse.Namespace) -> Plant:
    if args.plant is not None:
        meta = json.loads(args.plant.read_text())
        config = dict(meta["config"])
        config["snr_range"] = tuple(config["snr_range"])
        return Plant(PlantConfig(**config), plant_seed=int(meta["plant_seed"]))
    return Plant(PlantConfig(n_sensors=args.sensors), plant_seed=args.plant_seed)


def readings(
    plant: Plant, chunk: int, anomaly_rate: float, outlier_rate: float, seed: int
) -> Iterator[tuple[np.ndarray, bool]]:
    """(reading float32 [n_sensors], faulty), forever, in chunks of `chunk` rows.

    Faulty: inside one of the plant's fault episodes, or an outlier reading (`outlier_rate` of readings):
    1 to 5 % of its sensors read far above their typical range, as a failing transmitter or a wrong
    unit would. The plant's own faults are subtle by design (most stay inside each sensor's range); the
    outliers are what any model flags and what the dashboard's drift panel shows."""
    rng = np.random.default_rng([seed, 0x51])
    n = plant.config.n_sensors
    low, high = plant.typical_low, plant.typical_high
    far = (high + 5 * (high - low) + 1).astype(np.float32)
    run_seed = seed
    while True:
        run = plant.simulate(chunk, seed=run_seed, anomaly_rate=anomaly_rate)
        labels = run.labels.astype(bool)
        for row in np.flatnonzero(rng.random(chunk) < outlier_rate).tolist():
            sensors = rng.choice(n, size=max(1, int(rng.uniform(0.01, 0.05) * n)), replace=False)
            run.values[row, sensors] = far[sensors]
            labels[row] = True
        yield from zip(run.values, labels.tolist(), strict=True)
        run_seed += 1


def wait_ready(client: AnomalyClient, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.ready():
                return
        except ServiceError:  # no answer yet, or an answer that is neither 200 nor 503
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {client.base_url}/readyz not 200 after {timeout_s:.0f} s")
        time.sleep(READY_POLL_S)


def check_sensors(client: AnomalyClient, plant: Plant) -> None:
    """The model's sensors must be the plant's, in the same order (skipped when the key does not allow)."""
    try:
        names = client.model()["sensor_names"]
    except ServiceError as exc:
        print(f"simulate: cannot check the model's sensors (GET /v1/model: {exc})", file=sys.stderr)
        return
    if list(names) != list(plant.sensor_names):
        raise SystemExit(
            f"error: the model serves {len(names)} sensors ({names[:3]}...) but the plant has "
            f"{len(plant.sensor_names)} ({list(plant.sensor_names[:3])}...): pick the plant the model was "
            "trained on (--sensors, --plant-seed, or --plant plant.json)"
        )


def send(
    client: AnomalyClient, rows: list[np.ndarray], asset: str | None = None
) -> list[tuple[bool, str | None]]:
    """The API's is_anomaly and alarm id per row: one row as JSON `POST /v1/score`, more as one binary
    float32 `POST /v1/score/batch`; with `asset`, sent as that machine's. A failed request raises the
    client's `ServiceError`."""
    if len(rows) == 1:
        result = client.score(rows[0], asset=asset)
        return [(result.is_anomaly, _alarm_id(result.alarm))]
    batch = client.score_batch(np.vstack(rows), asset=asset)
    return [(item.is_anomaly, _alarm_id(item.alarm)) for item in batch.results]


def _alarm_id(alarm: dict[str, Any] | None) -> str | None:
    return None if alarm is None else alarm.get("id")


def run(args: argparse.Namespace) -> Summary:
    plant = load_plant(args)
    summary = Summary()
    interval_s = args.batch / args.rate
    started = next_report = next_send = time.monotonic()
    # retries=0: one attempt per request; the loop counts failures itself and a retried reading would be late.
    with AnomalyClient(args.url, api_key=args.api_key or None, timeout_s=args.timeout, retries=0) as client:
        try:
            wait_ready(client, args.wait)
            check_sensors(client, plant)
            machines: list[str | None] = [f"{args.asset_prefix}{i + 1}" for i in range(args.assets)] or [None]
            streams = [
                readings(plant, args.chunk, args.anomaly_rate, args.outlier_rate, args.seed + 1000 * i)
                for i in range(len(machines))
            ]
            summary.assets = args.assets
            alarm_ids: set[str] = set()
            turn = 0
            started = next_report = next_send = time.monotonic()
            while args.count is None or summary.sent < args.count:
                if args.duration is not None and time.monotonic() - started >= args.duration:
                    break
                size = args.batch if args.count is None else min(args.batch, args.count - summary.sent)
                asset, stream = machines[turn % len(machines)], streams[turn % len(machines)]
                turn += 1
                batch = [next(stream) for _ in range(size)]
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_send = max(next_send + interval_s, time.monotonic() - 1.0)  # no burst after a stall
                try:
                    answers = send(client, [values for values, _ in batch], asset)
                except ConnectionFailedError as exc:
                    summary.count_error(error_kind(exc))
                    time.sleep(RETRY_AFTER_S)
                    continue
                except ServiceError as exc:
                    summary.count_error(error_kind(exc))
                    continue
                for (_, label), (flag, alarm_id) in zip(batch, answers, strict=True):
                    if alarm_id is not None:
                        alarm_ids.add(alarm_id)
                        summary.alarms_opened = len(alarm_ids)
                    summary.sent += 1
                    summary.faulty += label
                    summary.flagged += flag
                    summary.flagged_faulty += flag and label
                    summary.flagged_normal += flag and not label
                if args.report_every > 0 and time.monotonic() >= next_report + args.report_every:
                    next_report = time.monotonic()
                    summary.seconds = next_report - started
                    print(f"simulate: {summary.line()}", file=sys.stderr, flush=True)
        except Stop:
            pass
        summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m factory_anomaly.plant.simulate",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--url", required=True, help="the API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rate", type=_positive(float), default=5.0, help="readings per second")
    parser.add_argument(
        "--anomaly-rate", type=float, default=0.05, help="share of readings in fault episodes"
    )
    parser.add_argument("--outlier-rate", type=float, default=0.0, help="share of outlier readings")
    parser.add_argument("--batch", type=_positive(int), default=1, help="readings per request")
    parser.add_argument("--count", type=_positive(int), help="stop after this many readings")
    parser.add_argument("--duration", type=_positive(float), help="stop after this many seconds")
    parser.add_argument("--sensors", type=_positive(int), default=1000, help="sensors of the default plant")
    parser.add_argument("--plant-seed", type=int, default=0, help="seed of the plant itself")
    parser.add_argument(
        "--plant", type=Path, help="plant.json of a `python -m factory_anomaly.training synth` run"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first simulated run")
    parser.add_argument("--chunk", type=_positive(int), default=3600, help="rows simulated at a time")
    parser.add_argument("--api-key", default="", help="API key (empty: none)")
    parser.add_argument("--timeout", type=_positive(float), default=10.0, help="request timeout, seconds")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for /readyz")
    parser.add_argument(
        "--report-every", type=float, default=10.0, help="seconds between status lines (0: none)"
    )
    parser.add_argument("--assets", type=int, default=0, help="machines, each sent with X-Asset (0: none)")
    parser.add_argument("--asset-prefix", default="line-1/machine-", help="machine names: prefix + 1..N")
    args = parser.parse_args(argv)
    if not 0.0 <= args.anomaly_rate < 0.5:
        parser.error(f"--anomaly-rate must be in [0, 0.5), got {args.anomaly_rate}")
    if not 0.0 <= args.outlier_rate <= 1.0:
        parser.error(f"--outlier-rate must be in [0, 1], got {args.outlier_rate}")
    if args.assets < 0:
        parser.error(f"--assets must be >= 0, got {args.assets}")
    if args.plant is not None and not args.plant.is_file():
        parser.error(f"--plant {args.plant}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        summary = run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise
    print(json.dumps(asdict(summary)), flush=True)
    print(f"simulate: done: {summary.line()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
