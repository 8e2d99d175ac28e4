# Two commands for a new user (README Quickstart): `make run` and `make test`.
# Every target sets up what it needs; the virtual environment is rebuilt when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch: exactly the local CPU wheel. Installed *before* the `train` extra, whose range it satisfies;
# any other spec would pull gigabytes of CUDA packages.
TORCH_PIN := torch==2.13.0
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run test lint pytest format clean synthetic-report model bench-onnx bench-latency deploy-tools promtool serving-install bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@

# `make run`: the service from its own virtual environment with the base dependencies only (no torch,
# no training extra), as the serving image has them; rebuilt from scratch when pyproject.toml changes.
# Serves model_store/factory-ae (ANOMALY_* variables override, see app/config.py); without a model it
# still starts and /readyz says why.
SERVE_VENV  := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

$(SERVE_STAMP): pyproject.toml
	rm -rf $(SERVE_VENV)
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet -e .
	touch $@

run: $(SERVE_STAMP)
	exec $(SERVE_VENV)/bin/python -m uvicorn app.main:app --host $(HOST) --port $(PORT)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app training

pytest: $(DEV_STAMP)
	$(VENV)/bin/pytest

test: lint promtool pytest

# Debian's `prometheus` package gives promtool and the prometheus binary that
# tests/deploy/test_observability.py starts; Debian's `docker-compose` validates docker-compose.yml.
# Installed when missing (CI runs as root on Debian). docker-compose is optional: without it the compose
# tests skip, saying so.
deploy-tools:
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v docker-compose >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; } || \
		echo "docker-compose could not be installed: the compose tests of tests/deploy/test_containers.py skip"

# The serving install outside Docker, with the Dockerfile's own steps (deploy/install-serving.sh): a fresh
# virtual environment with the base dependencies only (no torch, no training code), the app package and
# the default model. Serve it: cd $(SERVING_DIR) && ANOMALY_MODEL_STORE=model_store venv/bin/python -m
# uvicorn app.main:app. tests/deploy/test_serving_install.py runs this target.
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
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The shipped model on data it never saw: the labelled test run (AE vs PCA per fault kind) and 100 000
# fresh normal readings (realised vs target false-alarm rate). Writes runs/synthetic/*.json.
REPORT_DIR := runs/synthetic
synthetic-report: $(DEV_STAMP)
	$(PY) -m training synth --out $(REPORT_DIR)/test --rows 20000 --seed 2 --formats npz -q
	$(PY) -m training synth --out $(REPORT_DIR)/fresh --rows 100000 --seed 3 --anomaly-rate 0 --formats npz -q
	$(PY) -m training evaluate --model model_store/factory-ae --data $(REPORT_DIR)/test/readings.npz \
		--labels $(REPORT_DIR)/test/labels.csv --fault-sensors $(REPORT_DIR)/test/fault_sensors.json \
		--out $(REPORT_DIR)/report.json
	$(PY) -m training evaluate --model model_store/factory-ae --data $(REPORT_DIR)/fresh/readings.npz \
		--out $(REPORT_DIR)/fresh_report.json

# The shipped default model (README "Model"): the synthetic plant (plant seed 0, 1000 sensors), 100 000
# training readings (~28 h at 1 Hz, 10 % in fault episodes), the seed's architecture, seed 0; its card is
# evaluated on a separate 20 000-reading test run. Publishes model_store/factory-ae/<version> and moves
# CURRENT. Deterministic on one machine; torch's CPU kernels may differ in the last bits elsewhere.
MODEL_DATA := runs/default-model
model: $(DEV_STAMP)
	$(PY) -m training synth --out $(MODEL_DATA)/train --rows 100000 --seed 1 --formats npz -q
	$(PY) -m training synth --out $(MODEL_DATA)/test --rows 20000 --seed 2 --formats npz -q
	$(PY) -m training train --data $(MODEL_DATA)/train/readings.npz --out model_store/factory-ae --seed 0 \
		--test-data $(MODEL_DATA)/test/readings.npz --test-labels $(MODEL_DATA)/test/labels.csv \
		--test-fault-sensors $(MODEL_DATA)/test/fault_sensors.json --no-progress

# Offline vs at-load graph optimisation, fp16 and int8 variants of the shipped graph (run alone).
bench-onnx: $(DEV_STAMP)
	$(PY) -m bench.onnx_variants --out bench/results/onnx_variants.json

# The service end to end through app.client: spawn -> /readyz 200 (5 starts), then 1000 sequential
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

# Issue 7's harness (docs/benchmarks.md): the in-process onnxruntime ceiling, then wrk over loopback against
# the service (/v1/score, /v1/score/batch JSON and binary at 64 rows, /v1/explain), a typical FastAPI +
# pydantic + torch service on the same weights (bench/typical_service.py) and the HTTP floor (bench/floor.py)
# at 1, 8 and 32 connections; server on CPU 0, wrk on CPU 1. About 3 minutes; not part of `make test`
# (run alone: two cores). Installs Debian's wrk when missing.
bench: $(DEV_STAMP)
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	$(PY) -m bench.load --out bench/results/load.json
