"""Structured logs: one JSON object per line on stderr.

Every line has `ts` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message` and `request_id` (null
outside a request); fields passed with `extra={...}` are added as they are, and a traceback as `exc`.
uvicorn's own loggers are routed through the same handler; its access log is replaced by the one line per
request that `app.middleware` writes (it knows the request id).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import orjson

from factory_anomaly.app.wire.numbers import finite_or_none

if TYPE_CHECKING:
    from factory_anomaly.app.model.loaded import Assessment, LoadedModel

anomaly_log = logging.getLogger("app.anomaly")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The current request's id; set by `app.observability.middleware.ServiceMiddleware`."""

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SKIPPED_FIELDS = frozenset({"color_message"})  # uvicorn's ANSI-coloured copy of the message
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """Written with orjson (a line costs a few µs, and every request logs one: docs/benchmarks.md); values
    it cannot write go as their str(), NaN and infinities as null."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # the date and time change once a second: format them once
            self._second_text = f"{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%S}"
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in _SKIPPED_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _ServiceHandler(logging.StreamHandler[TextIO]):
    """The handler this module installs (configuring again replaces it and nothing else). Without an
    explicit stream it writes to whatever `sys.stderr` is at the time, which test harnesses swap."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send the root logger's records to `stream` (stderr) as JSON lines, at `level`. Idempotent.

    Only the handler installed here is replaced, so test harnesses' capture handlers stay in place.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ServiceHandler):
            root.removeHandler(handler)
    handler = _ServiceHandler(stream)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()  # uvicorn's plain-text handlers
        logger.propagate = True
        logger.setLevel(level)
    # One access line per request comes from observability.middleware, with the request id; uvicorn's would
    # repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def log_anomalies(model: LoadedModel, ids: Sequence[str | None], assessment: Assessment) -> None:
    """One log line per anomalous reading (the request id comes from the logging context)."""
    if not assessment.is_anomaly.any():
        return
    for row in np.flatnonzero(assessment.is_anomaly).tolist():
        anomaly_log.warning(
            "anomalous reading",
            extra={
                "reading_id": ids[row],
                "row": row,
                "score": finite_or_none(float(assessment.scores[row])),
                "threshold": model.threshold,
                "model_version": model.version,
                "top_sensors": [
                    {"sensor": name, "sensor_error": finite_or_none(value)}
                    for name, value in assessment.top_sensors.get(row, [])
                ],
            },
        )
