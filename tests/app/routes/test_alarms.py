"""Assets and alarm episodes over real HTTP (the session's uvicorn): readings with an X-Asset open,
acknowledge, shelve and close episodes; late and repeated readings; every bad asset, timestamp and action
body answered with its own 422/404 and nothing half-applied."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from factory_anomaly.artifact import Manifest
from tests.app.conftest import anomalous
from tests.app.routes.test_scoring import binary


def _asset() -> str:
    return f"line-3/press-{uuid.uuid4().hex[:8]}"


def _batch(client: httpx.Client, asset: str, x: np.ndarray, **body: Any) -> dict[str, Any]:
    answer = client.post("/v1/score/batch", json={"vectors": x.tolist(), **body}, headers={"X-Asset": asset})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _readings(client: httpx.Client, asset: str) -> int:
    return int(client.get(f"/v1/assets/{asset}").json()["readings"])


def test_without_an_asset_the_answer_is_as_it_always_was(client: httpx.Client, readings: np.ndarray) -> None:
    one = client.post("/v1/score", json={"values": readings[0].tolist()}).json()
    assert "alarm" not in one and "late" not in one
    batch = client.post("/v1/score/batch", json={"vectors": readings[:3].tolist()}).json()
    assert "asset" not in batch and all("alarm" not in r for r in batch["results"])


def test_an_episode_opens_names_its_sensors_and_is_listed(
    client: httpx.Client, readings: np.ndarray, manifest: Manifest
) -> None:
    asset = _asset()
    normal = _batch(client, asset, readings[:5])
    assert normal["asset"] == asset and [r["alarm"]["state"] for r in normal["results"]] == ["none"] * 5
    bad = np.repeat(anomalous(manifest)[None, :], 3, axis=0)
    # an asset's first readings: the velocity channel needs its lag of readings before it judges, so
    # the score's rule alone opens the episode, at its k-th reading over the level
    first = _batch(client, _asset(), bad)["results"]
    assert [r["alarm"]["state"] for r in first] == ["pending", "pending", "open"]
    assert first[-1]["alarm"]["readings"] == 1
    # after normal readings, the jump to them is an abrupt change: the episode opens at once
    results = _batch(client, asset, bad)["results"]
    assert [r["alarm"]["state"] for r in results] == ["open", "open", "open"]
    alarm = results[-1]["alarm"]
    assert (
        alarm["id"] and alarm["readings"] == 3 and alarm["peak_score"] == pytest.approx(results[-1]["score"])
    )
    assert {s["index"] for s in alarm["top_sensors"][:3]} == {3, 17, 29}  # the sensors pushed out of range

    listed = client.get("/v1/alarms", params={"state": "open", "asset": asset}).json()["alarms"]
    assert [e["id"] for e in listed] == [alarm["id"]]
    episode = client.get(f"/v1/alarms/{alarm['id']}").json()
    assert episode["asset"] == asset and episode["closed"] is None
    assert episode["evidence"].startswith("abrupt change of the process state (")
    assert "3 of 10 readings" in episode["evidence"]  # the score was over its level too
    assets = {a["asset"]: a for a in client.get("/v1/assets").json()["assets"]}
    assert assets[asset]["state"] == "open" and assets[asset]["alarm_id"] == alarm["id"]
    assert assets[asset]["readings"] == 8
    drift = assets[asset]["calibration_drift"]  # the asset's own: too few readings to check the promise
    assert drift["state"] == "insufficient_data" and drift["readings"] == 0


def test_acknowledge_then_shelve(client: httpx.Client, readings: np.ndarray, manifest: Manifest) -> None:
    asset = _asset()
    alarm = _batch(client, asset, np.repeat(anomalous(manifest)[None, :], 3, axis=0))["results"][-1]["alarm"]
    acked = client.post(f"/v1/alarms/{alarm['id']}/ack", json={"note": "checking the pump", "by": "ana"})
    assert acked.status_code == 200 and acked.json()["acknowledgements"][0]["by"] == "ana"
    after = _batch(client, asset, readings[:1])["results"][0]["alarm"]
    assert after["state"] == "acknowledged" and after["id"] == alarm["id"]

    shelved = client.post(f"/v1/assets/{asset}/shelve", json={"duration_s": 3600, "note": "maintenance"})
    assert shelved.status_code == 200 and shelved.json()["state"] == "shelved"
    closed = client.get(f"/v1/alarms/{alarm['id']}").json()
    assert closed["closed_by"] == "shelved" and closed["acknowledgements"][0]["note"] == "checking the pump"
    again = _batch(client, asset, np.repeat(anomalous(manifest)[None, :], 3, axis=0))["results"]
    assert [r["alarm"]["state"] for r in again] == ["shelved"] * 3 and all(r["is_anomaly"] for r in again)
    assert client.get("/v1/alarms", params={"state": "open", "asset": asset}).json()["alarms"] == []
    assert [
        e["id"] for e in client.get("/v1/alarms", params={"state": "closed", "asset": asset}).json()["alarms"]
    ] == [alarm["id"]]


def test_late_and_repeated_readings_move_nothing(
    client: httpx.Client, readings: np.ndarray, manifest: Manifest
) -> None:
    asset = _asset()
    head = {"X-Asset": asset}
    first = client.post(
        "/v1/score",
        json={"values": readings[0].tolist(), "ts": "2026-11-26T06:12:00Z", "id": "r1"},
        headers=head,
    )
    assert first.status_code == 200 and "late" not in first.json()
    late = client.post(
        "/v1/score", json={"values": anomalous(manifest).tolist(), "ts": 1_700_000_000}, headers=head
    ).json()
    assert late["late"] is True and late["is_anomaly"] and late["alarm"]["state"] == "none"
    retry = client.post(
        "/v1/score",
        json={"values": readings[0].tolist(), "ts": "2026-11-26T06:12:00Z", "id": "r1"},
        headers=head,
    ).json()
    assert retry["alarm"] == first.json()["alarm"]
    assert _readings(client, asset) == 1  # the late one and the retry counted nowhere


def test_binary_batches_take_their_times_from_the_headers(client: httpx.Client, manifest: Manifest) -> None:
    asset = _asset()
    x = np.repeat(anomalous(manifest)[None, :], 3, axis=0)
    headers = {"X-Asset": asset, "X-Ts-Start": "2026-11-26T06:12:00+00:00", "X-Ts-Step-S": "60",
               "Content-Type": "application/octet-stream"}  # fmt: skip
    answer = client.post("/v1/score/batch", content=binary(x), headers=headers).json()
    alarm = answer["results"][-1]["alarm"]
    assert alarm["state"] == "open" and alarm["since"] == 1_795_673_520.0  # 06:12:00, the first of the three
    assert client.get(f"/v1/assets/{asset}").json()["last_reading_ts"] == 1_795_673_520.0 + 120


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [({"X-Asset": "press 7"}, {}, "invalid_asset"), ({"X-Asset": "p" * 129}, {}, "invalid_asset"),
     ({"X-Asset": "press-7"}, {"asset": "press-8"}, "asset_mismatch"),
     ({}, {"asset": "press-7"}, "asset_mismatch"),
     ({"X-Asset": "press-7"}, {"ts": "yesterday"}, "invalid_ts"),
     ({"X-Asset": "press-7"}, {"ts": "2026-11-26T06:12:00"}, "invalid_ts"),
     ({"X-Asset": "press-7"}, {"ts": 1.7e12}, "invalid_ts"),
     ({"X-Asset": "press-7"}, {"ts": True}, "invalid_ts")],
)  # fmt: skip
def test_a_bad_asset_or_time_is_a_422_naming_it(
    client: httpx.Client, readings: np.ndarray, headers: dict[str, str], body: dict[str, Any], code: str
) -> None:
    answer = client.post("/v1/score", json={"values": readings[0].tolist(), **body}, headers=headers)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == code, answer.text


def test_nothing_is_half_applied(client: httpx.Client, readings: np.ndarray) -> None:
    asset = _asset()
    _batch(client, asset, readings[:2])
    bad = client.post("/v1/score/batch", json={"vectors": readings[:3].tolist(), "ts": [1.0, 2.0, "x"]},
                      headers={"X-Asset": asset})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_ts"
    headers = {"X-Asset": asset, "X-Ts-Step-S": "1", "Content-Type": "application/octet-stream"}
    step_only = client.post("/v1/score/batch", content=binary(readings[:2]), headers=headers)
    assert step_only.status_code == 422 and step_only.json()["error"]["code"] == "invalid_ts"
    assert _readings(client, asset) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [("get", "/v1/alarms/no-such-episode", None, 404, "alarm_not_found"),
     ("post", "/v1/alarms/no-such-episode/ack", {}, 404, "alarm_not_found"),
     ("get", "/v1/assets/never-seen", None, 404, "asset_not_found"),
     ("post", "/v1/assets/never-seen/shelve", {"duration_s": 60}, 404, "asset_not_found"),
     ("get", "/v1/alarms?state=bogus", None, 422, "invalid_type"),
     ("get", "/v1/alarms?since=last-week", None, 422, "invalid_ts")],
)  # fmt: skip
def test_unknown_things_and_bad_queries(
    client: httpx.Client, method: str, path: str, body: Any, status: int, code: str
) -> None:
    answer = client.request(method.upper(), path, json=body)
    assert answer.status_code == status and answer.json()["error"]["code"] == code, answer.text


@pytest.mark.parametrize(
    ("body", "code"),
    [({}, "missing_field"), ({"duration_s": "60"}, "invalid_shelve"), ({"duration_s": 0}, "invalid_shelve"),
     ({"duration_s": 1e9}, "invalid_shelve"), ({"duration_s": 60, "why": "x"}, "unknown_field"),
     ({"duration_s": 60, "by": ""}, "invalid_type")],
)  # fmt: skip
def test_a_bad_shelve_body_is_refused_and_changes_nothing(
    client: httpx.Client, readings: np.ndarray, body: dict[str, Any], code: str
) -> None:
    asset = _asset()
    _batch(client, asset, readings[:1])
    answer = client.post(f"/v1/assets/{asset}/shelve", json=body)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == code, answer.text
    assert client.get(f"/v1/assets/{asset}").json()["state"] == "none"


def test_the_alarm_routes_need_the_api_key(live: Any) -> None:
    with live.client() as anonymous:
        for path in ("/v1/assets", "/v1/alarms"):
            assert anonymous.get(path).status_code == 401


def test_the_model_info_names_the_episode_rule(client: httpx.Client, manifest: Manifest) -> None:
    alarms = client.get("/v1/model").json()["alarms"]
    assert manifest.alarms is not None
    assert (alarms["k"], alarms["n"], alarms["level"]) == (
        manifest.alarms.k,
        manifest.alarms.n,
        manifest.alarms.level,
    )
    assert alarms["target_episodes_per_day"] == 1.0 and alarms["days_covered"] > 0


def test_a_frozen_sensor_opens_an_episode_over_http(
    client: httpx.Client, small_plant: Any, manifest: Manifest
) -> None:
    assert manifest.alarms is not None and manifest.alarms.stuck_limits is not None
    limits = np.asarray(manifest.alarms.stuck_limits)
    x = small_plant.simulate(400, seed=21, anomaly_rate=0.0).values.astype(np.float32)
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    candidates = [j for j in np.flatnonzero((limits > 0) & (limits < 100)) if low[j] < x[50, j] < high[j]]
    sensor = int(candidates[0])
    x[50:, sensor] = x[50, sensor]
    asset = _asset()
    results = _batch(client, asset, x)["results"]
    opened = next(r["alarm"] for r in results if r["alarm"]["state"] == "open")
    episode = client.get(f"/v1/alarms/{opened['id']}").json()
    assert episode["evidence"].startswith(f"reading unchanged: {manifest.sensor_names[sensor]}")
    assert episode["top_sensors"][0]["index"] == sensor
    assert episode["top_sensors"][0]["direction"] == "flat"  # what the stuck channel saw it do


def test_a_noise_burst_opens_an_episode_by_its_jitter_over_http(
    trained_jittery: Path, small_plant: Any, tmp_path: Path
) -> None:
    from factory_anomaly.artifact import read_manifest
    from tests.app.conftest import AUTH, server_env, start_server, stop_server

    manifest = read_manifest(trained_jittery)
    assert manifest.alarms is not None and manifest.alarms.jitter is not None
    x = small_plant.simulate(400, seed=22, anomaly_rate=0.0).values.astype(np.float32)
    active = np.flatnonzero(np.asarray(manifest.alarms.jitter.noise_floor) > 0)
    burst = [int(j) for j in active[:3]]
    extra = np.random.default_rng(3).normal(size=(60, 3)) * small_plant.noise_sd[burst] * 8.0
    x[200:260, burst] += extra.astype(np.float32)
    server = start_server(tmp_path / "server.log", server_env(trained_jittery.parent.parent))
    try:
        with server.client(headers=AUTH) as client:
            results = _batch(client, _asset(), x)["results"]
            assert all(r["alarm"]["state"] == "none" for r in results[:200])  # normal readings: nothing
            opened = next(r["alarm"] for r in results if r["alarm"]["state"] == "open")
            episode = client.get(f"/v1/alarms/{opened['id']}").json()
    finally:
        stop_server(server)
    assert "reading jitter far above normal: " in episode["evidence"]
    assert episode["top_sensors"][0]["index"] in burst
    assert {s["direction"] for s in episode["top_sensors"] if s["index"] in burst} == {"noisy"}


def test_an_abrupt_excursion_opens_an_episode_by_its_velocity_over_http(
    trained_small: Path, small_plant: Any, tmp_path: Path
) -> None:
    from factory_anomaly.artifact import read_manifest
    from tests.app.conftest import AUTH, server_env, start_server, stop_server

    manifest = read_manifest(trained_small)
    assert manifest.alarms is not None and manifest.alarms.velocity is not None  # on by default
    run = small_plant.simulate(400, seed=23, anomaly_rate=0.0)
    push = np.zeros_like(run.latent[200:])
    push[:, 0] = 4.0 * small_plant.latent_sd[0]  # the process jumps to a rare but possible state
    moved = small_plant.clean_values(run.latent[200:] + push) - small_plant.clean_values(run.latent[200:])
    x = run.values.astype(np.float64)
    x[200:] += moved
    server = start_server(tmp_path / "server.log", server_env(trained_small.parent.parent))
    try:
        with server.client(headers=AUTH) as client:
            results = _batch(client, _asset(), x.astype(np.float32))["results"]
            assert all(r["alarm"]["state"] == "none" for r in results[:200])  # normal readings: nothing
            at = next(i for i, r in enumerate(results) if r["alarm"]["state"] == "open")
            episode = client.get(f"/v1/alarms/{results[at]['alarm']['id']}").json()
    finally:
        stop_server(server)
    assert 200 <= at < 200 + manifest.alarms.velocity.lag
    assert episode["evidence"].startswith("abrupt change of the process state (")
    named = episode["evidence"].split("moved most: ", 1)[1].split(";")[0].split(", ")
    biggest = np.argsort(-np.abs(moved[0]) / np.asarray(manifest.alarms.velocity.scale))[:8]
    assert len(named) == 3 and set(named) <= {manifest.sensor_names[j] for j in biggest}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_episodes_are_counted_in_the_metrics(
    live: Any, client: httpx.Client, readings: np.ndarray, manifest: Manifest
) -> None:
    asset = _asset()
    x = np.concatenate([readings[:2], np.repeat(anomalous(manifest)[None, :], 3, axis=0)])
    _batch(client, asset, x)
    _batch(client, asset, x[:1], ts=[0.0])  # late: answered, not counted
    with live.client() as scraper:
        samples = _samples(scraper.get("/metrics").text)
    assert samples[("anomaly_asset_readings_total", (("asset", asset),))] == 5
    assert samples[("anomaly_alarm_episodes_opened_total", (("asset", asset),))] == 1
    assert samples[("anomaly_asset_calibration_drift", (("asset", asset),))] == 0
    pushed = {manifest.sensor_names[i] for i in (3, 17, 29)}
    open_now = [
        dict(labels) for (name, labels), v in samples.items() if name == "anomaly_alarms_open" and v == 1
    ]
    (alarm,) = [labels for labels in open_now if labels["asset"] == asset]
    assert alarm["state"] == "open" and alarm["sensor"] in pushed  # the lead sensor, fixed at opening
    top = {dict(labels)["sensor"] for (name, labels), v in samples.items()
           if name == "anomaly_alarm_episode_top_sensor_total" and v > 0}  # fmt: skip
    assert top & pushed


def test_assets_beyond_the_cap_share_one_series(store: Any, readings: np.ndarray) -> None:
    import anyio

    from tests.app.conftest import serving, settings_for

    async def run() -> str:
        async with serving(settings_for(store, max_assets=2)) as c:
            for asset in ("a-1", "a-2", "a-3", "a-4"):
                answer = await c.post(
                    "/v1/score", json={"values": readings[0].tolist()}, headers={"X-Asset": asset}
                )
                assert answer.status_code == 200
            return (await c.get("/metrics")).text

    samples = _samples(anyio.run(run))
    by_asset = {
        dict(labels)["asset"]: v
        for (name, labels), v in samples.items()
        if name == "anomaly_asset_readings_total"
    }
    assert by_asset == {"a-1": 1, "a-2": 1, "other": 2}


def test_a_process_that_does_not_hold_an_asset_answers_from_the_journal(
    store: Any, manifest: Manifest, tmp_path: Any
) -> None:
    """Two apps on one journal, as two processes behind the proxy: whatever reaches the one that does not
    hold the machine (its state, the episode listing, an acknowledgement, a shelve) is answered from the
    journal, and the holder follows at its next sync."""
    import anyio

    from tests.app.conftest import AUTH, running, settings_for

    shared = tmp_path / "alarms.sqlite3"
    asset = _asset()
    x = np.repeat(anomalous(manifest)[None, :], 3, axis=0).tolist()

    def client(app: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app", headers=AUTH)

    async def run() -> None:
        settings = settings_for(store, alarm_db=shared)
        async with (
            running(settings) as one,
            running(settings) as two,
            client(one) as holder,
            client(two) as other,
        ):
            answer = await holder.post("/v1/score/batch", json={"vectors": x}, headers={"X-Asset": asset})
            alarm_id = answer.json()["results"][-1]["alarm"]["id"]
            one.state.assets.sync()
            assert (await other.get(f"/v1/assets/{asset}")).json()["state"] == "open"
            assert asset in {a["asset"] for a in (await other.get("/v1/assets")).json()["assets"]}
            listed = (await other.get("/v1/alarms", params={"asset": asset})).json()["alarms"]
            assert [e["id"] for e in listed] == [alarm_id]
            acked = await other.post(f"/v1/alarms/{alarm_id}/ack", json={"note": "valve", "by": "ana"})
            assert acked.status_code == 200 and acked.json()["acknowledgements"][0]["note"] == "valve"
            one.state.assets.sync()
            assert (await holder.get(f"/v1/assets/{asset}")).json()["state"] == "acknowledged"
            bad = await other.post(f"/v1/assets/{asset}/shelve", json={"duration_s": 0})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_shelve"
            shelved = await other.post(f"/v1/assets/{asset}/shelve", json={"duration_s": 60, "note": "fix"})
            assert shelved.status_code == 200 and shelved.json()["state"] == "shelved"
            one.state.assets.sync()
            assert (await holder.get(f"/v1/assets/{asset}")).json()["state"] == "shelved"
            assert (await holder.get(f"/v1/alarms/{alarm_id}")).json()["closed_by"] == "shelved"
            unknown = await other.get("/v1/assets/never-seen-anywhere")
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "asset_not_found"

    anyio.run(run)
