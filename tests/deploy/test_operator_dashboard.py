"""The operators' dashboard (deploy/grafana/dashboards/operator-alarms.json): its structure as Grafana
provisions it, and every query proven against a real Prometheus scraping the real service.

One uvicorn serves the session's small trained model; Debian's Prometheus scrapes it every second. Five
machines send quiet readings, then three anomalous readings each (the test model's rule, 3 of 10, opens an
episode on each). Then one episode is acknowledged, one stays open, one goes quiet until it is `closing`,
one stays quiet long enough to close, one machine is shelved. Every panel query is then evaluated as
Grafana would run it (`$asset` as "All" and as a selection, `$__range`, `$__rate_interval` substituted),
and each must answer what an operator expects: the open table names the acknowledged, open and closing
machines with their states and lead sensor; the timeline shows each machine's states in order; every
machine opened one episode in range; the top sensor is one of the sensors pushed out of range.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factory_anomaly.artifact import Manifest
from tests.app.conftest import AUTH, LiveServer, anomalous, server_env, start_server, stop_server
from tests.deploy.conftest import (
    DASHBOARD,
    GRAFANA_DIR,
    OPERATOR_DASHBOARD,
    assert_laid_out,
    documented_metrics,
    load_yaml,
)
from tests.deploy.test_observability import (
    Prometheus,
    instance_of,
    start_prometheus,
    stop_prometheus,
    values,
)

ACKED, OPEN, CLOSING, QUIET, SHELVED = (
    "line-1/press-3", "line-1/press-4", "line-2/oven.1", "line-2/oven.2", "line-3/saw-9",
)  # fmt: skip
ASSETS = (ACKED, OPEN, CLOSING, QUIET, SHELVED)
N_QUIET_FIRST = 5  # quiet readings per machine before its anomalous ones
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__range": "5m"}
"""Grafana's built-in variables for a 5 minute range (the whole test fits in it)."""
SELECTOR = re.compile(r"\b(anomaly_[a-z_]+)(\{[^}]*\})?")

Sample = dict[str, Any]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OPERATOR_DASHBOARD.read_text())
    return data


def queries() -> dict[str, str]:
    """Panel title -> its one query (every panel of this dashboard has exactly one)."""
    found: dict[str, str] = {}
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            [target] = panel["targets"]
            found[panel["title"]] = target["expr"]
    return found


def grafana_regex(selected: tuple[str, ...]) -> str:
    """What Grafana puts in for a multi-value variable (its Prometheus datasource's regex escaping): "All"
    is the variable's allValue, a selection is its values escaped and joined in a group."""
    if not selected:
        return ".*"
    escaped = [re.sub(r"[$^*{}\[\]'+?.()|]", r"\\\\\g<0>", v.replace("\\", "\\\\\\\\")) for v in selected]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, selected: tuple[str, ...] = ()) -> str:
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    expr = expr.replace("$asset", grafana_regex(selected))
    assert "$" not in expr, expr
    return expr


# --- the file Grafana provisions ---------------------------------------------------------------------------


def test_the_dashboard_is_a_provisioned_dashboard_on_the_provisioned_datasource() -> None:
    board = dashboard()
    assert board["uid"] == "operator-alarms"
    others = [json.loads(path.read_text()) for path in OPERATOR_DASHBOARD.parent.glob("*.json")]
    assert len(others) >= 2 and DASHBOARD.parent == OPERATOR_DASHBOARD.parent
    assert len({b["uid"] for b in others}) == len({b["title"] for b in others}) == len(others)
    # the provider reads the directory compose mounts the dashboards at, so this file is loaded too
    [provider] = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "anomaly.yml")["providers"]
    mounts = load_yaml(GRAFANA_DIR.parents[1] / "docker-compose.yml")["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert provider["type"] == "file"
    [source] = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    expected = {"type": source["type"], "uid": source["uid"]}
    panels = board["panels"]
    assert_laid_out(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected and panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected and target["expr"].strip(), panel["title"]
    [variable] = board["templating"]["list"]
    assert variable["datasource"] == expected
    assert (variable["name"], variable["multi"], variable["includeAll"], variable["allValue"]) == (
        "asset",
        True,
        True,
        ".*",
    )
    kinds = {panel["title"]: panel["type"] for panel in panels}
    assert kinds["Open alarms"] == "table" and kinds["Alarm timeline by asset"] == "state-timeline"


def test_every_selector_is_a_documented_metric_of_the_job_filtered_by_asset() -> None:
    documented = documented_metrics()
    exprs = list(queries().values()) + [dashboard()["templating"]["list"][0]["definition"]]
    used = set()
    for expr in exprs:
        selected = SELECTOR.findall(expr)
        assert selected, expr
        for name, matchers in selected:
            assert name in documented, f"{name} is not in docs/metrics.md ({expr})"
            assert 'job="anomaly-api"' in matchers, expr
            if "asset" in documented[name] and "label_values" not in expr:
                assert 'asset=~"$asset"' in matchers, expr
            used.add(name)
    assert used == {
        "anomaly_alarms_open",
        "anomaly_alarm_episodes_opened_total",
        "anomaly_asset_readings_total",
        "anomaly_alarm_episode_top_sensor_total",
        "anomaly_alarm_episodes_closed_total",
        "anomaly_asset_calibration_drift",
    }


# --- the real service, a real Prometheus ------------------------------------------------------------------


@dataclass
class Floor:
    """The service after the traffic, as Prometheus scraped it."""

    prometheus: Prometheus
    server: LiveServer
    pushed_sensors: set[str]  # the names of the sensors `anomalous` moves out of range
    started: float  # before the first reading (seconds since the epoch)
    first_episode_seen: float  # once Prometheus scraped the first machine's episode, before the others


def _batch(client: Any, asset: str, rows: np.ndarray) -> list[dict[str, Any]]:
    answer = client.post("/v1/score/batch", json={"vectors": rows.tolist()}, headers={"X-Asset": asset})
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


@pytest.fixture(scope="module")
def floor(
    store: Path, manifest: Manifest, small_plant: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Floor]:
    assert manifest.alarms is not None
    rule = manifest.alarms
    assert (rule.k, rule.n) == (3, 10) and rule.close_after > rule.n, "closing needs close_after > n"
    directory = tmp_path_factory.mktemp("operator-dashboard")
    server = start_server(directory / "server.log", server_env(store))
    prometheus = None
    try:
        prometheus = start_prometheus(directory, [instance_of(server)])
        prometheus.wait_for('up{job="anomaly-api"} == 1', lambda r: len(r) == 1, "the service scraped")
        started = time.time()
        # the return from the anomalous readings is an abrupt change too: the velocity channel counts
        # it over the level for its lag, and the quiet count starts after that
        settle = 0 if rule.velocity is None else rule.velocity.lag
        needed = N_QUIET_FIRST + settle + rule.close_after
        normal = small_plant.simulate(1000, seed=5, anomaly_rate=0.0).values.astype(np.float32)
        bad = np.repeat(anomalous(manifest)[None, :], 3, axis=0)
        with server.client(headers=AUTH) as client:
            # a contiguous stretch of normal readings (evidence channels judge consecutive readings, so it
            # must be one stretch, not picked rows), scored without an asset so they count nowhere, all
            # below the rule's level
            answer = client.post("/v1/score/batch", json={"vectors": normal.tolist()})
            scores = np.array([r["score"] for r in answer.json()["results"]])
            calm = np.flatnonzero(np.convolve(scores < rule.level, np.ones(needed), "valid") == needed)
            assert calm.size, "no stretch of normal readings all below the level"
            quiet = normal[calm[0] : calm[0] + needed]
            for asset in ASSETS:
                states = [r["alarm"]["state"] for r in _batch(client, asset, quiet[:N_QUIET_FIRST])]
                assert states == ["none"] * N_QUIET_FIRST
            # every machine's reading counter scraped before its episode: the timeline shows it quiet first
            prometheus.wait_for(
                'anomaly_asset_readings_total{job="anomaly-api"}',
                lambda r: len(r) == len(ASSETS),
                "every machine's readings scraped",
            )
            alarm_ids = {ACKED: _batch(client, ACKED, bad)[-1]["alarm"]["id"]}
            # the top-sensor counter is scraped at 1, and again a second later, before the others open
            prometheus.wait_for(
                'anomaly_alarm_episode_top_sensor_total{job="anomaly-api"}',
                lambda r: values(r) == [1],
                "the first episode scraped",
            )
            first_episode_seen = time.time()
            time.sleep(1.5)
            for asset in ASSETS[1:]:
                alarm = _batch(client, asset, bad)[-1]["alarm"]
                assert alarm["state"] == "open", alarm
                alarm_ids[asset] = alarm["id"]
            prometheus.wait_for(
                'anomaly_alarms_open{job="anomaly-api", state="open"}',
                lambda r: len(r) == len(ASSETS),
                "every machine's episode scraped while open",
            )
            acked = client.post(f"/v1/alarms/{alarm_ids[ACKED]}/ack", json={"note": "on it", "by": "ana"})
            assert acked.status_code == 200, acked.text
            after = _batch(client, CLOSING, quiet[N_QUIET_FIRST : N_QUIET_FIRST + settle + rule.n])[-1]
            after = after["alarm"]
            assert after["state"] == "closing", after
            _batch(client, QUIET, quiet[N_QUIET_FIRST:needed])
            closed = client.get(f"/v1/alarms/{alarm_ids[QUIET]}").json()
            assert closed["closed_by"] == "quiet", closed
            shelved = client.post(
                f"/v1/assets/{SHELVED}/shelve", json={"duration_s": 3600, "note": "service"}
            )
            assert shelved.status_code == 200 and shelved.json()["state"] == "shelved", shelved.text
        final = {(ACKED, "acknowledged"), (OPEN, "open"), (CLOSING, "closing")}
        prometheus.wait_for(
            'sum by (asset, state) (anomaly_alarms_open{job="anomaly-api"})',
            lambda r: {(s["metric"]["asset"], s["metric"]["state"]) for s in r} == final,
            "the final alarm states scraped",
        )
        seen_final = time.time()  # and scraped once more, so the timeline's last step sees them
        prometheus.wait_for(
            f'timestamp(up{{job="anomaly-api"}}) > {seen_final}', lambda r: len(r) == 1, "one more scrape"
        )
        prometheus.wait_for(
            f'anomaly_alarm_episodes_closed_total{{job="anomaly-api", asset="{QUIET}"}}',
            lambda r: values(r) == [1],
            "the quiet close scraped",
        )
        names = manifest.sensor_names
        yield Floor(prometheus, server, {names[3], names[17], names[29]}, started, first_episode_seen)
    finally:
        if prometheus is not None:
            stop_prometheus(prometheus)
        stop_server(server)


def by_labels(result: list[Sample], *labels: str) -> dict[tuple[str, ...], float]:
    found = {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in result}
    assert len(found) == len(result), result
    return found


def by_asset(result: list[Sample]) -> dict[str, float]:
    return {asset: value for (asset,), value in by_labels(result, "asset").items()}


def _check_open_table(result: list[Sample], floor: Floor) -> None:
    rows = by_labels(result, "asset", "state", "sensor")
    assert {(asset, state) for asset, state, _ in rows} == {
        (ACKED, "acknowledged"),
        (OPEN, "open"),
        (CLOSING, "closing"),
    }
    assert {sensor for _, _, sensor in rows} <= floor.pushed_sensors
    assert set(rows.values()) == {1.0}


def _check_top_sensors(result: list[Sample], floor: Floor) -> None:
    sensors = {sensor: value for (sensor,), value in by_labels(result, "sensor").items()}
    assert sensors and set(sensors) <= floor.pushed_sensors, sensors
    assert sum(sensors.values()) == len(ASSETS)  # one episode each, every one counted once


def _check_closed(result: list[Sample], floor: Floor) -> None:
    closed = by_labels(result, "asset", "closed_by")
    assert closed[(QUIET, "quiet")] == 1
    # the shelved machine's close belongs here too; it is missing (test_a_shelved_close_is_counted)
    assert set(closed) <= {(QUIET, "quiet"), (SHELVED, "shelved")}, closed


def _readings_flow(result: list[Sample], floor: Floor) -> None:
    rates = by_asset(result)
    assert set(rates) == set(ASSETS) and all(rate > 0 for rate in rates.values()), rates


EXPECTED: dict[str, Callable[[list[Sample], Floor], None]] = {
    "Unacknowledged alarms": lambda r, _: _equal(values(r), [1]),  # OPEN's
    "Acknowledged alarms": lambda r, _: _equal(values(r), [1]),  # ACKED's
    "Assets with drifted calibration": lambda r, _: _equal(values(r), [0]),
    "Open alarms": _check_open_table,
    "Calibration drift by asset": lambda r, _: _equal(by_asset(r), dict.fromkeys(ASSETS, 0.0)),
    "Alarm timeline by asset": lambda r, _: _equal(
        by_asset(r), {ACKED: 2.0, OPEN: 3.0, CLOSING: 1.0, QUIET: 0.0, SHELVED: 0.0}
    ),
    "Alarm episodes in range, by asset": lambda r, _: _equal(by_asset(r), dict.fromkeys(ASSETS, 1.0)),
    "Alarm episodes per day, by asset": lambda r, _: _equal(by_asset(r), dict.fromkeys(ASSETS, 1.0)),
    "Readings per second, by asset": _readings_flow,
    "Top sensors behind alarms": _check_top_sensors,
    "Episodes closed in range, by asset and reason": _check_closed,
}


def _equal(found: Any, expected: Any) -> None:
    assert found == expected


def test_every_panel_answers_what_an_operator_expects(floor: Floor) -> None:
    found = queries()
    assert set(found) == set(EXPECTED)
    failures = []
    for title, expr in found.items():
        result = floor.prometheus.query(substitute(expr))
        try:
            assert result, "no data"
            EXPECTED[title](result, floor)
        except AssertionError as error:
            failures.append(f"{title}: {error} ({result})")
    assert not failures, "\n".join(failures)


def test_choosing_machines_narrows_every_asset_panel_to_them(floor: Floor) -> None:
    chosen = (ACKED, CLOSING)  # CLOSING's dot must be escaped as Grafana escapes it

    def assets(expr: str) -> set[str]:
        return {s["metric"]["asset"] for s in floor.prometheus.query(expr) if "asset" in s["metric"]}

    narrowed = {}
    for title, expr in queries().items():
        narrowed[title] = assets(substitute(expr, chosen))
        assert narrowed[title] == assets(substitute(expr)) & set(chosen), title
    assert narrowed["Open alarms"] == narrowed["Alarm timeline by asset"] == set(chosen)
    acked_only = floor.prometheus.query(substitute(queries()["Unacknowledged alarms"], (ACKED,)))
    assert values(acked_only) == [0]  # `or vector(0)`: a quiet selection shows 0, not "no data"


def test_the_asset_variable_lists_every_machine(floor: Floor) -> None:
    definition = dashboard()["templating"]["list"][0]["definition"]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert match and match.group(2) == "asset", definition
    found = floor.prometheus.api("label/asset/values", **{"match[]": match.group(1)})
    assert set(found) == set(ASSETS)


def test_the_timeline_shows_each_machine_s_states_in_order(floor: Floor) -> None:
    data = floor.prometheus.api(
        "query_range",
        query=substitute(queries()["Alarm timeline by asset"]),
        start=str(floor.started),
        end=str(time.time()),
        step="0.5",
    )
    sequences = {}
    for series in data["result"]:
        states = [float(v) for _, v in series["values"]]
        sequences[series["metric"]["asset"]] = [
            s for i, s in enumerate(states) if i == 0 or states[i - 1] != s
        ]
    assert sequences == {
        ACKED: [0, 3, 2],  # quiet, open, acknowledged
        OPEN: [0, 3],
        CLOSING: [0, 3, 1],
        QUIET: [0, 3, 0],
        SHELVED: [0, 3, 0],
    }


def test_a_counter_older_than_the_range_counts_only_its_increase(floor: Floor) -> None:
    """The top-sensor counter was scraped at 1 (the first episode) for over a second before the four
    others opened. Over a range starting after its first scrape the series is older than the range, so
    the panel counts what `increase()` counts (the four, extrapolated to the range's ends), not the
    counter's whole value and not both."""
    at = time.time()
    window = f"{int((at - floor.first_episode_seen - 0.25) * 1000)}ms"
    panel = queries()["Top sensors behind alarms"].replace("$__range", window)
    plain = f'sum(increase(anomaly_alarm_episode_top_sensor_total{{job="anomaly-api"}}[{window}]))'
    [counted] = values(floor.prometheus.api("query", query=panel, time=str(at))["result"])
    [increase] = values(floor.prometheus.api("query", query=plain, time=str(at))["result"])
    assert counted == increase >= len(ASSETS) - 1, (counted, increase)


def test_a_shelved_close_is_counted(floor: Floor) -> None:
    result = floor.prometheus.query(substitute(queries()["Episodes closed in range, by asset and reason"]))
    assert by_labels(result, "asset", "closed_by").get((SHELVED, "shelved")) == 1
