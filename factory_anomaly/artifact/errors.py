"""The one exception of the artifact contract: a precise, stable reason a version cannot be used."""

from __future__ import annotations

from typing import Any


class ArtifactError(Exception):
    """One precise reason an artifact cannot be used; `code` is stable (APIs and metrics use it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))  # survives pickling (worker processes)
