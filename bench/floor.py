"""The HTTP floor: our own app (`app.main.create_app()`, same settings, lifespan, middleware and error
handlers) plus one route that does no work, so `bench.load` can tell the cost of HTTP + our middleware
from the cost of parsing and scoring.

`POST /noop` reads the request body (as the scoring routes do, so the floor includes receiving the same
bytes) and answers a constant JSON. It is added here, in `bench/`, rather than in `app/`: the production
app has no such route. The model still loads, so the floor's memory is comparable to the real service's.

    .venv/bin/python -m uvicorn bench.floor:app
"""

from __future__ import annotations

from fastapi import Request, Response

from factory_anomaly.app.main import create_app

NOOP_BODY = b'{"ok":true}'

app = create_app()


@app.post("/noop", include_in_schema=False)
async def noop(request: Request) -> Response:
    await request.body()
    return Response(NOOP_BODY, media_type="application/json")
