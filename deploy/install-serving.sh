#!/bin/sh
# The serving install, step by step: what the Dockerfile runs inside the image and what
# `make serving-install` runs outside Docker, so the two cannot drift apart.
#
#   deploy/install-serving.sh deps  SRC PREFIX [cpu|gpu]   PREFIX/venv: the base dependencies of
#                                                          SRC/pyproject.toml only (no extras: no torch,
#                                                          no onnx); gpu swaps onnxruntime for onnxruntime-gpu.
#                                                          Exactly the versions and files of the variant's lock,
#                                                          SRC/deploy/requirements-serving[-gpu].lock
#                                                          (hash-checked; `make lock` regenerates it)
#   deploy/install-serving.sh requirements SRC [cpu|gpu]   print the base dependencies (what the lock pins)
#   deploy/install-serving.sh app   SRC PREFIX             PREFIX/factory_anomaly/{app,artifact,alarms,explain}:
#                                                          the serving package, the artifact contract, the
#                                                          episode rule and the sensor ordering (no `training`)
#   deploy/install-serving.sh model SRC STORE [NAME]       STORE/NAME/{CURRENT, <the version it names>}
#                                                          from SRC/model_store (NAME: factory-ae)
#   deploy/install-serving.sh all   SRC PREFIX [cpu|gpu]   the three, the model into PREFIX/model_store
#
# Then: cd PREFIX && ANOMALY_MODEL_STORE=model_store venv/bin/python -m uvicorn factory_anomaly.app.main:app
# One process: the service runs one uvicorn process per container (docs/metrics.md).
# PYTHON (default python3, >= 3.11) builds the virtual environment; pip's own settings (PIP_* variables,
# pip.conf) apply, so the Dockerfile sets PIP_NO_CACHE_DIR=1 and a local run keeps its cache.
set -eu

PYTHON=${PYTHON:-python3}

usage() {
    sed -n '2,20p' "$0" >&2
    exit 2
}

requirements() {
    src=$1 variant=${2:-cpu}
    case $variant in cpu | gpu) ;; *) usage ;; esac
    # The base dependencies, read from pyproject.toml (tomllib: Python >= 3.11).
    "$PYTHON" - "$src/pyproject.toml" "$variant" <<'EOF'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
for spec in dependencies:
    if sys.argv[2] == "gpu" and re.match(r"onnxruntime\b(?!-)", spec):
        spec = "onnxruntime-gpu" + spec[len("onnxruntime"):]
    print(spec)
EOF
}

lock_file() {
    case $2 in gpu) echo "$1/deploy/requirements-serving-gpu.lock" ;; *) echo "$1/deploy/requirements-serving.lock" ;; esac
}

deps() {
    src=$1 prefix=$2 variant=${3:-cpu}
    case $variant in cpu | gpu) ;; *) usage ;; esac
    lock=$(lock_file "$src" "$variant")
    "$PYTHON" -m venv "$prefix/venv"
    requirements "$src" "$variant" >"$prefix/requirements.txt"
    # The lock's exact versions, each file checked against its sha256 (the lock holds every dependency,
    # so hash-checking mode installs nothing it does not name); then, without an index, proof that they
    # satisfy pyproject.toml's ranges, and that they are consistent with each other.
    venv_pip "$prefix" install --quiet --disable-pip-version-check --require-hashes -r "$lock"
    venv_pip "$prefix" install --quiet --disable-pip-version-check --no-index -r "$prefix/requirements.txt"
    venv_pip "$prefix" check
}

venv_pip() {
    prefix=$1
    shift
    "$prefix/venv/bin/python" -m pip "$@"
}

app() {
    src=$1 prefix=$2
    package="$prefix/factory_anomaly"
    rm -rf "$package"
    mkdir -p "$package"
    cp "$src/factory_anomaly/__init__.py" "$package/"
    cp -R "$src/factory_anomaly/artifact" "$src/factory_anomaly/alarms" "$src/factory_anomaly/explain" \
        "$src/factory_anomaly/app" "$package/"
    find "$package" -name __pycache__ -type d -prune -exec rm -rf {} +
    rm -f "$package/app/ruff.toml" "$package/artifact/ruff.toml" "$package/alarms/ruff.toml" \
        "$package/explain/ruff.toml"
}

model() {
    src=$1 store=$2 name=${3:-factory-ae}
    from="$src/model_store/$name"
    version=$(tr -d '[:space:]' <"$from/CURRENT")
    [ -n "$version" ] && [ -d "$from/$version" ] || {
        echo "install-serving: $from/CURRENT names no version directory" >&2
        exit 1
    }
    mkdir -p "$store/$name"
    rm -rf "${store:?}/$name/$version"
    cp -R "$from/$version" "$store/$name/$version"
    cp "$from/CURRENT" "$store/$name/CURRENT"
}

[ $# -ge 2 ] || usage
step=$1
shift
[ "$step" = requirements ] || [ $# -ge 2 ] || usage
case $step in
requirements) requirements "$@" ;;
deps) deps "$@" ;;
app) app "$1" "$2" ;;
model) model "$@" ;;
all)
    deps "$@"
    app "$1" "$2"
    model "$1" "$2/model_store"
    ;;
*) usage ;;
esac
