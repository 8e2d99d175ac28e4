# Two commands for a new user (README Quickstart): `make run` (arrives with the service) and `make test`.
# Every target sets up what it needs; the virtual environment is rebuilt when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch: exactly the local CPU wheel. Installed *before* the `train` extra, whose range it satisfies;
# any other spec would pull gigabytes of CUDA packages.
TORCH_PIN := torch==2.13.0
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: test lint pytest format clean synthetic-report

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app training

pytest: $(DEV_STAMP)
	$(VENV)/bin/pytest

test: lint pytest

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The issue-2 figures: AE vs PCA per fault kind on a fresh run of the default synthetic plant, training
# time and rows, realised vs target false-alarm rate. Writes runs/synthetic/{model,report.json}.
REPORT_DIR := runs/synthetic
synthetic-report: $(DEV_STAMP)
	$(PY) -m training synth --out $(REPORT_DIR)/train --rows 100000 --seed 1 --formats npz -q
	$(PY) -m training synth --out $(REPORT_DIR)/test --rows 20000 --seed 2 --formats parquet -q
	$(PY) -m training synth --out $(REPORT_DIR)/fresh --rows 100000 --seed 3 --anomaly-rate 0 --formats npz -q
	$(PY) -m training train --data $(REPORT_DIR)/train/readings.npz --out $(REPORT_DIR)/model --no-progress
	$(PY) -m training evaluate --model $(REPORT_DIR)/model --data $(REPORT_DIR)/test/readings.parquet \
		--labels $(REPORT_DIR)/test/labels.csv --fault-sensors $(REPORT_DIR)/test/fault_sensors.json \
		--out $(REPORT_DIR)/report.json
	$(PY) -m training evaluate --model $(REPORT_DIR)/model --data $(REPORT_DIR)/fresh/readings.npz \
		--out $(REPORT_DIR)/fresh_report.json
