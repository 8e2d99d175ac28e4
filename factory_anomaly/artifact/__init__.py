"""The model-artifact contract, defined once: training writes it, serving reads it.

Standard library and pydantic only, so the serving image (no torch, no onnx) and training import the same
definition. One module per job:

  layout    every file name of a version and of a model directory; graph roles; version ids
  manifest  the manifest schema (pydantic dataclasses), reading and writing manifest.json
  verify    checksums and consistency: is this version exactly what training wrote?
  store     CURRENT and atomic publishing of versions built in `.build-` directories
  errors    ArtifactError, whose `code` the API and the metrics report

The names below are the contract's public API; import them from here.
"""

from factory_anomaly.artifact.errors import ArtifactCode, ArtifactError
from factory_anomaly.artifact.layout import (
    BASELINE_FILE,
    BUILD_PREFIX,
    CARD_FILE,
    CHECKPOINT_FILE,
    CURRENT_FILE,
    EVALUATION_FILE,
    EXPLAINER,
    EXPLAINER_FILE,
    INPUT_DTYPE,
    MANIFEST_FILE,
    SCORER,
    SCORER_FILE,
    TRAINING_LOG_FILE,
    version_id,
)
from factory_anomaly.artifact.manifest import (
    FORMAT_VERSION,
    AlarmSpec,
    GraphSpec,
    JitterSection,
    Manifest,
    TensorSpec,
    ThresholdSpec,
    VelocitySection,
    iso_utc,
    read_manifest,
    write_manifest,
)
from factory_anomaly.artifact.store import (
    list_versions,
    new_build_dir,
    publish_version,
    read_current,
    resolve_current,
    write_current,
)
from factory_anomaly.artifact.verify import check_consistency, hash_files, sha256_file, verify_artifact

__all__ = [
    "BASELINE_FILE",
    "BUILD_PREFIX",
    "CARD_FILE",
    "CHECKPOINT_FILE",
    "CURRENT_FILE",
    "EVALUATION_FILE",
    "EXPLAINER",
    "EXPLAINER_FILE",
    "FORMAT_VERSION",
    "INPUT_DTYPE",
    "MANIFEST_FILE",
    "SCORER",
    "SCORER_FILE",
    "TRAINING_LOG_FILE",
    "AlarmSpec",
    "JitterSection",
    "VelocitySection",
    "ArtifactCode",
    "ArtifactError",
    "GraphSpec",
    "Manifest",
    "TensorSpec",
    "ThresholdSpec",
    "check_consistency",
    "hash_files",
    "iso_utc",
    "list_versions",
    "new_build_dir",
    "publish_version",
    "read_current",
    "read_manifest",
    "resolve_current",
    "sha256_file",
    "verify_artifact",
    "version_id",
    "write_current",
    "write_manifest",
]
