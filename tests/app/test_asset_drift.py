"""Each asset's own calibration drift: an asset whose flag rate rises far above the promise is reported
as drifted while the others stay ok, in `GET /v1/assets` and in `anomaly_asset_calibration_drift`."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.app.observability.metrics import Metrics
from factory_anomaly.app.serving.assets import ASSET_DRIFT_BUCKETS, AssetBook, AssetReadings
from factory_anomaly.app.serving.drift import DriftDetector, DriftSettings

RULE = EpisodeRule(k=3, n=10, level=10.0, close_after=10)
DAY = 86_400.0


def _hour(asset: str, start: float, flag_rate: float, rng: np.random.Generator) -> AssetReadings:
    """An hour of readings a minute, each flagged with probability `flag_rate` (scores under the level)."""
    ts = [start + 60.0 * i for i in range(60)]
    return AssetReadings(asset, ts, [None] * 60, np.ones(60, np.float32), None, ("s0",),
                         flags=rng.random(60) < flag_rate)  # fmt: skip


def _book_after_a_day(rates: dict[str, float]) -> tuple[AssetBook, DriftDetector, float]:
    rng = np.random.default_rng(0)
    fleet = DriftDetector(0.01, DriftSettings(window_s=DAY, bucket_s=300.0))
    book = AssetBook(30 * DAY, 100, clock=lambda: 30 * 3600.0)
    for hour in range(30):
        for asset, rate in rates.items():
            book.observe(_hour(asset, hour * 3600.0, rate, rng), RULE, now=hour * 3600.0, calibration=fleet)
    return book, fleet, 30 * 3600.0


def test_one_drifted_asset_among_quiet_ones_is_named() -> None:
    book, _, now = _book_after_a_day({"quiet-1": 0.01, "quiet-2": 0.005, "changed": 0.2})
    drift = {a["asset"]: a["calibration_drift"] for a in book.assets(now)}
    assert drift["changed"]["state"] == "drift" and drift["changed"]["sustained_ratio"] > 10
    assert drift["quiet-1"]["state"] == drift["quiet-2"]["state"] == "ok"
    assert drift["changed"]["readings"] == 24 * 60  # the window: a day of readings a minute


def test_an_asset_detector_is_small_and_follows_the_models() -> None:
    book, fleet, now = _book_after_a_day({"a": 0.01})
    ((_, own),) = book._drift.values()
    assert own.ring_buckets == ASSET_DRIFT_BUCKETS + 1 and own.target_fpr == fleet.target_fpr
    # a reload brings a new promise: the asset starts afresh under it
    reloaded = DriftDetector(0.001, DriftSettings(window_s=DAY, bucket_s=300.0))
    book.observe(_hour("a", now, 0.0, np.random.default_rng(1)), RULE, now=now, calibration=reloaded)
    (view,) = book.assets(now + 3600.0)
    assert view["calibration_drift"]["state"] == "insufficient_data"
    assert book._drift["a"][1].target_fpr == 0.001


def test_late_and_repeated_readings_are_not_counted() -> None:
    fleet = DriftDetector(0.01, DriftSettings(window_s=DAY, bucket_s=300.0))
    book = AssetBook(DAY, 10)
    first = AssetReadings("a", [100.0, 160.0], ["r1", "r2"], np.ones(2, np.float32), None, ("s0",),
                          flags=np.array([True, False]))  # fmt: skip
    book.observe(first, RULE, now=200.0, calibration=fleet)
    again = AssetReadings("a", [160.0, 50.0], ["r2", "r0"], np.ones(2, np.float32), None, ("s0",),
                          flags=np.array([True, True]))  # fmt: skip
    book.observe(again, RULE, now=200.0, calibration=fleet)  # a repeat and a late one
    (view,) = book.assets(2 * 3600.0)
    assert view["calibration_drift"]["readings"] == 2 and view["calibration_drift"]["flags"] == 1


def test_the_metric_names_the_drifted_asset() -> None:
    book, _, now = _book_after_a_day({"quiet": 0.01, "changed": 0.2})
    registry = CollectorRegistry()
    metrics = Metrics(registry, "factory-ae")
    metrics.open_alarms.book = book  # its clock: the end of the readings' thirtieth hour
    values = {
        s.labels["asset"]: s.value
        for family in registry.collect()
        if family.name == "anomaly_asset_calibration_drift"
        for s in family.samples
    }
    assert values == {"quiet": 0.0, "changed": 1.0}
