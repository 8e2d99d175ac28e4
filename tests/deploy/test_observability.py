"""The test that makes the dashboard and the alerts trustworthy: the real service, a real Prometheus.

Two uvicorn processes serve the session's small trained model: `good` (the model loads) and `broken` (an
empty model store: not ready, scoring answers 503). A real Prometheus (Debian's package, a subprocess on
loopback, a temporary storage directory) scrapes both every second and evaluates deploy/prometheus/alerts.yml
every second. `good` also has its own version loaded as a shadow. Normal readings, anomalous readings
(every sensor far above its training range), a few bad requests, a failed reload and a few slow requests
go to `good`; scoring requests go to `broken`. Then every
PromQL expression of the dashboard (template variables substituted) and of the alert rules (as Prometheus
loaded them) is evaluated through Prometheus's HTTP API and must return data; each alert's expression
must select the instance that provoked it (so every alert is shown able to fire on real series), and the
reading and anomaly counters must equal what the API answered. `good` runs a calibration-drift window of
30 s in 10 s buckets (three buckets: too few for the busiest-quarter cut), so its anomalous readings put
it in drift within a bucket of the traffic, and the flag-rate gauge must equal anomalies / (readings x
target_fpr). Last, `broken` is stopped and `AnomalyApiDown` must select it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from factory_anomaly.artifact import Manifest
from tests.app.conftest import (
    ADMIN,
    AUTH,
    MODEL_NAME,
    LiveServer,
    free_port,
    server_env,
    start_server,
    stop_server,
)
from tests.deploy.conftest import DASHBOARD, PROMETHEUS_DIR, alert_rules, require_tool

SCRAPE_INTERVAL = "1s"
STARTUP_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 20.0
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "5m"}
"""What Grafana would put in for its built-in variables; `$instance` and `$model` are the good server's."""

N_SINGLE_NORMAL, N_SINGLE_ANOMALOUS = 100, 20
N_BATCH_NORMAL, N_BATCH_ANOMALOUS = 60, 10
N_SLOW = 6  # /v1/score requests whose body arrives in two parts 60 ms apart: above the 25 ms SLO
N_BROKEN = 20
N_EXPLAIN = 3
ALARM_ASSET = "line-3/press-7"  # the anomalous single readings are this machine's

EXPECTED_INSTANCE = {
    "AnomalyApiNotReady": "broken",
    "AnomalyApiErrorRatioHigh": "broken",
    "AnomalyApiLatencyAboveSLO": "good",
    "AnomalyRateAboveBaseline": "good",
    "AnomalyInputDrift": "good",
    "AnomalyModelReloadFailed": "good",
    "AnomalyCalibrationDrift": "good",
    "AnomalyAlarmUnacknowledged": "good",
    "AnomalyApiDown": "broken",  # checked last, once broken is stopped
}
DRIFT_WINDOW_S, DRIFT_BUCKET_S = 30, 10
"""`good`'s calibration-drift window: the traffic (a few seconds) closes within one bucket and stays in the
window for at least two more buckets, the time the tests take."""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def api(self, path: str, **params: str) -> Any:
        answer = self.client.get(f"/api/v1/{path}", params=params)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result as a vector (a scalar answer becomes one unlabelled sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, predicate: Any, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {expr} gave {result} after {SETTLE_TIMEOUT_S} s")
            time.sleep(0.2)


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def start_prometheus(directory: Path, targets: list[str]) -> Prometheus:
    binary = require_tool("prometheus", "prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [{"job_name": "anomaly-api", "static_configs": [{"targets": targets}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(directory / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(directory / 'prometheus.log').read_text()}")
        try:
            if prometheus.client.get("/-/ready").status_code == 200:
                return prometheus
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"prometheus not ready: {(directory / 'prometheus.log').read_text()}")
        time.sleep(0.1)


def stop_prometheus(prometheus: Prometheus) -> None:
    prometheus.client.close()
    prometheus.process.terminate()
    try:
        prometheus.process.wait(10)
    except subprocess.TimeoutExpired:
        prometheus.process.kill()
        prometheus.process.wait()


@dataclass
class Observed:
    prometheus: Prometheus
    good: LiveServer
    broken: LiveServer
    instances: dict[str, str]  # "good" / "broken" -> the Prometheus instance label
    scored: int = 0
    anomalous: int = 0
    anomalous_sent_flagged: int = 0


def instance_of(server: LiveServer) -> str:
    return server.url.removeprefix("http://")


def far_out_of_range(rows: np.ndarray, manifest: Manifest) -> np.ndarray:
    """`rows` moved far above the training range on every sensor: drift 1.0, far above the threshold."""
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    return (rows + 20 * (high - low) + 10).astype(np.float32)


def drive(observed: Observed, normal: np.ndarray, bad: np.ndarray) -> None:
    """The traffic; counts what the API says was scored and anomalous."""
    flags: list[bool] = []
    with observed.good.client(headers=AUTH) as client:
        for row in normal[:N_SINGLE_NORMAL]:
            answer = client.post("/v1/score", json={"values": row.tolist()})
            assert answer.status_code == 200, answer.text
            flags.append(answer.json()["is_anomaly"])
        for row in bad[:N_SINGLE_ANOMALOUS]:  # one machine's readings: its alarm episode opens
            answer = client.post("/v1/score", json={"values": row.tolist()}, headers={"X-Asset": ALARM_ASSET})
            assert answer.status_code == 200 and answer.json()["is_anomaly"] is True, answer.text
            flags.append(True)
        assert answer.json()["alarm"]["state"] == "open", answer.text
        batch = np.vstack(
            [normal[N_SINGLE_NORMAL : N_SINGLE_NORMAL + N_BATCH_NORMAL], bad[-N_BATCH_ANOMALOUS:]]
        )
        answer = client.post(
            "/v1/score/batch",
            content=np.ascontiguousarray(batch, dtype="<f4").tobytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert all(r["is_anomaly"] for r in results[-N_BATCH_ANOMALOUS:])
        flags += [r["is_anomaly"] for r in results]
        for row in (normal[0], bad[0], bad[1]):
            assert client.post("/v1/explain", json={"values": row.tolist(), "top_k": 3}).status_code == 200
        # bad requests: counted by code, never as readings
        assert (
            client.post("/v1/score", content=b"{", headers={"Content-Type": "application/json"}).status_code
            == 400
        )
        assert client.post("/v1/score", json={"values": [1.0, 2.0]}).status_code == 422
        assert (
            client.post("/v1/admin/reload", json={"version": "no-such-version"}, headers=ADMIN).status_code
            == 409
        )
    with observed.good.client() as client:
        assert client.post("/v1/score", json={"values": normal[0].tolist()}).status_code == 401
        body = json.dumps({"values": normal[1].tolist()}).encode()

        def slow_body() -> Iterator[bytes]:
            yield body[: len(body) // 2]
            time.sleep(0.06)
            yield body[len(body) // 2 :]

        for _ in range(N_SLOW):
            answer = client.post(
                "/v1/score", content=slow_body(), headers=AUTH | {"Content-Type": "application/json"}
            )
            assert answer.status_code == 200, answer.text
            flags.append(answer.json()["is_anomaly"])
    with observed.broken.client(headers=AUTH) as client:
        for row in normal[:N_BROKEN]:
            assert client.post("/v1/score", json={"values": row.tolist()}).status_code == 503
        assert client.get("/readyz").status_code == 503
    observed.scored = len(flags)
    observed.anomalous = sum(flags)
    observed.anomalous_sent_flagged = N_SINGLE_ANOMALOUS + N_BATCH_ANOMALOUS


@pytest.fixture(scope="module")
def observed(
    store: Path, manifest: Manifest, small_plant: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    directory = tmp_path_factory.mktemp("observability")
    # micro-batching on (off by default), so the dashboard's micro-batching panel has data to show
    good = start_server(
        directory / "good.log",
        server_env(
            store,
            ANOMALY_MICROBATCH_MAX_BATCH="8",
            ANOMALY_CALIBRATION_WINDOW_S=str(DRIFT_WINDOW_S),
            ANOMALY_CALIBRATION_BUCKET_S=str(DRIFT_BUCKET_S),
            ANOMALY_SHADOW_VERSION=manifest.version,  # the dashboard's shadow row has its readings to show
        ),
    )
    broken = None
    prometheus = None
    try:
        broken = start_server(
            directory / "broken.log", server_env(directory / "empty-store"), wait_ready=False
        )
        instances = {"good": instance_of(good), "broken": instance_of(broken)}
        prometheus = start_prometheus(directory, list(instances.values()))
        result = Observed(prometheus, good, broken, instances)
        # both targets scraped once before any traffic: every counter's first sample is its zero
        prometheus.wait_for('up{job="anomaly-api"} == 1', lambda r: len(r) == 2, "both targets up")
        normal = small_plant.simulate(
            N_SINGLE_NORMAL + N_BATCH_NORMAL, seed=21, anomaly_rate=0.0
        ).values.astype(np.float32)
        bad = far_out_of_range(normal[: N_SINGLE_ANOMALOUS + N_BATCH_ANOMALOUS], manifest)
        drive(result, normal, bad)
        good_label = f'instance="{instances["good"]}", model="{MODEL_NAME}"'
        prometheus.wait_for(
            f"anomaly_readings_scored_total{{{good_label}}}",
            lambda r: values(r) == [result.scored],
            "the last readings scraped",
        )
        prometheus.wait_for(  # the shadow runs behind the serving path: it has caught up
            f"sum(anomaly_shadow_readings_total{{{good_label}}})",
            lambda r: values(r) == [result.scored],
            "the shadow's readings scraped",
        )
        prometheus.wait_for(
            f'anomaly_requests_rejected_total{{instance="{instances["broken"]}", code="model_unavailable"}}',
            lambda r: values(r) == [N_BROKEN],
            "the broken instance's 503s scraped",
        )
        # every scored reading counted once by the drift detector, once the traffic's buckets closed
        expected_ratio = result.anomalous / (result.scored * manifest.threshold.target_fpr)
        prometheus.wait_for(
            f"anomaly_flag_rate_ratio{{{good_label}}}",
            lambda r: values(r) == [pytest.approx(expected_ratio)],
            "the traffic's drift buckets closed",
        )
        prometheus.wait_for(
            f"anomaly_calibration_drift{{{good_label}}} == 1", lambda r: len(r) == 1, "good in drift"
        )
        prometheus.wait_for(  # the rules have been evaluated on the final data
            'ALERTS{alertname="AnomalyModelReloadFailed", alertstate="firing"}',
            lambda r: len(r) >= 1,
            "the rules evaluated",
        )
        prometheus.wait_for(
            'ALERTS{alertname="AnomalyCalibrationDrift"}', lambda r: len(r) == 1, "the drift rule evaluated"
        )
        yield result
    finally:
        if prometheus is not None:
            stop_prometheus(prometheus)
        if broken is not None:
            stop_server(broken)
        stop_server(good)


# --- the dashboard ----------------------------------------------------------------------------------------


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, named by where it is: panel targets and annotations."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries[f"annotation {annotation['name']!r}"] = annotation["expr"]
    return queries


def substitute(expr: str, observed: Observed) -> str:
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    # the instance is a regex in the dashboard (=~); its dots match themselves too
    expr = expr.replace("$instance", observed.instances["good"]).replace("$model", MODEL_NAME)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_returns_data(observed: Observed) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 25
    empty, nan_only = [], []
    for where, expr in queries.items():
        result = observed.prometheus.query(substitute(expr, observed))
        if not result:
            empty.append(where)
        elif not any(math.isfinite(v) for v in values(result)):
            nan_only.append(where)
    assert not empty, f"no data: {empty}"
    assert not nan_only, f"only NaN: {nan_only}"


def test_the_template_variables_find_the_instance_and_the_model(observed: Observed) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v["definition"] for v in dashboard["templating"]["list"]}
    assert set(variables) == {"instance", "model"}
    found: dict[str, list[str]] = {}
    for name, definition in variables.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
        assert match, definition
        selector, label = substitute(match.group(1), observed), match.group(2)
        found[name] = observed.prometheus.api(f"label/{label}/values", **{"match[]": selector})
    assert set(found["instance"]) == set(observed.instances.values())
    assert found["model"] == [MODEL_NAME]


# --- the alerts --------------------------------------------------------------------------------------------


def loaded_alert_queries(observed: Observed) -> dict[str, str]:
    """The alerting rules as Prometheus loaded and evaluates them (every one healthy)."""
    groups = observed.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"] if rule["type"] == "alerting"]
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    return {rule["name"]: rule["query"] for rule in rules}


def test_every_alert_expression_returns_data_for_the_instance_that_provoked_it(observed: Observed) -> None:
    queries = loaded_alert_queries(observed)
    assert set(queries) == {rule["alert"] for rule in alert_rules()} == set(EXPECTED_INSTANCE)
    selected = {}
    for name, expr in queries.items():
        if name != "AnomalyApiDown":  # both targets are up until the last test
            selected[name] = {sample["metric"].get("instance") for sample in observed.prometheus.query(expr)}
    expected = {name: {observed.instances[who]} for name, who in EXPECTED_INSTANCE.items()}
    del expected["AnomalyApiDown"]
    # an alarm is the machine's, not the process's: its alert carries the asset and no instance, so it
    # keeps its `for` when another process takes the machine over (deploy/prometheus/alerts_test.yml)
    expected["AnomalyAlarmUnacknowledged"] = {None}
    alarm = observed.prometheus.query(queries["AnomalyAlarmUnacknowledged"])
    assert {sample["metric"]["asset"] for sample in alarm} == {ALARM_ASSET}
    assert selected == expected


def active_alerts(observed: Observed) -> dict[str, str]:
    return {
        alert["labels"]["alertname"]: alert["state"] for alert in observed.prometheus.api("alerts")["alerts"]
    }


def test_prometheus_evaluates_every_alert_but_down_as_pending_or_firing(observed: Observed) -> None:
    """Prometheus's own rule evaluation (every second) agrees: each alert is on its way (`for` is minutes)."""
    wanted = set(EXPECTED_INSTANCE) - {"AnomalyApiDown"}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while set(active := active_alerts(observed)) != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(active) == wanted
    assert active["AnomalyModelReloadFailed"] == "firing"  # no `for`
    assert set(active.values()) <= {"pending", "firing"}


# --- the counts ---------------------------------------------------------------------------------------------


def test_the_counters_equal_what_was_sent(observed: Observed) -> None:
    good = f'instance="{observed.instances["good"]}", model="{MODEL_NAME}"'
    query = observed.prometheus.query

    def one(expr: str) -> float:
        [v] = values(query(expr))
        return v

    assert (
        observed.scored == N_SINGLE_NORMAL + N_SINGLE_ANOMALOUS + N_BATCH_NORMAL + N_BATCH_ANOMALOUS + N_SLOW
    )
    assert observed.anomalous >= observed.anomalous_sent_flagged
    assert one(f"anomaly_readings_scored_total{{{good}}}") == observed.scored
    assert one(f"anomaly_readings_anomalous_total{{{good}}}") == observed.anomalous
    assert one(f"anomaly_score_threshold_ratio_count{{{good}}}") == observed.scored
    above = observed.scored - one(f'anomaly_score_threshold_ratio_bucket{{{good}, le="1.0"}}')
    assert above == observed.anomalous
    assert one(f'anomaly_input_drift_ratio_bucket{{{good}, le="+Inf"}}') - one(
        f'anomaly_input_drift_ratio_bucket{{{good}, le="0.5"}}'
    ) == pytest.approx(observed.anomalous_sent_flagged)  # exactly the readings moved out of range
    assert (
        one(f'anomaly_batch_size_rows_sum{{{good}, route="/v1/score/batch"}}')
        == N_BATCH_NORMAL + N_BATCH_ANOMALOUS
    )
    assert one(f'anomaly_inference_duration_seconds_count{{{good}, operation="explain"}}') == N_EXPLAIN
    # the shadow (the serving version itself) saw every scored reading, and the serving flags among them
    assert one(f"sum(anomaly_shadow_readings_total{{{good}}})") == observed.scored
    serving_flags = f'sum(anomaly_shadow_readings_total{{{good}, agreement=~"both|serving_only"}})'
    assert one(serving_flags) == observed.anomalous
    assert one(f"sum(anomaly_shadow_dropped_readings_total{{{good}}})") == 0
    assert one(f'anomaly_model_reloads_total{{{good}, outcome="failure"}}') == 1
    good_http = f'instance="{observed.instances["good"]}"'
    assert (
        one(f'sum(anomaly_requests_rejected_total{{{good_http}, code=~"malformed_json|wrong_length"}})') == 2
    )
    assert one(f'anomaly_requests_rejected_total{{{good_http}, code="missing_api_key"}}') == 1
    assert one(f'anomaly_requests_rejected_total{{{good_http}, code="version_missing"}}') == 1
    scores_2xx = f'{good_http}, route="/v1/score", method="POST", status_class="2xx"'
    expected_2xx = N_SINGLE_NORMAL + N_SINGLE_ANOMALOUS + N_SLOW
    assert one(f"anomaly_http_request_duration_seconds_count{{{scores_2xx}}}") == expected_2xx
    slow = one(f"anomaly_http_request_duration_seconds_count{{{scores_2xx}}}") - one(
        f'anomaly_http_request_duration_seconds_bucket{{{scores_2xx}, le="0.025"}}'
    )
    assert slow >= N_SLOW
    broken = f'instance="{observed.instances["broken"]}"'
    broken_5xx = f'{broken}, route="/v1/score", method="POST", status_class="5xx"'
    assert one(f"anomaly_http_request_duration_seconds_count{{{broken_5xx}}}") == N_BROKEN
    assert one(f'anomaly_model_ready{{{broken}, model="{MODEL_NAME}"}}') == 0
    assert one(f'anomaly_calibration_drift{{{broken}, model="{MODEL_NAME}"}}') == 0
    assert one(f'anomaly_flag_rate_ratio{{{broken}, model="{MODEL_NAME}"}}') == 0


# --- last: a target goes down ------------------------------------------------------------------------------


def test_a_stopped_instance_is_down(observed: Observed) -> None:
    stop_server(observed.broken)
    broken = observed.instances["broken"]
    observed.prometheus.wait_for(f'up{{instance="{broken}"}} == 0', lambda r: len(r) == 1, "broken down")
    expr = loaded_alert_queries(observed)["AnomalyApiDown"]
    assert {sample["metric"]["instance"] for sample in observed.prometheus.query(expr)} == {broken}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while "AnomalyApiDown" not in active_alerts(observed) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert active_alerts(observed)["AnomalyApiDown"] in ("pending", "firing")
