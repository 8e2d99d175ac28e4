"""Every Prometheus metric of the service, defined here and nowhere else, on a registry per app.

`create_app` builds one `Metrics` on its own `CollectorRegistry` (a fresh one unless it is given one), so
two apps in one process (the tests build dozens) never share or collide on a metric. `GET /metrics`
exposes that registry; `ServiceMiddleware` (pure ASGI) times every HTTP request; the scoring routes, the
model registry and the error handlers report through the `Metrics` methods.

Names carry their unit (`_seconds`, `_rows`, `_ratio`, `_total`). Labels are bounded: `route` is the
matched route *template* (`/v1/score`, never a raw path; anything unmatched is `UNMATCHED_ROUTE`),
`method` one of `HTTP_METHODS` (else `OTHER`), `status_class` `2xx`..`5xx`, `code` one of `ERROR_CODES`
(else `other`), `model` the served model's name (`ANOMALY_MODEL_NAME`), `operation` score | explain,
`outcome` success | failure. `anomaly_model_info` carries version, provider and n_sensors, and holds one
series at a time. Label sets are created at start, so a dashboard shows 0 rather than "no data" and
`increase()` sees the first event.

Process model: one uvicorn process per container, scaled by running more containers (Prometheus scrapes
each as its own `instance`). Not prometheus_client's multiprocess mode with `--workers N`, because (1) an
admin reload reaches only the worker that received it, so workers would serve different model versions
while one `/metrics` hides it; (2) multiprocess mode cannot report live gauges such as the model info,
threshold and in-flight requests correctly without per-metric aggregation modes, and custom collectors
(the bulk histograms below) are not supported at all; (3) one process already uses every core it is given:
onnxruntime releases the GIL and runs on `SCORING_THREADS` threads. `Metrics` refuses to start when
`PROMETHEUS_MULTIPROC_DIR` is set, instead of silently exposing one worker's share.

Readings, anomalies, score ratios and drift count the readings of `/v1/score` and `/v1/score/batch`.
`/v1/explain` is not counted there (it usually re-examines a reading already scored, and would count its
anomaly twice); its model time is `anomaly_inference_duration_seconds{operation="explain"}`. The same
readings and flags feed the serving model's calibration-drift detector (`serving.drift`, one per loaded
version), counted where the counters are, once per scoring run: `anomaly_flag_rate_ratio` and
`anomaly_calibration_drift` are read from it at each scrape, so they follow the window as it slides even
without traffic.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from factory_anomaly.alarms.lifecycle import Episode, Observed
from factory_anomaly.app.errors import ErrorCode
from factory_anomaly.app.serving.drift import DRIFT
from factory_anomaly.artifact import ArtifactCode

if TYPE_CHECKING:
    from starlette.types import Scope

    from factory_anomaly.app.model import Assessment, LoadedModel
    from factory_anomaly.app.serving.assets import AssetBook

NAMESPACE = "anomaly"

LATENCY_SLO_SECONDS = 0.025
"""The latency objective: 99 % of `POST /v1/score` requests answered within 25 ms, measured in the server
from the request's arrival to the last byte of the answer (one reading of 1000 sensors; well above the
benchmark's p99 in docs/benchmarks.md, so it leaves room for queueing under load). A histogram bucket
boundary sits exactly here, so "p99 above the SLO" is exact rather than interpolated: it is true iff more
than 1 % of requests fall above this bucket. `deploy/prometheus/alerts.yml` and the dashboard use the same
number."""
LATENCY_SLO_QUANTILE = 0.99

LATENCY_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015,
    LATENCY_SLO_SECONDS, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Sub-millisecond resolution for the small requests (/healthz, single readings), one bound at the SLO."""
INFERENCE_BUCKETS_SECONDS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""One onnxruntime run, from one reading to a full MAX_BATCH (docs/serving.md, "Figures")."""
BATCH_SIZE_BUCKETS_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Powers of two up to well past the default MAX_BATCH (1024)."""
QUEUE_WAIT_BUCKETS_SECONDS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
"""A micro-batched reading's wait from joining the queue to its batch's start: tens of µs when the service
keeps up, up to MICROBATCH_MAX_DELAY_US plus one run when it does not."""
AGREEMENTS = ("both", "serving_only", "shadow_only", "neither")
"""Which versions flagged a shadowed reading: the `agreement` label of `anomaly_shadow_readings_total`."""
SHADOW_DROPS = ("queue_full", "failed")
SHADOW_RATIO_BUCKETS = (0.5, 0.8, 0.9, 0.95, 0.99, 1.01, 1.05, 1.1, 1.25, 2.0)
"""shadow score / serving score: a retrained version scores most readings within a few per cent of the
serving one; the buckets are finest around 1."""

SCORE_RATIO_BUCKETS = (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0, 1000.0,
)  # fmt: skip
"""score / threshold: normal readings score about 1 (see README "Score and threshold") against thresholds
of a few units, so they sit well below 1.0; the bound at exactly 1.0 separates normal from anomalous."""
SCORE_RATIO_CAP = 1e6
"""Ratios above this, and non-finite scores (readings that overflow inside the graph), are recorded as this
value: they land in the +Inf bucket and keep `_sum` finite."""
DRIFT_BUCKETS_RATIO = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Share of a reading's sensors outside the training range. The bound at 0 counts readings entirely inside
it (exposed as le="0.0")."""

UNMATCHED_ROUTE = "<unmatched>"
OTHER_ASSET = "other"
"""The `asset` label of every asset beyond ANOMALY_MAX_ASSETS (docs/metrics.md: cardinality)."""
OPEN_STATES = ("open", "acknowledged", "closing")
"""The `route` label of a request that matched no route (a 404 or a slash redirect): raw paths never
become label values, so a scanner cannot create series."""
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "OTHER"
STATUS_CLASSES = ("2xx", "4xx", "5xx")
"""Pre-initialised per route; 1xx and 3xx appear only when they happen."""
OPERATIONS = ("score", "explain")
SCORING_ROUTES = ("/v1/score", "/v1/score/batch", "/v2/models/{model_name}/infer")
"""The `route` label values of `batch_size_rows`: the scoring routes, V2's infer with or without a version."""
OUTCOMES = ("success", "failure")
OTHER_CODE = "other"

ERROR_CODES: tuple[str, ...] = (*(code.value for code in ErrorCode), *(code.value for code in ArtifactCode))
"""Every `code` the service answers with (`app.errors.ErrorCode` and the artifact contract's `ArtifactCode`):
the `code` label values of `anomaly_requests_rejected_total`."""
_KNOWN_CODES = frozenset(ERROR_CODES)

ERROR_CODE_SCOPE_KEY = "app.error_code"
"""Where the error renderer leaves the code of an error answer in the ASGI scope, for the middleware."""


class MultiprocessModeRefused(RuntimeError):
    pass


class BulkHistogram(Collector):
    """A labelled histogram that records many observations in one call (one numpy pass per batch).

    Per-reading values of a large batch would cost one locked `Histogram.observe` call each on the
    inference thread (docs/serving.md, "Figures"); here they cost one `searchsorted` and one locked add.
    Exposed like any histogram: `<name>_bucket{le=...}` (cumulative, `le` inclusive), `<name>_sum`,
    `<name>_count`.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = np.array([*buckets, math.inf], dtype=np.float64)
        self._bound_list = self._bounds.tolist()  # for `observe_one`'s bisect
        self._le = [floatToGoString(b) for b in self._bounds]
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        registry.register(self)

    def labels(self, *label_values: str) -> None:
        """Create the series (at zero) if it does not exist yet."""
        if len(label_values) != len(self._labelnames):
            raise ValueError(f"{self.name} takes labels {self._labelnames}, got {label_values}")
        with self._lock:
            self._series.setdefault(label_values, (np.zeros(len(self._bounds), np.int64), [0.0]))

    def observe_many(self, label_values: tuple[str, ...], observed: np.ndarray) -> None:
        """Record each element of `observed` (finite floats) as one observation."""
        # side="left": the first bound >= value, i.e. Prometheus's inclusive `le`.
        index = np.searchsorted(self._bounds, observed, side="left")
        counts = np.bincount(index, minlength=len(self._bounds))
        total = float(np.sum(observed, dtype=np.float64))
        self.labels(*label_values)
        with self._lock:
            buckets, sum_cell = self._series[label_values]
            buckets += counts
            sum_cell[0] += total

    def observe_one(self, label_values: tuple[str, ...], value: float) -> None:
        """Record one finite float: `observe_many` of one element without numpy's per-call overhead (a
        single reading's request)."""
        index = bisect.bisect_left(self._bound_list, value)  # the first bound >= value, as above
        series = self._series.get(label_values)
        if series is None:
            self.labels(*label_values)
            series = self._series[label_values]
        with self._lock:
            series[0][index] += 1
            series[1][0] += value

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self._documentation, labels=self._labelnames)
        with self._lock:
            snapshot = [(key, np.cumsum(b).tolist(), s[0]) for key, (b, s) in self._series.items()]
        for key, cumulative, total in snapshot:
            family.add_metric(list(key), list(zip(self._le, cumulative, strict=True)), total)
        return [family]


class CalibrationCollector(Collector):
    """The serving model's calibration drift, read from its detector at each scrape (the window slides
    with time, traffic or not): `anomaly_flag_rate_ratio` (the window's realised flag rate / the promised
    `target_fpr`; 0 while it holds no readings) and `anomaly_calibration_drift` (1 while the state is
    `drift`, else 0). Both 0 before a model serves."""

    def __init__(self, model_name: str, registry: CollectorRegistry) -> None:
        self._model_name = model_name
        self.serving: LoadedModel | None = None  # set by Metrics.model_loaded
        registry.register(self)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                f"{NAMESPACE}_flag_rate_ratio",
                "The serving version's flag rate over the calibration-drift window divided by the "
                "false-alarm rate its threshold was calibrated for (target_fpr); 0 while the window holds no "
                "readings.",
                labels=("model",),
            ),
            GaugeMetricFamily(
                f"{NAMESPACE}_calibration_drift",
                "1 while the flag rate is significantly and materially above the calibrated target_fpr, "
                "sustained over the window (GET /v1/model's calibration_drift says more), else 0.",
                labels=("model",),
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        ratio_family, drift_family = self._families()
        model = self.serving
        ratio, drift = 0.0, 0.0
        if model is not None:
            status = model.calibration.status(time.time())
            ratio = status.ratio or 0.0
            drift = 1.0 if status.state == DRIFT else 0.0
        ratio_family.add_metric([self._model_name], ratio)
        drift_family.add_metric([self._model_name], drift)
        return [ratio_family, drift_family]


class OpenAlarmsCollector(Collector):
    """Read from the asset book at each scrape. `anomaly_alarms_open{asset, state, sensor}`: open episodes
    per asset, state (open, acknowledged, closing) and the sensor that led the episode when it opened
    (fixed for its life, so an alert on it does not flap); an asset with none has no series.
    `anomaly_asset_calibration_drift{asset}`: 1 while the asset's own flag rate has drifted above the
    promise (`serving.assets`), else 0; one series per asset with a detector."""

    def __init__(self, metrics: Metrics, registry: CollectorRegistry) -> None:
        self._metrics = metrics
        self.book: AssetBook | None = None  # set by the app's lifespan
        registry.register(self)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                f"{NAMESPACE}_alarms_open",
                "Open alarm episodes by asset, state (open, acknowledged, closing) and the sensor that led "
                "the episode when it opened.",
                labels=("asset", "state", "sensor"),
            ),
            GaugeMetricFamily(
                f"{NAMESPACE}_asset_calibration_drift",
                "1 while the asset's flag rate over the calibration-drift window is significantly and "
                "materially above the promise (GET /v1/assets says more), else 0.",
                labels=("asset",),
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        open_family, drift_family = self._families()
        counts: dict[tuple[str, str, str], int] = {}
        drifted: dict[str, float] = {}
        if self.book is not None:
            for view in self.book.assets():
                label = self._metrics.asset_label(view["asset"])
                if view["state"] in OPEN_STATES:
                    key = (label, view["state"], view["lead_sensor"] or "")
                    counts[key] = counts.get(key, 0) + 1
                drift = view["calibration_drift"]
                if drift is not None:
                    value = 1.0 if drift["state"] == DRIFT else 0.0
                    drifted[label] = max(drifted.get(label, 0.0), value)
        for (label, state, sensor), count in sorted(counts.items()):
            open_family.add_metric([label, state, sensor], count)
        for label, value in sorted(drifted.items()):
            drift_family.add_metric([label], value)
        return [open_family, drift_family]


class Metrics:
    """The service's metrics on one registry, and the few calls that record them.

    Thread-safe: the scoring routes record from the inference threads, the middleware from the event loop.
    """

    def __init__(self, registry: CollectorRegistry, model_name: str, max_assets: int = 100) -> None:
        if values.ValueClass is not values.MutexValue:
            raise MultiprocessModeRefused(
                "PROMETHEUS_MULTIPROC_DIR is set, but this service runs one process per container and "
                "does not support prometheus_client's multiprocess mode (see app/metrics.py); unset it "
                "and scale by running more containers"
            )
        disable_created_metrics()  # no `_created` series: they double the series count for nothing
        self.registry = registry
        self.model_name = model_name
        ns, reg = NAMESPACE, registry
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer, by route template, method and "
            "status class.",
            ("route", "method", "status_class"),
            namespace=ns,
            registry=reg,
            buckets=LATENCY_BUCKETS_SECONDS,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being handled now.", namespace=ns, registry=reg
        )
        self.rejected = Counter(
            "requests_rejected_total",
            "Requests answered with an error, by the error's stable code (4xx and 5xx).",
            ("code",),
            namespace=ns,
            registry=reg,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds",
            "One onnxruntime run: the scorer graph (score) or the explainer graph (explain).",
            ("model", "operation"),
            namespace=ns,
            registry=reg,
            buckets=INFERENCE_BUCKETS_SECONDS,
        )
        self.batch_size = Histogram(
            "batch_size_rows",
            "Readings per scoring request.",
            ("model", "route"),
            namespace=ns,
            registry=reg,
            buckets=BATCH_SIZE_BUCKETS_ROWS,
        )
        self.microbatch_rows = Histogram(
            "microbatch_size_rows",
            "Readings per micro-batched onnxruntime run of /v1/score (the realised batch size).",
            ("model",),
            namespace=ns,
            registry=reg,
            buckets=BATCH_SIZE_BUCKETS_ROWS,
        )
        self.microbatch_wait = Histogram(
            "microbatch_queue_wait_seconds",
            "Time a micro-batched reading waited from joining the queue to its batch's start.",
            ("model",),
            namespace=ns,
            registry=reg,
            buckets=QUEUE_WAIT_BUCKETS_SECONDS,
        )
        self.readings = Counter(
            "readings_scored_total",
            "Readings scored by /v1/score and /v1/score/batch.",
            ("model",),
            namespace=ns,
            registry=reg,
        )
        self.anomalies = Counter(
            "readings_anomalous_total",
            "Scored readings found anomalous (score > threshold, or a score that is not finite).",
            ("model",),
            namespace=ns,
            registry=reg,
        )
        self.score_ratio = BulkHistogram(
            f"{ns}_score_threshold_ratio",
            "Each scored reading's score divided by the model's threshold (> 1 is anomalous).",
            ("model",),
            SCORE_RATIO_BUCKETS,
            reg,
        )
        self.drift = BulkHistogram(
            f"{ns}_input_drift_ratio",
            "Share of each scored reading's sensors outside the training range [sensor_low, sensor_high].",
            ("model",),
            DRIFT_BUCKETS_RATIO,
            reg,
        )
        # alarm episodes per asset: `asset` is bounded by `max_assets` (the first seen keep their own name,
        # later ones share OTHER_ASSET); `sensor` by the model's sensors; `closed_by` by the lifecycle
        self.max_assets = max_assets
        self._asset_labels: set[str] = set()
        self._asset_lock = threading.Lock()
        self.asset_readings = Counter(
            "asset_readings_total",
            "Readings scored with an X-Asset, by asset.",
            ("asset",),
            namespace=ns,
            registry=reg,
        )
        self.episodes_opened = Counter(
            "alarm_episodes_opened_total",
            "Alarm episodes opened, by asset (a counter, so an episode shorter than a scrape still counts).",
            ("asset",),
            namespace=ns,
            registry=reg,
        )
        self.episodes_closed = Counter(
            "alarm_episodes_closed_total",
            "Alarm episodes closed, by asset and by what closed them (quiet, shelved, evicted).",
            ("asset", "closed_by"),
            namespace=ns,
            registry=reg,
        )
        self.episode_top_sensor = Counter(
            "alarm_episode_top_sensor_total",
            "Alarm episodes by the sensor that led them when they opened.",
            ("sensor",),
            namespace=ns,
            registry=reg,
        )
        self.open_alarms = OpenAlarmsCollector(self, reg)
        self.model_info = Gauge(
            "model_info",
            "1 for the model version serving now (one series at a time).",
            ("model", "version", "provider", "n_sensors"),
            namespace=ns,
            registry=reg,
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 while a verified, warmed-up model serves (what /readyz says), else 0.",
            ("model",),
            namespace=ns,
            registry=reg,
        )
        self.threshold = Gauge(
            "model_threshold",
            "The serving model's anomaly threshold on the score.",
            ("model",),
            namespace=ns,
            registry=reg,
        )
        self.reloads = Counter(
            "model_reloads_total",
            "Model loads (the one at startup and each admin reload) by outcome.",
            ("model", "outcome"),
            namespace=ns,
            registry=reg,
        )
        # shadow scoring (app.serving.shadow): a candidate version's decisions on the serving readings
        self.shadow_info = Gauge(
            "shadow_model_info",
            "1 for the version loaded as the shadow (none while no shadow is loaded).",
            ("model", "version"),
            namespace=ns,
            registry=reg,
        )
        self.shadow_readings = Counter(
            "shadow_readings_total",
            "Readings the shadow version scored, by which of the two versions flagged them "
            "(both, serving_only, shadow_only, neither).",
            ("model", "agreement"),
            namespace=ns,
            registry=reg,
        )
        self.shadow_dropped = Counter(
            "shadow_dropped_readings_total",
            "Readings served but not shadowed: the shadow's queue was full, or its run failed.",
            ("model", "reason"),
            namespace=ns,
            registry=reg,
        )
        self.shadow_score_ratio = BulkHistogram(
            f"{ns}_shadow_score_ratio",
            "Each shadowed reading's shadow score divided by its serving score (1: the same).",
            ("model",),
            SHADOW_RATIO_BUCKETS,
            reg,
        )
        self.calibration = CalibrationCollector(model_name, reg)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)

        model = model_name
        self._model_labels = (model,)
        for operation in OPERATIONS:
            self.inference_duration.labels(model, operation)
        self._batch = {route: self.batch_size.labels(model, route) for route in SCORING_ROUTES}
        self._microbatch_rows = self.microbatch_rows.labels(model)
        self._microbatch_wait = self.microbatch_wait.labels(model)
        self._readings = self.readings.labels(model)
        self._anomalies = self.anomalies.labels(model)
        self._inference = {op: self.inference_duration.labels(model, op) for op in OPERATIONS}
        self.score_ratio.labels(model)
        self.drift.labels(model)
        self.model_ready.labels(model).set(0)
        self.threshold.labels(model)
        for outcome in OUTCOMES:
            self.reloads.labels(model, outcome)
        self._rejected = {code: self.rejected.labels(code) for code in (*ERROR_CODES, OTHER_CODE)}
        self._shadow = {agreement: self.shadow_readings.labels(model, agreement) for agreement in AGREEMENTS}
        self._shadow_dropped = {reason: self.shadow_dropped.labels(model, reason) for reason in SHADOW_DROPS}
        self.shadow_score_ratio.labels(model)
        self._http: dict[tuple[str, str, str], Any] = {}
        self._served = 0  # requests finished: lets housekeeping skip idle rounds

    # --- HTTP ------------------------------------------------------------------------------------------

    def init_routes(self, routes: Iterable[Any]) -> None:
        """Create the request-duration series of every documented (route template, method) at 2xx, 4xx
        and 5xx (the docs pages, `include_in_schema=False`, get theirs when first requested). `routes` are
        the routers' own routes: their `path_format` is the full template because each router carries
        its prefix and is included without another one, which is also what a request's `scope["route"]`
        reports."""
        for route in routes:
            template = getattr(route, "path_format", None)
            if not getattr(route, "include_in_schema", False):
                continue
            for method in getattr(route, "methods", None) or ():
                if template and method != "HEAD":
                    for status_class in STATUS_CLASSES:
                        self._http_child(template, method, status_class)

    def _http_child(self, route: str, method: str, status_class: str) -> Any:
        key = (route, method, status_class)
        child = self._http.get(key)
        if child is None:
            child = self._http[key] = self.http_duration.labels(route, method, status_class)
        return child

    def requests_served(self) -> int:
        """HTTP requests finished so far (a plain count: for the service's own housekeeping)."""
        return self._served

    def observe_request(self, scope: Scope, status: int | None, seconds: float) -> None:
        """One finished HTTP request; `status` None = it failed before an answer started (a 5xx)."""
        route = getattr(scope.get("route"), "path_format", None) or UNMATCHED_ROUTE
        method = scope["method"] if scope["method"] in HTTP_METHODS else OTHER_METHOD
        status_class = "5xx" if status is None else f"{status // 100}xx"
        self._http_child(route, method, status_class).observe(seconds)
        self._served += 1
        code = scope.get(ERROR_CODE_SCOPE_KEY)
        if code is not None:
            self._rejected.get(code, self._rejected[OTHER_CODE]).inc()

    # --- the model -------------------------------------------------------------------------------------

    def observe_scoring(self, route: str, model: LoadedModel, x: np.ndarray, assessment: Assessment) -> None:
        """The readings `x` float32 [N, n] of one scoring request and their assessment (any thread)."""
        self._batch[route].observe(len(x))
        self._observe_readings(model, x, assessment)

    def observe_microbatch(
        self, model: LoadedModel, x: np.ndarray, assessment: Assessment, waits: Sequence[float]
    ) -> None:
        """One micro-batched run of `/v1/score` readings `x` float32 [B, n], each its own request of one
        reading, which waited `waits` seconds in the queue (any thread)."""
        single = self._batch[SCORING_ROUTES[0]]
        for wait in waits:
            single.observe(1)
            self._microbatch_wait.observe(wait)
        self._microbatch_rows.observe(len(x))
        self._observe_readings(model, x, assessment)

    def _observe_readings(self, model: LoadedModel, x: np.ndarray, assessment: Assessment) -> None:
        n = len(x)
        self._inference["score"].observe(assessment.run_seconds)
        self._readings.inc(n)
        if n == 1:  # one reading: the same figures with Python scalars (numpy's per-call cost dominates)
            self._observe_one(model, x, assessment)
            return
        flagged = int(np.count_nonzero(assessment.is_anomaly))
        if flagged:
            self._anomalies.inc(flagged)
        model.calibration.observe(flagged, n, time.time())
        ratio = assessment.scores.astype(np.float64) / model.threshold
        ratio = np.where(np.isfinite(ratio), np.minimum(ratio, SCORE_RATIO_CAP), SCORE_RATIO_CAP)
        self.score_ratio.observe_many(self._model_labels, ratio)
        self.drift.observe_many(self._model_labels, model.out_of_range_share(x))

    def _observe_one(self, model: LoadedModel, x: np.ndarray, assessment: Assessment) -> None:
        flagged = 1 if assessment.is_anomaly[0] else 0
        if flagged:
            self._anomalies.inc()
        model.calibration.observe(flagged, 1, time.time())
        ratio = float(assessment.scores[0]) / model.threshold
        capped = min(ratio, SCORE_RATIO_CAP) if math.isfinite(ratio) else SCORE_RATIO_CAP
        self.score_ratio.observe_one(self._model_labels, capped)
        self.drift.observe_one(self._model_labels, float(model.out_of_range_share(x)[0]))

    def asset_label(self, asset: str) -> str:
        """The asset's label value: its name for the first `max_assets` assets seen, else OTHER_ASSET."""
        with self._asset_lock:
            if asset in self._asset_labels:
                return asset
            if len(self._asset_labels) < self.max_assets:
                self._asset_labels.add(asset)
                return asset
        return OTHER_ASSET

    def observe_assets(self, asset: str, observed: Sequence[Observed]) -> None:
        """One request's readings of an asset and the episodes they opened (closes: `episode_closed`)."""
        label = self.asset_label(asset)
        counted = sum(1 for seen in observed if not (seen.late or seen.repeated))
        if counted:
            self.asset_readings.labels(label).inc(counted)
        for seen in observed:
            if seen.opened is not None:
                self.episodes_opened.labels(label).inc()
                top = seen.opened.top_sensors(1)
                if top:
                    self.episode_top_sensor.labels(top[0]["name"]).inc()

    def episode_closed(self, episode: Episode) -> None:
        """An episode the asset book closed, whatever closed it (quiet readings, a shelve, eviction)."""
        self.episodes_closed.labels(self.asset_label(episode.asset), episode.closed_by or "quiet").inc()

    def observe_explain(self, seconds: float) -> None:
        self._inference["explain"].observe(seconds)

    def model_loaded(self, model: LoadedModel) -> None:
        """A load succeeded and `model` now serves (app.registry calls this)."""
        name = self.model_name
        self.model_info.clear()
        self.model_info.labels(name, model.version, model.provider, str(model.manifest.n_sensors)).set(1)
        self.threshold.labels(name).set(model.threshold)
        self.model_ready.labels(name).set(1)
        self.calibration.serving = model
        self.reloads.labels(name, "success").inc()

    # --- shadow scoring --------------------------------------------------------------------------------

    def shadow_loaded(self, version: str | None) -> None:
        """The shadow version now loaded (None: none)."""
        self.shadow_info.clear()
        if version is not None:
            self.shadow_info.labels(self.model_name, version).set(1)

    def observe_shadow(self, agreement: dict[str, int], ratios: np.ndarray) -> None:
        """One shadowed request: its readings counted by agreement, and their score ratios (any thread)."""
        for name, count in agreement.items():
            if count:
                self._shadow[name].inc(count)
        if ratios.size:
            self.shadow_score_ratio.observe_many(self._model_labels, ratios)

    def shadow_dropped_readings(self, reason: str, readings: int) -> None:
        self._shadow_dropped[reason].inc(readings)

    def model_load_failed(self, code: str) -> None:
        """A load failed; whatever served before still serves (app.registry calls this)."""
        self.reloads.labels(self.model_name, "failure").inc()
