"""serving.drift: the calibration-drift detector on its own clock (no excess, a clear excess, a burst,
too little data, the window forgetting, the ring bounded, the settings refused), and then for real: a
uvicorn serving the test model, whose `GET /v1/model` and `/metrics` move once flagged readings arrive."""

from __future__ import annotations

import math
import random
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from factory_anomaly.app.config import Settings
from factory_anomaly.app.serving.drift import (
    DRIFT,
    INSUFFICIENT_DATA,
    MAX_WINDOW_BUCKETS,
    OK,
    DriftDetector,
    DriftSettings,
    DriftStatus,
    binomial_upper_tail,
)
from factory_anomaly.app.wire.schemas import CalibrationDrift
from factory_anomaly.artifact import Manifest
from tests.app.conftest import (
    ADMIN,
    AUTH,
    MODEL_NAME,
    anomalous,
    server_env,
    start_server,
    stop_server,
)

HOUR = 3600.0
# A small rule for the unit tests: a window of one hour in 60 one-minute buckets; the busiest quarter
# (15 buckets) is left out of the test. A target of 1 % and 100 readings a bucket: 1 flag expected a bucket.
RULE = DriftSettings(window_s=HOUR, bucket_s=60.0, alpha=0.01, min_ratio=2.0)
TARGET = 0.01
PER_BUCKET = 100


def feed(detector: DriftDetector, start_bucket: int, flags_per_bucket: list[int]) -> float:
    """One observation per bucket, in its middle; returns the end of the last bucket fed."""
    bucket_s = detector.settings.bucket_s
    for i, flags in enumerate(flags_per_bucket):
        detector.observe(flags, PER_BUCKET, (start_bucket + i + 0.5) * bucket_s)
    return (start_bucket + len(flags_per_bucket)) * bucket_s


def states_at_each_bucket_end(detector: DriftDetector, start_bucket: int, flags: list[int]) -> list[str]:
    """Feed bucket by bucket and read the state at every bucket end."""
    bucket_s = detector.settings.bucket_s
    states = []
    for i, f in enumerate(flags):
        detector.observe(f, PER_BUCKET, (start_bucket + i + 0.5) * bucket_s)
        states.append(detector.status((start_bucket + i + 1) * bucket_s).state)
    return states


# --- the test ---------------------------------------------------------------------------------------------


def exact_upper_tail(k: int, n: int, p: Fraction) -> float:
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, "1/10"), (1, 10, "1/10"), (3, 10, "1/10"), (10, 10, "1/10"), (5, 200, "1/100"),
     (40, 200, "1/100"), (1, 200, "1/100"), (60, 100, "1/2"), (30, 100, "1/2"), (90, 300, "1/5")],
)  # fmt: skip
def test_the_binomial_tail_is_exact(k: int, n: int, p: str) -> None:
    exact = exact_upper_tail(k, n, Fraction(p))
    assert binomial_upper_tail(k, n, float(Fraction(p))) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_the_binomial_tail_at_its_edges() -> None:
    assert binomial_upper_tail(11, 10, 0.5) == 0.0
    assert binomial_upper_tail(-1, 10, 0.5) == 1.0
    assert 1e-70 < binomial_upper_tail(100, 86_400, 1e-4) < 1e-60  # a tiny tail, no cancellation to 0
    assert binomial_upper_tail(2000, 2_000_000, 1e-3) == pytest.approx(0.5, abs=0.01)  # at the mean


# --- the states -------------------------------------------------------------------------------------------


def test_no_excess_is_ok() -> None:
    detector = DriftDetector(TARGET, RULE)
    end = feed(detector, 0, [1] * 120)  # two hours at exactly the promise
    status = detector.status(end)
    assert status.state == OK
    assert (status.readings, status.flags) == (60 * PER_BUCKET, 60)
    assert status.expected_flags == pytest.approx(60.0)
    assert status.ratio == pytest.approx(1.0)
    assert status.since is None and status.as_of == end
    assert "1.00x the promise (0.01 per reading): within it" in status.message


def test_noise_at_the_promise_never_raises_it() -> None:
    """30 days of one reading a minute, each flagged with the promised 1 %, checked at every bucket's end
    with the default rule: never drift (the bound is 1 % per window, i.e. per day)."""
    rng = random.Random(4)
    detector = DriftDetector(TARGET)
    bucket_s = detector.settings.bucket_s
    per_bucket = int(bucket_s / 60)
    states = set()
    for bucket in range(int(30 * 86_400 / bucket_s)):
        flags = sum(rng.random() < TARGET for _ in range(per_bucket))
        detector.observe(flags, per_bucket, bucket * bucket_s)
        states.add(detector.status((bucket + 1) * bucket_s).state)
    assert states == {INSUFFICIENT_DATA, OK}


def test_a_clear_excess_is_drift_with_since_ratio_and_message() -> None:
    detector = DriftDetector(TARGET, RULE)
    feed(detector, 0, [1] * 60)  # an hour at the promise
    states = states_at_each_bucket_end(detector, 60, [10] * 60)  # then 10x, sustained
    # With j excess buckets in the window, the busiest 15 buckets left out are excess ones once j >= 15;
    # the 45 left hold 10 (j - 15) + (60 - j) = 9 j - 90 flags against 45 expected: material (2x) from
    # j = 20 on, and then far beyond significant. So the state turns at the 20th excess bucket's end.
    assert states[:19] == [OK] * 19 and states[19:] == [DRIFT] * 41
    turned = (60 + 20) * RULE.bucket_s
    status = detector.status(120 * RULE.bucket_s)
    assert status.state == DRIFT and status.since == turned
    assert (status.readings, status.flags) == (6000, 600)
    assert status.ratio == pytest.approx(10.0) and status.sustained_ratio == pytest.approx(10.0)
    assert status.p_value < RULE.check_alpha
    assert status.message.startswith("the flag rate has been 10.0x the promise (0.01 per reading) for 40 min")
    assert "a persistent fault or a changed machine; inspect before recalibrating" in status.message
    # later asks change nothing until another bucket ends
    assert detector.status(120 * RULE.bucket_s + 59).since == turned


def test_a_burst_of_flags_is_not_drift() -> None:
    """A fault episode: 14 minutes of every reading flagged in an hour at the promise. The whole window is
    far above the promise, but not without its busiest quarter."""
    detector = DriftDetector(TARGET, RULE)
    states = states_at_each_bucket_end(detector, 0, [1] * 30 + [PER_BUCKET] * 14)
    status = detector.status(44 * RULE.bucket_s)
    assert status.state == OK and status.ratio is not None and status.ratio > 20
    assert status.sustained_ratio == pytest.approx(1.0)
    assert "a burst of flags, not a sustained excess of 2x" in status.message
    states += states_at_each_bucket_end(detector, 44, [1] * 76)
    assert DRIFT not in states


def test_an_excess_below_the_minimum_ratio_is_not_drift_however_significant() -> None:
    detector = DriftDetector(TARGET, DriftSettings(HOUR, 60.0, alpha=0.01, min_ratio=2.0))
    for bucket in range(120):  # 1.5x on 100 000 readings a bucket: p ~ 0, but below 2x
        detector.observe(1500, 100_000, bucket * 60.0)
    status = detector.status(120 * 60.0)
    assert status.state == OK and status.p_value < 1e-100
    assert status.ratio == pytest.approx(1.5)
    assert "by less than the 2x that counts as drift" in status.message


def test_too_few_readings_is_insufficient_data_unless_the_flags_are_a_flood() -> None:
    empty = DriftDetector(TARGET, RULE).status(1000.0)
    assert empty.state == INSUFFICIENT_DATA and empty.readings == 0 and empty.as_of is None
    assert empty.ratio is None and empty.p_value == 1.0
    assert "needs at least 100 (one expected false alarm)" in empty.message

    few = DriftDetector(TARGET, RULE)
    for bucket in range(60):  # 2 readings a bucket: 90 outside the busiest quarter, fewer than 1 / 1 %
        few.observe(0, 2, bucket * 60.0)
    assert few.status(3600.0).state == INSUFFICIENT_DATA

    flood = DriftDetector(1e-3, RULE)  # 120 readings where 1000 are needed, but every one flagged
    for bucket in range(60):
        flood.observe(2, 2, bucket * 60.0)
    status = flood.status(3600.0)
    assert status.state == DRIFT and status.ratio == pytest.approx(1000.0)


def test_just_after_a_load_the_busiest_quarter_takes_everything() -> None:
    """Until the readings span more than a quarter of the window, a burst and a change look alike."""
    detector = DriftDetector(TARGET, RULE)
    states = states_at_each_bucket_end(detector, 0, [PER_BUCKET] * 20)
    assert states[:15] == [INSUFFICIENT_DATA] * 15 and states[15:] == [DRIFT] * 5


# --- the window and its ring ----------------------------------------------------------------------------


def test_the_window_forgets_old_buckets() -> None:
    detector = DriftDetector(TARGET, RULE)
    feed(detector, 0, [10] * 60)  # an hour at 10x
    assert detector.status(3600.0).state == DRIFT
    states = states_at_each_bucket_end(detector, 60, [1] * 60)  # then an hour at the promise
    assert states[-1] == OK and DRIFT in states
    status = detector.status(7200.0)
    assert (status.readings, status.flags) == (6000, 60)  # the excess hour is gone entirely
    assert status.since is None
    # a gap longer than the window: nothing left
    later = detector.status(7200.0 + 2 * HOUR)
    assert (later.readings, later.flags, later.state) == (0, 0, INSUFFICIENT_DATA)
    assert later.as_of == 7200.0 + 2 * HOUR


def test_a_gap_inside_the_window_keeps_what_is_still_in_it() -> None:
    detector = DriftDetector(TARGET, RULE)
    feed(detector, 0, [1] * 30)
    status = detector.status(30 * 60.0 + 20 * 60.0)  # 20 quiet minutes later
    assert (status.readings, status.flags) == (3000, 30)
    assert detector.status(30 * 60.0 + 45 * 60.0).readings == 15 * PER_BUCKET  # the first 15 have left


def test_the_state_does_not_depend_on_when_it_is_asked() -> None:
    pattern = [1] * 50 + [7] * 80 + [0] * 30
    asked_often, asked_once = DriftDetector(TARGET, RULE), DriftDetector(TARGET, RULE)
    states_at_each_bucket_end(asked_often, 0, pattern)
    feed(asked_once, 0, pattern)
    assert asked_often.status(160 * 60.0) == asked_once.status(160 * 60.0)


def test_the_ring_is_bounded_whatever_the_traffic() -> None:
    detector = DriftDetector(TARGET, RULE)
    assert detector.ring_buckets == RULE.window_buckets + 1
    feed(detector, 0, [3] * 10 * RULE.window_buckets)  # ten windows of traffic
    detector.observe(1, 1, 1e9)  # and a jump of decades
    assert detector.ring_buckets == RULE.window_buckets + 1
    assert len(detector._readings) == len(detector._flags) == RULE.window_buckets + 1


def test_a_clock_stepping_back_counts_in_the_open_bucket() -> None:
    detector = DriftDetector(TARGET, RULE)
    detector.observe(1, 100, 600.0)
    detector.observe(1, 100, 30.0)  # before the open bucket
    assert detector.status(660.0).readings == 200


# --- the settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"window_s": 1000.0, "bucket_s": 300.0}, "whole number of bucket_s"),
        ({"window_s": 60.0, "bucket_s": 300.0}, "whole number of bucket_s"),
        ({"bucket_s": 0.0}, "must be positive"),
        ({"window_s": -60.0}, "must be positive"),
        ({"window_s": math.inf}, "window_s must be a finite number"),
        ({"alpha": 0.0}, "alpha must lie strictly between 0 and 1"),
        ({"alpha": 1.0}, "alpha must lie strictly between 0 and 1"),
        ({"min_ratio": 0.5}, "min_ratio must be at least 1"),
        ({"min_ratio": math.nan}, "min_ratio must be a finite number"),
        ({"window_s": 86_400.0, "bucket_s": 1.0}, f"more than {MAX_WINDOW_BUCKETS}"),
    ],
)
def test_bad_settings_are_refused_saying_why(fields: dict[str, float], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        DriftSettings(**fields)


def test_bad_targets_and_counts_are_refused() -> None:
    for target in (0.0, 1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="target_fpr must lie strictly between 0 and 1"):
            DriftDetector(target)
    detector = DriftDetector(TARGET)
    with pytest.raises(ValueError, match="flags <= readings"):
        detector.observe(3, 2, 0.0)
    with pytest.raises(ValueError, match="flags <= readings"):
        detector.observe(-1, 2, 0.0)


def test_the_service_settings_carry_the_rule_and_refuse_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().drift_settings() == DriftSettings()
    monkeypatch.setenv("ANOMALY_CALIBRATION_WINDOW_S", "7200")
    monkeypatch.setenv("ANOMALY_CALIBRATION_BUCKET_S", "600")
    monkeypatch.setenv("ANOMALY_CALIBRATION_ALPHA", "0.05")
    monkeypatch.setenv("ANOMALY_CALIBRATION_MIN_RATIO", "3")
    assert Settings().drift_settings() == DriftSettings(7200.0, 600.0, 0.05, 3.0)
    monkeypatch.setenv("ANOMALY_CALIBRATION_BUCKET_S", "700")
    with pytest.raises(ValidationError, match=r"ANOMALY_CALIBRATION_\*: window_s \(7200\) must be a whole"):
        Settings()
    monkeypatch.setenv("ANOMALY_CALIBRATION_BUCKET_S", "600")
    monkeypatch.setenv("ANOMALY_CALIBRATION_ALPHA", "1.5")
    with pytest.raises(ValidationError, match="calibration_alpha"):
        Settings()


def test_the_api_schema_knows_every_state() -> None:
    from typing import get_args

    from factory_anomaly.app.serving.drift import STATES

    assert get_args(CalibrationDrift.model_fields["state"].annotation) == STATES


# --- for real: a uvicorn serving the test model ------------------------------------------------------------

WINDOW_S, BUCKET_S = 8.0, 0.5  # 16 buckets; the busiest 4 (2 s) are left out
TRAFFIC_S = 4.0


def samples(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("anomaly_calibration_drift", "anomaly_flag_rate_ratio")
        and sample.labels == {"model": MODEL_NAME}
    }


def drift_of(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/v1/model")
    assert answer.status_code == 200, answer.text
    drift: dict[str, Any] = answer.json()["calibration_drift"]
    return drift


def wait_for_the_open_bucket_to_close() -> None:
    time.sleep(BUCKET_S - time.time() % BUCKET_S + 0.05)


def test_flagged_readings_move_the_model_endpoint_and_the_metrics(
    store: Path, manifest: Manifest, readings: np.ndarray, tmp_path: Path
) -> None:
    """Single readings (micro-batched), JSON and binary batches, all counted once; explanations not; a
    reload starts afresh."""
    target = manifest.threshold.target_fpr
    env = server_env(
        store,
        ANOMALY_MICROBATCH_MAX_BATCH="4",
        ANOMALY_CALIBRATION_WINDOW_S=str(WINDOW_S),
        ANOMALY_CALIBRATION_BUCKET_S=str(BUCKET_S),
    )
    server = start_server(tmp_path / "server.log", env)
    try:
        with server.client(headers=AUTH) as client:
            before = drift_of(client)
            assert (before["state"], before["readings"], before["flags"]) == (INSUFFICIENT_DATA, 0, 0)
            assert before["window_s"] == WINDOW_S and before["since"] is None
            assert samples(client.get("/metrics").text) == {
                "anomaly_calibration_drift": 0.0,
                "anomaly_flag_rate_ratio": 0.0,
            }

            bad = anomalous(manifest)
            sent = flagged = 0
            started = time.monotonic()
            while time.monotonic() - started < TRAFFIC_S:
                answer = client.post("/v1/score", json={"values": bad.tolist()})
                assert answer.status_code == 200 and answer.json()["is_anomaly"] is True
                rows = np.vstack([readings[:3], np.repeat(bad[None, :], 3, axis=0)])
                answer = client.post("/v1/score/batch", json={"vectors": rows.tolist()})
                assert answer.status_code == 200
                flagged += sum(r["is_anomaly"] for r in answer.json()["results"])
                answer = client.post(
                    "/v1/score/batch",
                    content=np.ascontiguousarray(rows, dtype="<f4").tobytes(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert answer.status_code == 200
                flagged += sum(r["is_anomaly"] for r in answer.json()["results"])
                assert client.post("/v1/explain", json={"values": bad.tolist()}).status_code == 200
                sent += 1 + 2 * len(rows)
                flagged += 1
                time.sleep(0.02)
            wait_for_the_open_bucket_to_close()
            drift = drift_of(client)
            scraped = samples(client.get("/metrics").text)

        assert drift["state"] == DRIFT, drift
        assert (drift["readings"], drift["flags"]) == (sent, flagged)  # each once; explain not at all
        assert drift["expected_flags"] == pytest.approx(sent * target)
        assert drift["ratio"] == pytest.approx(flagged / (sent * target))
        assert drift["sustained_ratio"] > 2 and drift["p_value"] < 1e-10
        assert drift["since"] is not None and drift["since"] <= drift["as_of"]
        assert f"x the promise ({target:g} per reading) for " in drift["message"]
        assert "a persistent fault or a changed machine; inspect before recalibrating" in drift["message"]
        assert scraped["anomaly_calibration_drift"] == 1.0
        assert scraped["anomaly_flag_rate_ratio"] == pytest.approx(drift["ratio"], rel=1e-6)

        with server.client(headers=ADMIN) as admin:
            assert admin.post("/v1/admin/reload").status_code == 200
        with server.client(headers=AUTH) as client:
            fresh = drift_of(client)
            assert (fresh["state"], fresh["readings"], fresh["flags"]) == (INSUFFICIENT_DATA, 0, 0)
            assert samples(client.get("/metrics").text)["anomaly_calibration_drift"] == 0.0
    finally:
        stop_server(server)


def test_the_status_fits_the_api_schema() -> None:
    """Every field of the detector's status has its place in the answer, named alike."""
    api = set(CalibrationDrift.model_fields)
    status = set(DriftStatus.__dataclass_fields__) - {"target_fpr"}  # in /v1/model's threshold already
    assert api == status
