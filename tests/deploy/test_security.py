"""The images' security promises, checked without a Docker engine (docs/reliability.md "Security"): a
numeric non-root user, dependencies installed only from hash-pinned locks that cover pyproject.toml, and a
compose stack that runs our containers with a read-only root filesystem and a writable /tmp only.

What the service itself writes and where it connects is proven on the real process in
tests/app/test_security.py; that the install really is the lock, in test_serving_install.py."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import ROOT, Stage, load_yaml, stage_map

LOCKS = {
    "cpu": ROOT / "deploy" / "requirements-serving.lock",
    "gpu": ROOT / "deploy" / "requirements-serving-gpu.lock",
}
OUR_SERVICES = ("api", "api-gpu", "simulator")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (version, sha256 digests) of a `uv pip compile --generate-hashes` lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pin = _PIN.match(stripped)
        if pin:
            name = canonicalize_name(pin.group(1))
            entries[name] = (pin.group(2), [])
        else:
            assert name is not None and stripped.startswith("--hash=sha256:"), f"{path.name}: {line!r}"
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", stripped):
            entries[name][1].append(digest)
    return entries


def serving_requirements(variant: str) -> list[Requirement]:
    """pyproject.toml's base dependencies as deploy/install-serving.sh installs them for `variant`."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        specs = tomllib.load(f)["project"]["dependencies"]
    requirements = [Requirement(spec) for spec in specs]
    if variant == "gpu":
        for requirement in requirements:
            if requirement.name == "onnxruntime":
                requirement.name = "onnxruntime-gpu"
    return requirements


@pytest.mark.parametrize("variant", sorted(LOCKS))
def test_the_lock_pins_every_serving_dependency_with_hashes(variant: str) -> None:
    lock = parse_lock(LOCKS[variant])
    for requirement in serving_requirements(variant):
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{LOCKS[variant].name} lacks {requirement.name}: run `make lock`"
        version, _ = lock[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCKS[variant].name} pins {name}=={version}, outside pyproject.toml's {requirement}: "
            "run `make lock`"
        )
    for pinned, (version, digests) in lock.items():
        assert digests, f"{pinned}=={version} has no hash"
    training = {"torch", "onnx", "onnxscript", "scipy", "scikit-learn", "pandas", "pyarrow", "matplotlib"}
    assert not training & set(lock)
    assert ("onnxruntime-gpu" in lock, "onnxruntime" in lock) == (variant == "gpu", variant == "cpu")


def test_the_lock_parser_reads_pins_and_hashes(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header\nFoo_Bar==1.2 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
        + "\n    # via x\nbaz==3.0 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )  # fmt: skip
    assert parse_lock(lock) == {"foo-bar": ("1.2", ["a" * 64, "b" * 64]), "baz": ("3.0", ["c" * 64])}


def test_the_images_install_only_from_the_locks_with_hash_checking() -> None:
    """Every pip install of the images is install-serving.sh's `deps` step, in a stage that copied the
    variant's lock; the script installs the lock in hash-checking mode and nothing from an index after."""
    stages = stage_map()
    for stage in stages.values():
        for run in stage.all("RUN"):
            assert "pip install" not in run and "pip3 install" not in run, (stage.name, run)
    for name, variant in (("build", "cpu"), ("gpu-build", "gpu")):
        stage = stages[name]
        [deps] = [shlex.split(run) for run in stage.all("RUN") if "install-serving.sh deps" in run]
        assert deps[-1] == variant
        copied = " ".join(stage.all("COPY"))
        assert f"deploy/{LOCKS[variant].name}" in copied, (name, copied)
    script = (ROOT / "deploy" / "install-serving.sh").read_text()
    installs = [line.strip() for line in script.splitlines() if re.search(r"\binstall\b.* -r ", line)]
    assert installs == [
        'venv_pip "$prefix" install --quiet --disable-pip-version-check --require-hashes -r "$lock"',
        'venv_pip "$prefix" install --quiet --disable-pip-version-check --no-index -r '
        '"$prefix/requirements.txt"',
    ]
    assert 'venv_pip "$prefix" check' in script
    for variant, lock in LOCKS.items():
        assert f"deploy/{lock.name}" in script, variant


def test_the_images_run_as_a_numeric_non_root_user_without_writing_bytecode() -> None:
    """A numeric USER (Kubernetes' runAsNonRoot can verify only a number), created with that uid, in every
    image that runs our code; PYTHONDONTWRITEBYTECODE, so nothing tries to write next to the code."""
    stages = stage_map()

    def inherited(stage: Stage, instruction: str) -> list[str]:
        base = stages.get(stage.base)
        return (inherited(base, instruction) if base else []) + stage.all(instruction)

    for name in ("runtime", "gpu", "simulator"):
        users = inherited(stages[name], "USER")
        assert users and users[-1].isdigit() and int(users[-1]) > 0, (name, users)
        created = " ".join(inherited(stages[name], "RUN"))
        assert f"--uid {users[-1]}" in created, name
        assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(inherited(stages[name], "ENV")), name


def test_compose_runs_our_containers_read_only_with_a_writable_tmp() -> None:
    """docker-compose.yml as written (tests/deploy/test_containers.py resolves it with docker-compose)."""
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    for name in OUR_SERVICES:
        service = services[name]
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service  # the image's numeric user
        for volume in service.get("volumes", []):
            # models are mounted read-only too; the one writable mount is the alarm journal's volume
            assert volume.endswith(":ro") or volume.split(":")[1:] == ["/data"], (name, volume)
        environment = service.get("environment", {})
        assert "PROMETHEUS_MULTIPROC_DIR" not in environment  # would need a writable directory; refused


def test_no_image_or_service_sets_prometheus_multiprocess_mode() -> None:
    """prometheus_client writes files only in multiprocess mode, which the app refuses at startup
    (tests/app/test_metrics.py); nothing sets it."""
    for path in (ROOT / "Dockerfile", ROOT / "docker-compose.yml", ROOT / "deploy" / "install-serving.sh"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in path.read_text(), path.name
