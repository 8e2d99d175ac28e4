"""Helpers for the deployment tests: the files under deploy/ and the Debian tools that check them."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "anomaly-service.json"
OPERATOR_DASHBOARD = GRAFANA_DIR / "dashboards" / "operator-alarms.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"


def require_tool(binary: str, package: str) -> str:
    """The path of `binary`; a failure that says how to get it (`make deploy-tools` installs it)."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is missing: `make deploy-tools` installs Debian's {package} package")
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def assert_laid_out(panels: list[dict[str, Any]]) -> None:
    """A provisioned dashboard's panels: unique ids, within Grafana's 24 columns, none overlapping."""
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        cover = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cover & cells and grid["x"] + grid["w"] <= 24, panel["title"]
        cells |= cover


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of deploy/prometheus/alerts.yml, in file order."""
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


# --- the Dockerfile, read without a Docker engine ---------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for kind, args in self.instructions if kind == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"stage {self.name} has no {instruction}"
        return found[-1]


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages, in order (line continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        kind, rest = kind.upper(), " ".join(rest.split())
        if kind == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(name.strip(), base.strip()))
        elif kind == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((kind, rest))
    return args, stages


def stage_map() -> dict[str, Stage]:
    return {stage.name: stage for stage in dockerfile()[1]}


def exec_form(args: str) -> list[str]:
    value: list[str] = json.loads(args)
    return value


def healthcheck_command(stage: Stage) -> list[str]:
    _, _, command = stage.last("HEALTHCHECK").partition(" CMD ")
    return exec_form(command)


_METRIC = re.compile(r"\b(anomaly_[a-z_]+|up)\b")


def exposed_labels() -> dict[str, set[str]]:
    """Sample name -> its label names, as the service exposes them once a model serves (`_bucket`,
    `_count`, `_sum`, `_total` included): a fresh app's registry after a (stand-in) model was loaded, with
    an asset in alarm and a shadow version loaded."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from factory_anomaly.app.config import Settings
    from factory_anomaly.app.main import create_app
    from factory_anomaly.app.serving.drift import DriftDetector

    app = create_app(Settings(model_name="factory-ae", log_level="WARNING"))
    metrics = app.state.metrics
    stand_in = SimpleNamespace(version="v1", provider="CPUExecutionProvider", threshold=1.0)
    stand_in.manifest = SimpleNamespace(n_sensors=3)
    stand_in.calibration = DriftDetector(0.01)
    metrics.model_loaded(stand_in)
    # an asset with an open alarm episode, so the per-asset series exist too
    from factory_anomaly.alarms.rule import EpisodeRule
    from factory_anomaly.app.serving.assets import AssetBook, AssetReadings

    book = AssetBook(3600.0, 10)
    errors = np.ones((2, 3), np.float32)
    readings = AssetReadings("press-7", [1.0, 2.0], [None, None], np.full(2, 5.0, np.float32), errors,
                             ("a", "b", "c"))  # fmt: skip
    metrics.observe_assets("press-7", book.observe(readings, EpisodeRule(2, 2, 1.0, 2)))
    metrics.open_alarms.book = book
    metrics.shadow_loaded("v2")  # a shadow loaded, so its info series exists too
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (anomaly_* and up)."""
    return set(_METRIC.findall(expr))


_DOCUMENTED = re.compile(r"^\| `(anomaly_[a-z_]+)` \| \w+ \| ([^|]*) \|", re.MULTILINE)


def documented_metrics() -> dict[str, set[str]]:
    """docs/metrics.md's table of metrics: name -> its label names."""
    rows = _DOCUMENTED.findall(METRICS_DOC.read_text(encoding="utf-8"))
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}
