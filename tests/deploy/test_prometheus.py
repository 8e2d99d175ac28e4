"""deploy/prometheus: the config and rules pass promtool, every alert has unit tests that make it fire and
keep it quiet, and every metric the rules name is one the service exposes."""

from __future__ import annotations

import subprocess
from typing import Any

from factory_anomaly.app.observability.metrics import LATENCY_SLO_QUANTILE, LATENCY_SLO_SECONDS
from tests.deploy.conftest import (
    PROMETHEUS_DIR,
    ROOT,
    alert_rules,
    exposed_labels,
    load_yaml,
    metric_names,
    require_tool,
)

EXPECTED_ALERTS = {
    "AnomalyApiDown",
    "AnomalyApiNotReady",
    "AnomalyApiErrorRatioHigh",
    "AnomalyApiLatencyAboveSLO",
    "AnomalyRateAboveBaseline",
    "AnomalyInputDrift",
    "AnomalyModelReloadFailed",
    "AnomalyCalibrationDrift",
    "AnomalyAlarmUnacknowledged",
}


def promtool(*args: str) -> str:
    out = subprocess.run(
        [require_tool("promtool", "prometheus"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_promtool_accepts_the_config_and_the_rules_and_their_unit_tests_pass() -> None:
    assert "valid prometheus config" in promtool("check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_the_scrape_config_targets_the_api_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    [api] = [job for job in config["scrape_configs"] if job["job_name"] == "anomaly-api"]
    assert api["metrics_path"] == "/metrics"
    # every API container on the compose network, by its service name (docker-compose.yml)
    assert api["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "15s"}]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
        for check in case.get("promql_expr_test", []):
            fired |= {name for name in EXPECTED_ALERTS if f'alertname="{name}"' in check["expr"]}
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS  # each also has a moment (before its `for`, or a neighbour) it must not


def test_every_alert_says_what_and_how_bad() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_latency_alert_is_the_slo_of_app_metrics() -> None:
    [rule] = [rule for rule in alert_rules() if rule["alert"] == "AnomalyApiLatencyAboveSLO"]
    expr = " ".join(rule["expr"].split())
    assert expr.startswith(f"histogram_quantile({LATENCY_SLO_QUANTILE},")
    assert expr.endswith(f") > {LATENCY_SLO_SECONDS}")
    assert 'route="/v1/score"' in expr


def test_every_metric_the_rules_select_is_one_the_service_exposes() -> None:
    exposed = set(exposed_labels()) | {"up"}
    used: dict[str, Any] = {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}
    for alert, names in used.items():
        assert names, alert
        assert names <= exposed, (alert, names - exposed)


def test_the_docs_list_every_alert_and_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    metrics_doc = (ROOT / "docs" / "metrics.md").read_text()
    for alert in EXPECTED_ALERTS:
        assert f"`{alert}`" in readme, alert
    names = set(exposed_labels())
    # a histogram by its name, a counter by its `_total` sample, a gauge as it is
    histograms = {name.removesuffix("_bucket") for name in names if name.endswith("_bucket")}
    documented = histograms | {
        name
        for name in names
        if not name.endswith(("_bucket", "_count", "_sum")) and name.startswith("anomaly_")
    }
    assert len(documented) == 25
    for name in documented:
        assert f"`{name}`" in metrics_doc and f"`{name}`" in readme, name
