"""The model directory: versions built aside and published with one atomic rename, and `CURRENT`, the
plain file naming the served version, replaced atomically. A reader never sees half a version, and a
crash leaves the old or the new CURRENT, never a broken one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from factory_anomaly.artifact.errors import ArtifactCode, ArtifactError
from factory_anomaly.artifact.layout import BUILD_PREFIX, CURRENT_FILE, version_name_problem


def read_current(model_dir: Path) -> str:
    """The version id in `model_dir/CURRENT`: "current_missing" or "current_invalid".

    Surrounding whitespace and blank lines are tolerated (hand edits); anything else is refused.
    """
    path = Path(model_dir) / CURRENT_FILE
    if path.is_symlink():
        raise ArtifactError(ArtifactCode.CURRENT_INVALID, f"{path} is a symlink; it must be a plain file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(ArtifactCode.CURRENT_MISSING, f"no {CURRENT_FILE} in {model_dir}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(ArtifactCode.CURRENT_INVALID, f"{path} cannot be read as text: {exc}") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ArtifactError(ArtifactCode.CURRENT_INVALID, f"{path} is empty")
    if len(lines) > 1:
        raise ArtifactError(
            ArtifactCode.CURRENT_INVALID, f"{path} has {len(lines)} non-empty lines, expected one"
        )
    problem = version_name_problem(lines[0])
    if problem is not None:
        raise ArtifactError(ArtifactCode.CURRENT_INVALID, f"{path} holds {lines[0]!r}, which {problem}")
    return lines[0]


def resolve_current(model_dir: Path) -> Path:
    """The served version directory; "version_missing" if CURRENT names one that does not exist."""
    version = read_current(model_dir)
    path = Path(model_dir) / version
    if not path.is_dir():
        raise ArtifactError(
            ArtifactCode.VERSION_MISSING, f"{CURRENT_FILE} names {version!r} but {path} is not a directory"
        )
    return path


def _fsync_dir(directory: Path) -> None:
    """Make renames in `directory` durable; best effort where a directory cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_current(model_dir: Path, version: str) -> Path:
    """Atomically point `model_dir/CURRENT` at `version`; return CURRENT's path.

    Refuses a name a reader would refuse ("current_invalid") and a version that is not a directory
    ("version_missing"), so CURRENT never names a missing version; the old CURRENT is then untouched.
    Write a temp file, fsync, os.replace, fsync the directory: a crash leaves the old or the new CURRENT.
    """
    model_dir = Path(model_dir)
    problem = version_name_problem(version)
    if problem is not None:
        raise ArtifactError(
            ArtifactCode.CURRENT_INVALID, f"refusing to write {version!r} to {CURRENT_FILE}: it {problem}"
        )
    if not (model_dir / version).is_dir():
        raise ArtifactError(
            ArtifactCode.VERSION_MISSING,
            f"refusing to point {CURRENT_FILE} at {model_dir / version}: no such directory",
        )
    target = model_dir / CURRENT_FILE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{CURRENT_FILE}-", suffix=".tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(f"{version}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; the server may run as another user
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(model_dir)
    return target


def new_build_dir(model_dir: Path) -> Path:
    """A fresh `model_dir/.build-XXXX` to build a version in (same filesystem: publishing is a rename)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=model_dir))
    os.chmod(build_dir, 0o755)  # mkdtemp makes it 0700; the published version must be readable by the server
    return build_dir


def _fsync_tree(directory: Path) -> None:
    """Flush every file and directory under `directory`, so the rename that publishes it publishes data."""
    for root, _dirs, names in os.walk(directory):
        for name in names:
            with contextlib.suppress(OSError), open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def publish_version(build_dir: Path, model_dir: Path, version: str) -> Path:
    """Rename `build_dir` to `model_dir/version` in one step and return the new path; CURRENT is untouched.

    Never overwrites: an existing version is "version_exists". `build_dir` must be on the same filesystem
    (use `new_build_dir`). An invalid version name is a ValueError (a caller bug, not an artifact problem).
    """
    build_dir, model_dir = Path(build_dir), Path(model_dir)
    problem = version_name_problem(version)
    if problem is not None:
        raise ValueError(f"version {version!r} {problem}")
    target = model_dir / version
    if target.exists() or target.is_symlink():
        raise ArtifactError(
            ArtifactCode.VERSION_EXISTS, f"{target} already exists; versions are never overwritten"
        )
    _fsync_tree(build_dir)
    try:
        os.rename(build_dir, target)
    except OSError as exc:
        if target.exists():  # created between the check and the rename
            raise ArtifactError(
                ArtifactCode.VERSION_EXISTS, f"{target} already exists; versions are never overwritten"
            ) from exc
        raise
    _fsync_dir(model_dir)
    return target


def list_versions(model_dir: Path) -> list[str]:
    """Sorted version directory names (oldest first for `version_id` names); build and hidden dirs skipped."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in model_dir.iterdir()
        if entry.is_dir()
        and not entry.name.startswith(BUILD_PREFIX)
        and version_name_problem(entry.name) is None
    )
