"""Where things are: every file name of a version and of a model directory, defined once.

<store>/<name>/<version>/{model.onnx, explainer.onnx, manifest.json, model_card.md, *.png, ...}
<store>/<name>/CURRENT        one line: the served version id (a plain file, never a symlink)
<store>/<name>/.build-XXXX/   a version being built; readers ignore it
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# --- a version directory --------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"
SCORER_FILE = "model.onnx"  # raw readings -> score, sensor_error (the graph serving needs)
EXPLAINER_FILE = "explainer.onnx"  # raw readings -> attention, score, sensor_error (optional)
CARD_FILE = "model_card.md"  # for people; its plots are *.png beside it
CHECKPOINT_FILE = "model.pt"  # torch weights, so a version can be retrained from or explained later
BASELINE_FILE = "baseline_pca.npz"  # the PCA baseline the card compares against
TRAINING_LOG_FILE = "training_log.jsonl"  # one record per epoch
EVALUATION_FILE = "evaluation.json"  # the test-recording report, when training was given one

# --- a model directory ----------------------------------------------------------------------------------
CURRENT_FILE = "CURRENT"
BUILD_PREFIX = ".build-"

# --- graph roles in the manifest ------------------------------------------------------------------------
SCORER = "scorer"  # role name of the required graph
EXPLAINER = "explainer"  # role name of the optional attention explainer graph (`POST /v1/explain`)
INPUT_DTYPE = "float32"  # dtype of every graph's first input: raw readings, one column per sensor


def version_name_problem(version: str) -> str | None:
    """Why `version` cannot be a version directory name (what CURRENT may hold), or None."""
    if not version:
        return "is empty"
    if "/" in version or "\\" in version:
        return "contains a path separator"
    if ".." in version:
        return "contains '..'"
    if version.startswith("."):
        return "starts with '.' (hidden and build directories are never versions)"
    if any(c.isspace() for c in version):
        return "contains whitespace"
    if not version.isprintable():
        return "contains a control character"
    return None


def version_id(created_at: datetime, content_sha256: str) -> str:
    """Id such as "20261126T053541Z-1a2b3c4d": UTC time (ids sort by time) + 8 hex chars of a content hash.

    A naive datetime or a hash that is not hex (at least 8 characters) is a ValueError.
    """
    if created_at.utcoffset() is None:
        raise ValueError(f"a naive datetime has no time zone; pass an aware one (UTC), got {created_at!r}")
    if not re.fullmatch(r"[0-9a-fA-F]{8,}", content_sha256):
        raise ValueError(f"content_sha256 must be a hex digest, got {content_sha256!r}")
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{content_sha256[:8].lower()}"
