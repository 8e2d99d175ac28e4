"""Owns the served model: loads a version, and swaps it in only once it is verified and warmed up.

  <MODEL_STORE>/<MODEL_NAME>/CURRENT      the version loaded at startup and by a reload without a version
  <MODEL_STORE>/<MODEL_NAME>/<version>/   any version can be named explicitly

The swap is one attribute assignment: a request takes a reference to the current `LoadedModel` when it
starts and finishes on it, whatever is swapped in meanwhile. Loads run one at a time (an asyncio lock),
their blocking work in a worker thread. A failed load leaves the served model as it was and is remembered
(`last_error`) for `/readyz`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import ErrorCode, InvalidInput, ModelUnavailable, ReloadFailed
from factory_anomaly.app.model import LoadedModel, load_model
from factory_anomaly.app.model.memory import release_freed_memory
from factory_anomaly.artifact import ArtifactCode, ArtifactError, iso_utc, resolve_current

log = logging.getLogger("app.registry")

_VERSION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class LoadFailure:
    """Why the last load failed: an ArtifactError code and message, what was asked for, and when."""

    code: str
    message: str
    requested: str | None  # the version named, or None for CURRENT
    at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class Swap:
    model: LoadedModel
    previous_version: str | None


class LoadObserver(Protocol):
    """Told of every load's outcome (`app.metrics.Metrics` is one); called on the event loop."""

    def model_loaded(self, model: LoadedModel) -> None: ...

    def model_load_failed(self, code: str) -> None: ...


class ModelRegistry:
    def __init__(self, settings: Settings, observer: LoadObserver | None = None) -> None:
        self._settings = settings
        self._observer = observer
        self._model: LoadedModel | None = None
        self._last_error: LoadFailure | None = None
        self._attempted = False
        self._lock = asyncio.Lock()

    @property
    def model(self) -> LoadedModel | None:
        """The model serving now (None before the first successful load)."""
        return self._model

    @property
    def last_error(self) -> LoadFailure | None:
        """The failure of the most recent load, None once a load succeeds."""
        return self._last_error

    def require(self) -> LoadedModel:
        """The model serving now, or 503 `model_unavailable` saying why there is none."""
        model = self._model
        if model is not None:
            return model
        if self._last_error is not None:
            reason = f"{self._last_error.code}: {self._last_error.message}"
        elif self._attempted:
            reason = "the model is still loading"
        else:
            reason = "no load has been attempted yet"
        raise ModelUnavailable(f"no model is loaded ({reason})")

    async def load(self, version: str | None = None) -> Swap:
        """Load `version` (None: the one CURRENT names), verify and warm it up, then swap it in.

        An invalid version name is 422 `invalid_version`; any load failure is `ReloadFailed` carrying the
        ArtifactError code, and the served model stays as it was.
        """
        if version is not None:
            check_version_name(version)
        async with self._lock:
            self._attempted = True
            try:
                model = await asyncio.to_thread(load_version, self._settings, version)
            except ArtifactError as exc:
                self._last_error = LoadFailure(exc.code, exc.message, version, iso_utc(datetime.now(UTC)))
                log.error(
                    "model load failed; %s",
                    "still serving " + self._model.version if self._model else "no model is serving",
                    extra={"code": exc.code, "reason": exc.message, "requested_version": version},
                )
                if self._observer is not None:
                    self._observer.model_load_failed(exc.code)
                raise ReloadFailed(self._failure_message(exc), code=exc.code) from exc
            previous, self._model = self._model, model
            self._last_error = None
            if self._observer is not None:
                self._observer.model_loaded(model)
        previous_version = previous.version if previous else None
        del previous  # the old sessions go now (in-flight requests may keep them a little longer)
        await asyncio.to_thread(release_freed_memory)
        log.info(
            "model loaded",
            extra={
                "model_name": model.manifest.name,
                "model_version": model.version,
                "previous_version": previous_version,
                "provider": model.provider,
                "explainer": model.has_explainer,
                "load_seconds": model.load_seconds,
                "path": str(model.path),
            },
        )
        return Swap(model, previous_version)

    def _failure_message(self, exc: ArtifactError) -> str:
        serving = f"still serving {self._model.version}" if self._model else "no model is serving"
        return f"{exc.message} ({serving})"


def check_version_name(version: str) -> None:
    """422 `invalid_version` for a name that cannot be a version directory (no path tricks)."""
    if not _VERSION_NAME.fullmatch(version) or ".." in version:
        raise InvalidInput(
            f"version {version[:140]!r} is not a version name (letters, digits, '.', '_', '-'; at most "
            "128 characters; not starting with '.' or '-')",
            code=ErrorCode.INVALID_VERSION,
        )


def load_version(settings: Settings, version: str | None) -> LoadedModel:
    """Verify, load and warm up `version` of the settings' model (None: the one CURRENT names); blocking.
    An `ArtifactError` says why it cannot be served."""
    model_dir = settings.model_dir
    if not model_dir.is_dir():
        raise ArtifactError(
            ArtifactCode.CURRENT_MISSING,
            f"the model directory {model_dir} does not exist (ANOMALY_MODEL_STORE="
            f"{settings.model_store}, ANOMALY_MODEL_NAME={settings.model_name}); "
            "publish a model there (`make model` builds the default one), then reload",
        )
    if version is None:
        path = resolve_current(model_dir)
    else:
        path = model_dir / version
        if not path.is_dir():
            raise ArtifactError(
                ArtifactCode.VERSION_MISSING, f"no version {version!r}: {path} is not a directory"
            )
    return load_model(path, settings)
