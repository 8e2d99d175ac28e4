"""The routes `ServiceMiddleware` dispatches without the router (`HotRoute`): the scoring and explain
endpoints, whose whole work per request is small enough that FastAPI's machinery around it counts, and
V2's infer of the served model (FastAPI's matching of its templated path over every route cost ~280 µs a
request: docs/benchmarks.md, "Issue 18").

Only an endpoint that takes the request alone qualifies: nothing FastAPI would resolve or validate for it
is skipped. The routes stay registered as usual (OpenAPI, and every method or path they do not match).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from fastapi.routing import APIRoute
from starlette.requests import Request

from factory_anomaly.app.observability.middleware import HotRoute
from factory_anomaly.app.routes.v2 import infer_served

HOT_PATHS = frozenset({"/v1/score", "/v1/score/batch", "/v1/explain"})
V2_INFER_TEMPLATE = "/v2/models/{model_name}/infer"


def hot_routes(routes: Iterable[object], model_name: str) -> dict[tuple[str, str], HotRoute]:
    """(method, path) -> HotRoute for each route of HOT_PATHS whose endpoint takes `request: Request`
    only, and V2's infer of the served model (`model_name`), whose path is then fixed; a route that does
    not qualify is left to the router (and said so by a test)."""
    table = {}
    for route in routes:
        if isinstance(route, APIRoute) and route.path == V2_INFER_TEMPLATE:  # metrics keep the template
            table[("POST", V2_INFER_TEMPLATE.format(model_name=model_name))] = HotRoute(route, infer_served)
            continue
        if not isinstance(route, APIRoute) or route.path not in HOT_PATHS or not _takes_request_only(route):
            continue
        for method in route.methods or ():
            table[(method, route.path)] = HotRoute(route, route.endpoint)
    return table


def _takes_request_only(route: APIRoute) -> bool:
    parameters = list(inspect.signature(route.endpoint).parameters.values())
    return (
        len(parameters) == 1
        and parameters[0].annotation in (Request, "Request")
        and not route.dependencies
        and inspect.iscoroutinefunction(route.endpoint)
    )
