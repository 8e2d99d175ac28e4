"""deploy/grafana: the provisioned datasource and the dashboard's structure (its queries are run against a
real Prometheus in test_observability.py): one datasource uid everywhere, every selector filtered by the
template variables, every metric one the service exposes, every topic of the issue on a panel."""

from __future__ import annotations

import json
import re
from typing import Any

from factory_anomaly.app.observability.metrics import LATENCY_SLO_SECONDS
from tests.deploy.conftest import DASHBOARD, GRAFANA_DIR, assert_laid_out, exposed_labels, load_yaml

SELECTOR = re.compile(r"\b((?:anomaly|process)_[a-z_]+)(\{[^}]*\})?")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def test_the_datasource_is_prometheus_with_the_uid_the_dashboard_uses() -> None:
    [source] = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert (source["type"], source["uid"], source["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    assert source["isDefault"] is True
    uids = {panel["datasource"]["uid"] for panel in dashboard()["panels"] if "datasource" in panel}
    uids |= {target["datasource"]["uid"] for _, target in targets()}
    uids |= {variable["datasource"]["uid"] for variable in dashboard()["templating"]["list"]}
    assert uids == {source["uid"]}


def test_the_dashboard_provider_reads_the_directory_compose_mounts() -> None:
    [provider] = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "anomaly.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_panels_are_laid_out_without_overlap_and_with_unique_ids() -> None:
    panels = dashboard()["panels"]
    assert_laid_out(panels)
    for panel in panels:
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(set(refs)) == len(refs), panel["title"]


def test_every_selector_is_filtered_by_the_template_variables() -> None:
    labels = exposed_labels()
    exprs = [target["expr"] for _, target in targets()]
    exprs += [a["expr"] for a in dashboard()["annotations"]["list"] if "expr" in a]
    for expr in exprs:
        selected = SELECTOR.findall(expr)
        assert selected, expr
        for name, matchers in selected:
            assert name in labels, f"{name} is not exposed by the service ({expr})"
            assert 'job="anomaly-api"' in matchers and 'instance=~"$instance"' in matchers, expr
            if "model" in labels[name]:
                assert 'model=~"$model"' in matchers, expr
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"instance", "model"}
    assert all(v["multi"] and v["includeAll"] for v in variables.values())
    assert "$instance" in variables["model"]["definition"]  # models of the chosen instances


def test_the_issue_s_panels_are_all_there() -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard()["panels"])
    for topic in (
        "traffic",
        "p50, p95, p99",
        "errors by code",
        "anomaly rate",
        "anomalies in range",
        "score / threshold",
        "model execution time",
        "batch size",
        "drift",
        "model version and provider",
        "reloads",
        "calibration drift",
    ):
        assert topic in titles, topic
    kinds = {panel["title"]: panel["type"] for panel in dashboard()["panels"]}
    assert kinds["Score / threshold"] == "heatmap"
    [latency] = [p for p in dashboard()["panels"] if p["title"].startswith("POST /v1/score latency")]
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p95", "p99"]
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == LATENCY_SLO_SECONDS
    assert dashboard()["uid"] == "anomaly-service"
