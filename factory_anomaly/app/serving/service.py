"""The one object the routes call: it runs a request's CPU work (parse, then score or explain) on the
inference pool or through the micro-batcher, observes the metrics once, and logs anomalous readings.

Framework-free: bodies come in as bytes, answers go out as `Readings` with their `Assessment` or
`Explanation`; the routes do the HTTP (auth, media type, body limits) and `wire.respond` writes the JSON.
Small bodies (INLINE_MAX_BODY_BYTES) are handled on the event loop: for them the hop to a pool thread
costs more than the work (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from factory_anomaly.app.config import Settings
from factory_anomaly.app.model import Assessment, LoadedModel
from factory_anomaly.app.model.registry import ModelRegistry
from factory_anomaly.app.observability.logs import log_anomalies
from factory_anomaly.app.observability.metrics import SCORING_ROUTES, Metrics
from factory_anomaly.app.serving.batcher import MicroBatcher
from factory_anomaly.app.serving.explaining import Explanation, explain_reading
from factory_anomaly.app.serving.pool import InferencePool
from factory_anomaly.app.wire.parse import (
    Readings,
    parse_batch_binary,
    parse_batch_json,
    parse_explain_json,
    parse_single_json,
)

SCORE_ROUTE, BATCH_ROUTE = SCORING_ROUTES  # "/v1/score", "/v1/score/batch": the metrics' route labels


@dataclass(frozen=True)
class ScoringService:
    settings: Settings
    registry: ModelRegistry
    pool: InferencePool
    metrics: Metrics
    batcher: MicroBatcher | None  # micro-batching of single readings, when MICROBATCH_MAX_BATCH > 1

    def model(self) -> LoadedModel:
        """The model serving now (503 `model_unavailable` without one); a request keeps it to the end."""
        return self.registry.require()

    async def score_one(self, model: LoadedModel, body: bytes) -> tuple[Readings, Assessment]:
        """One JSON reading, micro-batched with other waiting readings when that is on."""
        parse = partial(parse_single_json, body, model.sensor_names)
        inline = len(body) <= self.settings.inline_max_body_bytes
        if self.batcher is None:
            return await self._assess(model, parse, SCORE_ROUTE, inline)
        readings = await self.pool.run(parse, inline=inline)
        assessment = await self.batcher.assess(model, readings.x)  # it observes each batched run
        log_anomalies(model, readings.ids, assessment)
        return readings, assessment

    async def score_batch(self, model: LoadedModel, body: bytes, binary: bool) -> tuple[Readings, Assessment]:
        """A batch: JSON `{"vectors", "ids"}` or N x n little-endian float32 (`binary`)."""
        parser = parse_batch_binary if binary else parse_batch_json
        parse = partial(parser, body, model.sensor_names, self.settings.max_batch)
        return await self._assess(model, parse, BATCH_ROUTE, len(body) <= self.settings.inline_max_body_bytes)

    async def explain(self, model: LoadedModel, body: bytes) -> tuple[Readings, Explanation]:
        """One JSON reading with `top_k`, through the explainer graph (always on the pool)."""
        model.require_explainer()
        parse = partial(parse_explain_json, body, model.sensor_names)
        readings, explanation = await self.pool.run(partial(self._parse_and_explain, model, parse))
        self.metrics.observe_explain(explanation.assessment.run_seconds)
        log_anomalies(model, readings.ids, explanation.assessment)
        return readings, explanation

    async def _assess(
        self, model: LoadedModel, parse: Callable[[], Readings], route: str, inline: bool
    ) -> tuple[Readings, Assessment]:
        readings, assessment = await self.pool.run(
            partial(self._parse_and_assess, model, parse, route), inline=inline
        )
        log_anomalies(model, readings.ids, assessment)
        return readings, assessment

    def _parse_and_assess(
        self, model: LoadedModel, parse: Callable[[], Readings], route: str
    ) -> tuple[Readings, Assessment]:
        """The request's CPU work, on the pool (parsing a large JSON batch takes milliseconds; the metrics'
        per-reading drift and score ratios are numpy passes over the batch)."""
        readings = parse()
        assessment = model.assess(readings.x, self.settings.log_top_sensors)
        self.metrics.observe_scoring(route, model, readings.x, assessment)
        return readings, assessment

    def _parse_and_explain(
        self, model: LoadedModel, parse: Callable[[], tuple[Readings, int]]
    ) -> tuple[Readings, Explanation]:
        readings, top_k = parse()
        return readings, explain_reading(model, readings.x, top_k, self.settings.log_top_sensors)


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
