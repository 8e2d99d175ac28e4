"""The Python client of the factory anomaly-detection service: `from factory_anomaly_client import
AnomalyClient`. Its own distribution (httpx, numpy, orjson), so a factory PC installs nothing of the
server."""

from factory_anomaly_client.client import (
    AnomalyClient,
    AsyncAnomalyClient,
    AuthenticationError,
    BadRequestError,
    BatchItem,
    BatchResult,
    ConnectionFailedError,
    ModelUnavailableError,
    ScoreResult,
    ServiceError,
)

__all__ = [
    "AnomalyClient",
    "AsyncAnomalyClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchResult",
    "ConnectionFailedError",
    "ModelUnavailableError",
    "ScoreResult",
    "ServiceError",
]
