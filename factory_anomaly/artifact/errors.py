"""The one exception of the artifact contract: a precise, stable reason a version cannot be used."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ArtifactCode(StrEnum):
    """Why a version cannot be used; the value is the wire string the API and the metrics report."""

    MANIFEST_MISSING = "manifest_missing"  # no manifest.json
    MANIFEST_INVALID = "manifest_invalid"  # not JSON, a field of the wrong type, missing or unknown
    FORMAT_VERSION = "format_version"  # a manifest format this code does not know
    INCONSISTENT = "inconsistent"  # fields that contradict each other
    FILE_MISSING = "file_missing"  # a listed file is not there
    CHECKSUM_MISMATCH = "checksum_mismatch"  # a file's bytes are not the ones training wrote
    CURRENT_MISSING = "current_missing"  # no CURRENT in the model directory
    CURRENT_INVALID = "current_invalid"  # CURRENT is not one valid version name
    VERSION_MISSING = "version_missing"  # CURRENT (or a reload) names a version that is not there
    VERSION_EXISTS = "version_exists"  # publishing over an existing version (never done)


class ArtifactError(Exception):
    """One precise reason an artifact cannot be used; `code` is stable (APIs and metrics use it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))  # survives pickling (worker processes)
