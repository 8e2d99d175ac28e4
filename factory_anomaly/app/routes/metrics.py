"""GET /metrics: the app's Prometheus registry in the text exposition format (see `app.metrics`).

Open like the health probes (Prometheus scrapes it); it tells nothing a request could not, beyond counts.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from factory_anomaly.app.routes.deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(metrics: MetricsDep) -> Response:
    # Rendering the whole registry takes milliseconds (docs/serving.md, "Figures"): off the event loop,
    # so a scrape does not delay requests.
    body = await asyncio.to_thread(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
