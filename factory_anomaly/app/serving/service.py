"""The one object the routes call: it runs a request's CPU work (parse, then score or explain) on the
inference pool or through the micro-batcher, observes the metrics once, and logs anomalous readings.

Framework-free: bodies come in as bytes, answers go out as `Readings` with their `Assessment` or
`Explanation`; the routes do the HTTP (auth, media type, body limits) and `wire.respond` writes the JSON.
Small bodies (INLINE_MAX_BODY_BYTES) are handled on the event loop: for them the hop to a pool thread
costs more than the work (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from factory_anomaly.alarms.lifecycle import Observed
from factory_anomaly.app.config import Settings
from factory_anomaly.app.model import Assessment, LoadedModel
from factory_anomaly.app.model.registry import ModelRegistry
from factory_anomaly.app.observability.logs import log_anomalies
from factory_anomaly.app.observability.metrics import SCORING_ROUTES, Metrics
from factory_anomaly.app.serving.assets import AssetBook, AssetReadings
from factory_anomaly.app.serving.batcher import MicroBatcher
from factory_anomaly.app.serving.explaining import Explanation, explain_reading
from factory_anomaly.app.serving.pool import InferencePool
from factory_anomaly.app.serving.shadow import ShadowScorer
from factory_anomaly.app.wire.assets import binary_ts, request_asset
from factory_anomaly.app.wire.parse import (
    Readings,
    parse_batch_binary,
    parse_batch_json,
    parse_explain_json,
    parse_single_json,
)

SCORE_ROUTE, BATCH_ROUTE, V2_INFER_ROUTE = SCORING_ROUTES  # the metrics' route labels


@dataclass(frozen=True)
class AssetHeaders:
    """What a scoring request's headers say of its readings' asset and time (`wire.assets`)."""

    asset: str | None = None  # X-Asset
    ts_start: str | None = None  # X-Ts-Start (binary batches)
    ts_step: str | None = None  # X-Ts-Step-S (binary batches)


NO_ASSET = AssetHeaders()


@dataclass(frozen=True)
class Scored:
    """A request's readings, their assessment and, when they carry an asset, what each did to its alarm
    (None: no asset, or a version without an episode rule)."""

    readings: Readings
    assessment: Assessment
    asset: str | None = None
    alarms: list[Observed] | None = None


@dataclass(frozen=True)
class ScoringService:
    settings: Settings
    registry: ModelRegistry
    pool: InferencePool
    metrics: Metrics
    batcher: MicroBatcher | None  # micro-batching of single readings, when MICROBATCH_MAX_BATCH > 1
    assets: AssetBook
    shadow: ShadowScorer  # a candidate version scoring the same readings off the hot path, when loaded

    def model(self) -> LoadedModel:
        """The model serving now (503 `model_unavailable` without one); a request keeps it to the end."""
        return self.registry.require()

    async def score_one(self, model: LoadedModel, body: bytes, headers: AssetHeaders = NO_ASSET) -> Scored:
        """One JSON reading, micro-batched with other waiting readings when that is on."""
        parse = partial(_with_asset, partial(parse_single_json, body, model.sensor_names), headers)
        inline = len(body) <= self.settings.inline_max_body_bytes
        if self.batcher is None:
            return await self._assess(model, parse, SCORE_ROUTE, inline)
        readings, asset = await self.pool.run(parse, inline=inline)
        assessment = await self.batcher.assess(model, readings.x)  # it observes each batched run
        self.shadow.offer(readings.x, assessment)
        log_anomalies(model, readings.ids, assessment)
        return self._track(model, readings, assessment, asset)

    async def score_batch(
        self, model: LoadedModel, body: bytes, binary: bool, headers: AssetHeaders = NO_ASSET
    ) -> Scored:
        """A batch of one asset's readings in time order (or of no asset): JSON `{"vectors", "ids",
        "asset", "ts"}` or N x n little-endian float32 (`binary`)."""
        parser = parse_batch_binary if binary else parse_batch_json
        parse = partial(
            _with_asset, partial(parser, body, model.sensor_names, self.settings.max_batch), headers
        )
        return await self._assess(model, parse, BATCH_ROUTE, len(body) <= self.settings.inline_max_body_bytes)

    async def score_parsed(
        self,
        model: LoadedModel,
        parse: Callable[[], Readings],
        body_bytes: int,
        headers: AssetHeaders,
        route: str,
    ) -> Scored:
        """Readings from a parser of the caller's (V2's infer, `wire.v2`), scored as a batch of one asset
        in time order; `body_bytes` decides whether the work runs on the event loop."""
        inline = body_bytes <= self.settings.inline_max_body_bytes
        return await self._assess(model, partial(_with_asset, parse, headers), route, inline)

    async def explain(self, model: LoadedModel, body: bytes) -> tuple[Readings, Explanation]:
        """One JSON reading with `top_k`, through the explainer graph (always on the pool)."""
        model.require_explainer()
        parse = partial(parse_explain_json, body, model.sensor_names)
        readings, explanation = await self.pool.run(partial(self._parse_and_explain, model, parse))
        self.metrics.observe_explain(explanation.assessment.run_seconds)
        log_anomalies(model, readings.ids, explanation.assessment)
        return readings, explanation

    async def _assess(
        self, model: LoadedModel, parse: Callable[[], tuple[Readings, str | None]], route: str, inline: bool
    ) -> Scored:
        scored = await self.pool.run(partial(self._parse_and_assess, model, parse, route), inline=inline)
        log_anomalies(model, scored.readings.ids, scored.assessment)
        return scored

    def _parse_and_assess(
        self, model: LoadedModel, parse: Callable[[], tuple[Readings, str | None]], route: str
    ) -> Scored:
        """The request's CPU work, on the pool (parsing a large JSON batch takes milliseconds; the metrics'
        per-reading drift and score ratios are numpy passes over the batch). Every check comes before the
        first reading moves an alarm: nothing is half-applied."""
        readings, asset = parse()
        assessment = model.assess(readings.x, self.settings.log_top_sensors)
        self.metrics.observe_scoring(route, model, readings.x, assessment)
        self.shadow.offer(readings.x, assessment)
        return self._track(model, readings, assessment, asset)

    def _track(
        self, model: LoadedModel, readings: Readings, assessment: Assessment, asset: str | None
    ) -> Scored:
        """Count the readings of `asset` into its alarm (when the version has an episode rule)."""
        rule = model.alarm_rule
        if asset is None or rule is None:
            return Scored(readings, assessment, asset)
        ts = readings.ts or [None] * len(readings.ids)
        batch = AssetReadings(asset, ts, readings.ids, assessment.scores, assessment.sensor_error,
                              model.sensor_names, readings.x, assessment.is_anomaly)  # fmt: skip
        observed = self.assets.observe(batch, rule, stuck=model.stuck_limits, calibration=model.calibration,
                                       jitter=model.jitter, velocity=model.velocity,
                                       training_range=model.training_range)  # fmt: skip
        self.metrics.observe_assets(asset, observed)
        return Scored(readings, assessment, asset, observed)

    def _parse_and_explain(
        self, model: LoadedModel, parse: Callable[[], tuple[Readings, int]]
    ) -> tuple[Readings, Explanation]:
        readings, top_k = parse()
        return readings, explain_reading(model, readings.x, top_k, self.settings.log_top_sensors)


def _with_asset(parse: Callable[[], Readings], headers: AssetHeaders) -> tuple[Readings, str | None]:
    """Parse, then resolve the asset (header against body) and, for a binary batch, its timestamps."""
    readings = parse()
    asset = request_asset(headers.asset, readings.asset)
    if readings.ts is None and (headers.ts_start is not None or headers.ts_step is not None):
        readings = replace(readings, ts=binary_ts(headers.ts_start, headers.ts_step, len(readings.ids)))
    return readings, asset


def micro_batcher(settings: Settings, pool: InferencePool, metrics: Metrics) -> MicroBatcher | None:
    """The micro-batcher of `/v1/score` when MICROBATCH_MAX_BATCH > 1, else None (each request runs alone)."""
    if settings.microbatch_max_batch <= 1:
        return None
    return MicroBatcher(
        pool,
        max_batch=settings.microbatch_max_batch,
        max_delay_s=settings.microbatch_max_delay_us / 1e6,
        queue_size=settings.microbatch_queue_size,
        # with a delay, one collector (see serving.batcher); without, one per scoring thread
        workers=1 if settings.microbatch_max_delay_us > 0 else settings.scoring_threads,
        top_k=settings.log_top_sensors,
        observe=metrics.observe_microbatch,
        inline_single=settings.inline_max_body_bytes > 0,
    )
