"""The service's settings: one validated class, read from `ANOMALY_*` environment variables.

Nothing else in the service reads `os.environ`. `get_settings()` is cached; tests build a `Settings(...)`
directly and pass it to `app.main.create_app`, or call `get_settings.cache_clear()`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from factory_anomaly.app.serving.drift import DriftSettings

MIB = 1 << 20
DRIFT_DEFAULTS = DriftSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ANOMALY_",
        case_sensitive=False,
        use_attribute_docstrings=True,  # the docstrings below become field descriptions
        extra="forbid",
        frozen=True,
        protected_namespaces=(),  # `model_store` / `model_name` are ours, not pydantic's
    )

    model_store: Path = Path("model_store")
    """Root of the model store: versions live in `<model_store>/<model_name>/<version>/`."""

    model_name: str = "factory-ae"
    """Which model of the store to serve; its `CURRENT` file names the version loaded at startup."""

    provider: Literal["auto", "cpu", "cuda"] = "auto"
    """onnxruntime execution provider. `auto`: CUDA when onnxruntime offers CUDAExecutionProvider, else
    CPU. `cuda` when CUDA is not available is a load error (`provider_unavailable`), never a silent CPU
    fallback. The provider actually used is logged and reported by `GET /v1/model`."""

    intra_op_threads: int = Field(default=1, ge=0)
    """onnxruntime threads inside one operator (0 = onnxruntime's default: one per core)."""

    inter_op_threads: int = Field(default=1, ge=0)
    """onnxruntime threads across independent operators (0 = onnxruntime's default)."""

    scoring_threads: int = Field(default=2, ge=1)
    """Worker threads that parse request bodies and run onnxruntime, so neither blocks the event loop;
    more concurrent requests queue for a free worker. Each inference uses `intra_op_threads`."""

    malloc_arenas: int = Field(default=1, ge=0)
    """glibc malloc arenas the process may use (0 = glibc's default: eight per core; an explicit
    MALLOC_ARENA_MAX in the environment wins over this). Each thread that allocates would get an arena of
    its own, and each keeps the pages its largest request freed, so every scoring thread added several MiB
    of RSS after batch traffic. The price, with `memory_trim_s`, is a few per cent of JSON batch throughput
    (docs/benchmarks.md, "Issue 17, third session")."""

    memory_trim_s: float = Field(default=2.0, ge=0)
    """Every this many seconds in which requests were served, freed heap pages go back to the OS (glibc's
    `malloc_trim`, in a worker thread): without it the heap stays at the size of the busiest batch
    traffic. 0 = never."""

    inline_max_body_bytes: int = Field(default=32 * 1024, ge=0)
    """Scoring requests (/v1/score, /v1/score/batch; explain always uses the workers: its attention costs
    more) whose body is at most this size are parsed and scored on the event loop instead of a worker
    thread: their work costs less than the hop to a thread and back and the contention it brings
    (measured in docs/benchmarks.md, "Small requests on the event loop"). 0 = always use the workers."""

    microbatch_max_batch: int = Field(default=0, ge=0)
    """Dynamic micro-batching of `/v1/score` (`app.batching`): most single readings coalesced into one
    onnxruntime run. 0 or 1 = off: each request runs on its own (docs/benchmarks.md has the measurements
    behind the default)."""

    microbatch_max_delay_us: int = Field(default=0, ge=0, le=1_000_000)
    """How long a batch waits for more readings after its first, in µs. 0 = it takes only the readings
    already waiting (no reading is ever held back to fill a batch)."""

    microbatch_queue_size: int = Field(default=512, ge=1)
    """Most single readings waiting for a batch; one more is refused at once with 503 `overloaded` and
    `Retry-After: 1`."""

    shadow_version: str | None = None
    """A second version of the model loaded at start beside the serving one: it scores the same readings
    off the hot path and reports how often its decisions would differ (`app.serving.shadow`,
    docs/serving.md "Shadow scoring"). Unset: none (the admin API loads one at any time)."""

    shadow_queue_rows: int = Field(default=4096, ge=1)
    """Most readings waiting for the shadow version; a request whose readings do not fit is not shadowed
    and counted as dropped (`anomaly_shadow_dropped_readings_total{reason="queue_full"}`), so a slow
    shadow never holds memory or time of the serving path."""

    max_batch: int = Field(default=1024, ge=1)
    """Most readings (rows) one request may carry; more is 413 `batch_too_large`."""

    max_body_bytes: int = Field(default=64 * MIB, ge=1)
    """Largest request body accepted, in bytes; more is 413 `body_too_large`, refused from
    `Content-Length` before reading, or as soon as a streamed body passes it. The default holds
    `max_batch` JSON rows of 1000 sensors with room to spare."""

    body_timeout_s: float = Field(default=30.0, gt=0)
    """Longest time one request body may take to arrive, in seconds, from the first read to the last byte;
    longer is 408 `body_timeout` and the connection is closed. uvicorn has no such limit: without it, a
    client that stalls mid-body (or sends less than its Content-Length) holds the request forever. The
    default carries MAX_BODY_BYTES at about 18 Mbit/s; a one-reading body needs milliseconds."""

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Comma-separated API keys for scoring and `/v1/model` (`Authorization: Bearer <key>` or
    `X-API-Key: <key>`). Unset or empty: those endpoints are open. `/healthz`, `/readyz` are always open."""

    admin_token: SecretStr | None = None
    """Bearer token for `/v1/admin/*`. Unset or empty: the admin endpoints answer 403 `admin_disabled`."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Level of the service's JSON log lines (stderr)."""

    access_log_sample: float = Field(default=0.01, ge=0.0, le=1.0)
    """Share of successful (2xx) requests that write an access line, evenly spread (0: none, 1: all).
    Every other answer (4xx, 5xx, a dropped connection) always writes one, and so does every anomalous
    reading (`app.anomaly`); the request metrics count every request. Default one in a hundred: a line
    for each of thousands of readings a second costs about a tenth of the throughput (docs/benchmarks.md)
    and tells ops nothing the metrics do not."""

    log_top_sensors: int = Field(default=5, ge=0)
    """How many sensors (largest `sensor_error` first) the log line of an anomalous reading names."""

    calibration_window_s: float = Field(default=DRIFT_DEFAULTS.window_s, gt=0)
    """Calibration drift (`serving.drift`, `GET /v1/model`'s `calibration_drift`): the trailing window, in
    seconds, over which the realised flag rate is compared with the model's promised `target_fpr`. A whole
    number of `calibration_bucket_s`. The default, a day, holds 14 expected false alarms at one reading a
    minute and a target of 1e-2, 8.6 at one a second and 1e-4; a slower plant or a smaller target needs
    longer (docs/serving.md, "Calibration drift")."""

    calibration_bucket_s: float = Field(default=DRIFT_DEFAULTS.bucket_s, gt=0)
    """Calibration drift: the bucket length in seconds; the state is evaluated at the end of each."""

    calibration_alpha: float = Field(default=DRIFT_DEFAULTS.alpha, gt=0, lt=1)
    """Calibration drift: the chance, per window length, that drift is reported while the flag rate keeps
    its promise (shared among the window's checks)."""

    calibration_min_ratio: float = Field(default=DRIFT_DEFAULTS.min_ratio, ge=1)
    """Calibration drift: the smallest realised / promised flag rate reported as drift, however
    significant a smaller excess is."""

    asset_ttl_s: float = Field(default=7 * 86_400.0, gt=0)
    """Alarm episodes (`serving.assets`): an asset with no reading for this long is forgotten (its open
    episode closes as "evicted"), so `GET /v1/assets` stays bounded."""

    alarm_db: Path | None = Path("alarms.sqlite3")
    """The alarm journal (`serving.journal`): an SQLite file holding episodes, acknowledgements and
    shelves across restarts; an empty value keeps them in memory only (lost at a restart)."""

    alarm_retention_days: float = Field(default=365.0, gt=0)
    """Alarm journal: closed episodes (with their acknowledgements) and ended shelves older than this many
    days are deleted, once an hour, so the file stays bounded."""

    journal_sync_s: float = Field(default=1.0, gt=0, le=60)
    """Alarm journal shared by several processes (docs/serving.md, "More than one process"): how often, in
    seconds, a process renews its hold on its assets, applies what the others changed (an acknowledgement
    or a shelve made through them, an asset taken over) and writes its assets' state for the others'
    listings. A process silent for 10 times this (at least 5 s) is taken for gone and its alarms adopted."""

    max_assets: int = Field(default=100, ge=1)
    """Metrics: assets with a series of their own; readings of the others count under `asset="other"`
    (the cardinality bound, docs/metrics.md)."""

    max_tracked_assets: int = Field(default=10_000, ge=1)
    """Alarm episodes: the most assets held at once; beyond it the longest-idle one is forgotten."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("admin_token", "alarm_db", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _drift_rule(self) -> Settings:
        try:
            self.drift_settings()
        except ValueError as exc:
            raise ValueError(f"ANOMALY_CALIBRATION_*: {exc}") from None
        return self

    def drift_settings(self) -> DriftSettings:
        """The calibration-drift rule's settings (ValueError when they do not fit together)."""
        return DriftSettings(
            window_s=self.calibration_window_s,
            bucket_s=self.calibration_bucket_s,
            alpha=self.calibration_alpha,
            min_ratio=self.calibration_min_ratio,
        )

    @property
    def model_dir(self) -> Path:
        """`<model_store>/<model_name>`: holds the versions and CURRENT."""
        return self.model_store / self.model_name


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
