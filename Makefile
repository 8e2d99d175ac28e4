# Two commands for a new user (README Quickstart): `make run` and `make test`.
# Every target sets up what it needs; the virtual environment is rebuilt when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch: exactly the local CPU wheel. Installed *before* the `train` extra, whose range it satisfies;
# any other spec would pull gigabytes of CUDA packages.
TORCH_PIN := torch==2.13.0
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run test lint pytest format clean synthetic-report model bench-onnx bench-latency bench-memory deploy-tools promtool serving-install bench \
	lock audit soak fuzz quality

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The client is its own distribution (client/), installed beside the project for the tests and the simulator.
$(DEV_STAMP): pyproject.toml client/pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[train,dev]' -e ./client
	touch $@

# `make run`: the service from its own virtual environment with the base dependencies only (no torch,
# no training extra), at the locked versions the serving image has; rebuilt from scratch when
# pyproject.toml or the lock changes.
# Serves model_store/factory-ae (ANOMALY_* variables override, see factory_anomaly/app/config.py); without a model it
# still starts and /readyz says why.
SERVE_VENV  := .venv-serve
SERVING_LOCK := deploy/requirements-serving.lock
SERVE_STAMP := $(SERVE_VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

$(SERVE_STAMP): pyproject.toml $(SERVING_LOCK)
	rm -rf $(SERVE_VENV)
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet --require-hashes -r $(SERVING_LOCK)
	$(SERVE_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(SERVE_VENV)/bin/python -m pip check
	touch $@

run: $(SERVE_STAMP)
	exec $(SERVE_VENV)/bin/python -m uvicorn factory_anomaly.app.main:app --host $(HOST) --port $(PORT)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy factory_anomaly client/factory_anomaly_client

pytest: $(DEV_STAMP)
	$(VENV)/bin/pytest

test: lint promtool pytest

# schemathesis against every endpoint from the app's own OpenAPI document (tests/app/test_fuzz.py): no 5xx,
# every answer documented. `make test` runs 100 examples per operation (~10 s); this runs FUZZ_EXAMPLES
# (~2 minutes for 2000 on two cores; docs/reliability.md).
FUZZ_EXAMPLES ?= 2000
fuzz: $(DEV_STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/app/test_fuzz.py -q --timeout 3600

# Debian's `prometheus` package gives promtool and the prometheus binary that
# tests/deploy/test_observability.py starts; Debian's `docker-compose` validates docker-compose.yml; `strace`
# watches the real server's writes and connections (tests/app/test_security.py); Debian's `nginx` runs in
# front of two service processes, unprivileged from a temporary prefix (tests/deploy/test_asset_routing.py);
# Debian's `wrk` runs the benchmarks' Lua script against a recording server (tests/bench/test_common.py);
# Debian's `graphviz` renders the model figures (tests/training/test_graph_figures.py, `make figures`).
# Installed when missing (CI runs as root on Debian). docker-compose is optional: without it the compose
# tests skip, saying so.
deploy-tools:
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v nginx >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; }
	@command -v strace >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace; } || \
		echo "strace could not be installed: tests/app/test_security.py's write and network check skips"
	@command -v docker-compose >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; } || \
		echo "docker-compose could not be installed: the compose tests of tests/deploy/test_containers.py skip"
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; } || \
		echo "wrk could not be installed: tests/bench/test_common.py's check of the wrk script skips"
	@command -v dot >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz; } || \
		echo "graphviz could not be installed: tests/training/test_graph_figures.py's rendering checks skip"

# The serving install outside Docker, with the Dockerfile's own steps (deploy/install-serving.sh): a fresh
# virtual environment with the base dependencies only (no torch, no training code), the app package and
# the default model. Serve it: cd $(SERVING_DIR) && ANOMALY_MODEL_STORE=model_store venv/bin/python -m
# uvicorn factory_anomaly.app.main:app. tests/deploy/test_serving_install.py runs this target.
SERVING_DIR ?= build/serving
serving-install:
	rm -rf $(SERVING_DIR)
	sh deploy/install-serving.sh all . $(SERVING_DIR) cpu
	@du -sh $(SERVING_DIR) $(SERVING_DIR)/venv $(SERVING_DIR)/model_store

# The Prometheus configuration, the alert rules and their unit tests (deploy/prometheus/).
PROM_DIR := deploy/prometheus
promtool: deploy-tools
	promtool check config $(PROM_DIR)/prometheus.yml
	promtool check rules $(PROM_DIR)/alerts.yml
	promtool test rules $(PROM_DIR)/alerts_test.yml

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(TOOLS_VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The shipped model on data it never saw: the labelled test run (AE vs PCA per fault kind) and 100 000
# fresh normal readings (realised vs target false-alarm rate). Writes runs/synthetic/*.json.
REPORT_DIR := runs/synthetic
synthetic-report: $(DEV_STAMP)
	$(PY) -m factory_anomaly.training synth --out $(REPORT_DIR)/test --rows 20000 --seed 2 --formats npz -q
	$(PY) -m factory_anomaly.training synth --out $(REPORT_DIR)/fresh --rows 100000 --seed 3 --anomaly-rate 0 --formats npz -q
	$(PY) -m factory_anomaly.training evaluate --model model_store/factory-ae --data $(REPORT_DIR)/test/readings.npz \
		--labels $(REPORT_DIR)/test/labels.csv --fault-sensors $(REPORT_DIR)/test/fault_sensors.json \
		--out $(REPORT_DIR)/report.json
	$(PY) -m factory_anomaly.training evaluate --model model_store/factory-ae --data $(REPORT_DIR)/fresh/readings.npz \
		--out $(REPORT_DIR)/fresh_report.json

# The shipped default model (README "Model"): the synthetic plant (plant seed 0, 1000 sensors), 100 000
# training readings (~28 h at 1 Hz, 10 % in fault episodes), the seed's architecture, seed 0; its card is
# evaluated on a separate 20 000-reading test run. Publishes model_store/factory-ae/<version> and moves
# CURRENT. Deterministic on one machine; torch's CPU kernels may differ in the last bits elsewhere.
MODEL_DATA := runs/default-model
model: $(DEV_STAMP)
	$(PY) -m factory_anomaly.training synth --out $(MODEL_DATA)/train --rows 100000 --seed 1 --formats npz -q
	$(PY) -m factory_anomaly.training synth --out $(MODEL_DATA)/test --rows 20000 --seed 2 --formats npz -q
	$(PY) -m factory_anomaly.training train --data $(MODEL_DATA)/train/readings.npz --out model_store/factory-ae --seed 0 \
		--test-data $(MODEL_DATA)/test/readings.npz --test-labels $(MODEL_DATA)/test/labels.csv \
		--test-fault-sensors $(MODEL_DATA)/test/fault_sensors.json --sensor-units $(MODEL_DATA)/train/sensors.json \
		--no-progress

# The seed's Figure 1 (the autoencoder) and Figure 2 (self-attention) drawn from the served version's ONNX
# graphs (model_store/factory-ae/CURRENT, read when it runs), every edge labelled with the shape ONNX infers:
# docs/figures/*.dot and *.svg, described in docs/figures.md. Rerun after `make model`. Installs Debian's
# graphviz when missing.
.PHONY: figures
figures: $(DEV_STAMP)
	@command -v dot >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz; }
	$(PY) -m factory_anomaly.training.graph_figures --model-dir model_store/factory-ae --out docs/figures

# Detection quality at the operating point (docs/quality.md): the default training command on the synthetic
# plant and on every set in ../shared/data (read in place), judged by its published graph and threshold,
# beside PCA, IsolationForest, kNN and max|z| through the same cross-fitted calibration; whether the
# calibration holds on unseen normal rows; the calibration-drift signal day by day on SMD. Writes
# bench/results/quality.json and the tables in docs/quality.md. Run alone (two cores); a smoke run of it
# on one small set is part of `make test` (tests/bench/test_quality.py).
QUALITY_ARGS ?=
quality: $(DEV_STAMP)
	$(PY) -m bench.quality --out bench/results/quality.json --doc docs/quality.md $(QUALITY_ARGS)

# Offline vs at-load graph optimisation, fp16 and int8 variants of the shipped graph (run alone).
bench-onnx: $(DEV_STAMP)
	$(PY) -m bench.onnx_variants --out bench/results/onnx_variants.json

# The service end to end through the client (factory_anomaly_client): spawn -> /readyz 200 (5 starts), then 1000 sequential
# /v1/score and 1000 binary /v1/score/batch (64 rows) calls, latency percentiles and server RSS; server
# pinned to CPU 0, client to CPU 1 (run alone: two cores).
bench-latency: $(DEV_STAMP)
	$(PY) -m bench.serve_latency --out bench/results/serve_latency.json

# Explaining one reading with the shipped model's attention explainer: the explainer's onnxruntime session
# at batch 1 (intra-op threads 1 and 2, 1000 runs), then 500 sequential POST /v1/explain to a real uvicorn
# (server pinned to CPU 0, client to CPU 1); p50/p99 ms. Exits 1 if the model has no explainer (run alone).
.PHONY: bench-explain
bench-explain: $(DEV_STAMP)
	$(PY) -m bench.explain_latency --out bench/results/explain_latency.json

# Peak memory of one server on the largest bodies it accepts (MAX_BODY_BYTES, MAX_BATCH, two at once): what
# a pod's memory limit must hold (deploy/k8s/deployment.yaml, docs/deploy.md). About 30 s.
bench-memory: $(DEV_STAMP)
	$(PY) -m bench.peak_memory --out bench/results/peak_memory.json

# Dynamic micro-batching of /v1/score off and on (ANOMALY_MICROBATCH_*) at 1, 8, 32 and 64 connections, with
# the realised batch size from the server's metrics (docs/benchmarks.md). About 2 minutes; run alone.
.PHONY: bench-microbatch
bench-microbatch: $(DEV_STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	$(PY) -m bench.microbatch --out bench/results/microbatch.json

# Issues 7 and 17's harness (docs/benchmarks.md): the in-process onnxruntime ceiling, then wrk over loopback
# against the service (/v1/score, /v1/score/batch JSON and binary at 64 rows, /v1/explain, the X-Asset
# path), the lean one-file app (bench/lean_service.py) and ours as a plant runs it (API keys, X-Asset),
# those three alternating --repeats times; then a typical FastAPI + pydantic + torch service on the same
# weights (bench/typical_service.py) and the HTTP floor (bench/floor.py). Server on CPU 0, wrk on CPU 1.
# About 8 minutes; not part of `make test` (run alone: two cores). ANOMALY_PROVIDER=cuda runs it on a GPU
# (docs/benchmarks.md, "GPU"). Installs Debian's wrk when missing.
bench: $(DEV_STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	$(PY) -m bench.load --out bench/results/load.json

# Where a request's time goes (issue 17 §3): py-spy samples the real server while wrk drives one route
# (PROFILE_ARGS, e.g. --route batch_binary or --plant); bench/results/profile-<route>[-plant].{json,svg,raw.txt}.
PROFILE_ARGS ?=
.PHONY: profile
profile: $(DEV_STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	$(PY) -m bench.profile $(PROFILE_ARGS)

# The serving image's dependency locks (docs/reliability.md, "Security"): the base dependencies of
# pyproject.toml resolved to exact versions with the sha256 of every file PyPI has for them, for the CPU
# image's Python (python:3.11 slim) and the GPU image's (Ubuntu 24.04: 3.12, onnxruntime-gpu). The
# Dockerfile, `make serving-install` and `make run` install exactly these (pip --require-hashes). Rerun
# after changing the dependencies, or to take upgrades; needs PyPI. uv and pip-audit live in their own
# virtual environment, pinned here.
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TOOLS := uv==0.13.9 pip-audit==2.10.1
LOCK_PLATFORM := x86_64-manylinux_2_28
LOCK_DIR := build/lock

$(TOOLS_STAMP): Makefile
	rm -rf $(TOOLS_VENV)
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet $(TOOLS)
	touch $@

lock: $(TOOLS_STAMP)
	mkdir -p $(LOCK_DIR)
	sh deploy/install-serving.sh requirements . cpu >$(LOCK_DIR)/serving.in
	sh deploy/install-serving.sh requirements . gpu >$(LOCK_DIR)/serving-gpu.in
	$(TOOLS_VENV)/bin/uv pip compile $(LOCK_DIR)/serving.in -o $(SERVING_LOCK) --generate-hashes \
		--python-version 3.11 --python-platform $(LOCK_PLATFORM) --custom-compile-command "make lock"
	$(TOOLS_VENV)/bin/uv pip compile $(LOCK_DIR)/serving-gpu.in -o deploy/requirements-serving-gpu.lock \
		--generate-hashes --python-version 3.12 --python-platform $(LOCK_PLATFORM) \
		--custom-compile-command "make lock"

# Known vulnerabilities in the locked serving dependencies (pip-audit against the PyPI advisory data;
# `AUDIT_SERVICE=osv` asks OSV instead). Needs the network; not part of `make test`. --strict: a package
# the service cannot look up fails the audit instead of being skipped.
AUDIT_SERVICE ?= pypi
audit: $(TOOLS_STAMP)
	$(TOOLS_VENV)/bin/pip-audit --strict --disable-pip --progress-spinner off -s $(AUDIT_SERVICE) \
		-r $(SERVING_LOCK)
	$(TOOLS_VENV)/bin/pip-audit --strict --disable-pip --progress-spinner off -s $(AUDIT_SERVICE) \
		-r deploy/requirements-serving-gpu.lock

# Mixed load against a real uvicorn for SOAK_MINUTES (bench/soak.py, docs/reliability.md "Soak"): single
# and batch scoring, invalid requests, explain, an admin reload every 30 s between two published copies of
# the shipped model; nothing lost, no 5xx, the server's counters equal the client's, bounded RSS. Writes
# bench/results/soak.json. Not part of `make test` (run alone: two cores).
SOAK_MINUTES ?= 10
soak: $(DEV_STAMP)
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES) --out bench/results/soak.json
