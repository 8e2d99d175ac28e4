"""GET /metrics and app.metrics: names, units, bounded and pre-initialised labels, counts equal to traffic,
a registry per app, and the process model (one uvicorn process; multiprocess mode refused)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from factory_anomaly.app.observability.metrics import (
    DRIFT_BUCKETS_RATIO,
    ERROR_CODES,
    LATENCY_BUCKETS_SECONDS,
    LATENCY_SLO_SECONDS,
    SCORE_RATIO_BUCKETS,
    UNMATCHED_ROUTE,
    BulkHistogram,
)
from factory_anomaly.artifact import Manifest
from tests.app.conftest import (
    AUTH,
    MODEL_NAME,
    ROOT,
    LiveServer,
    anomalous,
    copy_store,
    publish_copy,
    running,
    settings_for,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

API_ROUTES = {
    ("/v1/score", "POST"),
    ("/v1/score/batch", "POST"),
    ("/v1/explain", "POST"),
    ("/v1/model", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/v1/admin/reload", "POST"),
    ("/metrics", "GET"),
}


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def of_model(samples: Samples, name: str, **labels: str) -> float:
    return value(samples, name, model=MODEL_NAME, **labels)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


class Serving:
    """The app in process (real lifespan) and a client for it."""

    def __init__(self, store: Path, **overrides: object) -> None:
        self.settings = settings_for(store, **overrides)

    async def __aenter__(self) -> httpx.AsyncClient:
        self._running = running(self.settings)
        self.app = await self._running.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://service")
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._running.__aexit__(None, None, None)


pytestmark = pytest.mark.anyio


# --- what is exposed before any traffic -------------------------------------------------------------------


async def test_every_label_set_is_there_at_zero_before_any_traffic(store: Path, manifest: Manifest) -> None:
    async with Serving(store) as client:
        samples = await scrape(client)
    for code in ERROR_CODES:
        assert value(samples, "anomaly_requests_rejected_total", code=code) == 0
    assert value(samples, "anomaly_requests_rejected_total", code="other") == 0
    for route, method in API_ROUTES:
        for status_class in ("2xx", "4xx", "5xx"):
            labels = {"route": route, "method": method, "status_class": status_class}
            assert ("anomaly_http_request_duration_seconds_count", frozenset(labels.items())) in samples
    for name in ("anomaly_readings_scored_total", "anomaly_readings_anomalous_total"):
        assert of_model(samples, name) == 0
    for name in ("anomaly_score_threshold_ratio_count", "anomaly_input_drift_ratio_count"):
        assert of_model(samples, name) == 0
    for operation in ("score", "explain"):
        assert of_model(samples, "anomaly_inference_duration_seconds_count", operation=operation) == 0
    for route in ("/v1/score", "/v1/score/batch"):
        assert of_model(samples, "anomaly_batch_size_rows_count", route=route) == 0
    assert of_model(samples, "anomaly_model_reloads_total", outcome="success") == 1
    assert of_model(samples, "anomaly_model_reloads_total", outcome="failure") == 0
    assert of_model(samples, "anomaly_model_ready") == 1
    assert of_model(samples, "anomaly_model_threshold") == manifest.threshold.value
    assert of_model(samples, "anomaly_calibration_drift") == 0
    assert of_model(samples, "anomaly_flag_rate_ratio") == 0
    info = {
        "model": MODEL_NAME,
        "version": manifest.version,
        "provider": "CPUExecutionProvider",
        "n_sensors": str(manifest.n_sensors),
    }
    assert series(samples, "anomaly_model_info") == {frozenset(info.items()): 1.0}
    # the /metrics request itself is in flight while it renders
    assert value(samples, "anomaly_http_requests_in_flight") == 1
    assert "process_resident_memory_bytes" in {name for name, _ in samples}
    assert not [name for name, _ in samples if name.endswith("_created")]


async def test_names_carry_units_and_the_latency_buckets_hold_the_slo(store: Path) -> None:
    async with Serving(store) as client:
        text = (await client.get("/metrics")).text
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    ours = {name: kind for name, kind in families.items() if name.startswith("anomaly_")}
    for name, kind in ours.items():
        if kind == "histogram":
            assert name.endswith(("_seconds", "_rows", "_ratio")), name
        elif kind == "counter":
            assert name.endswith("_total") or f"{name}_total" in text, name
    assert LATENCY_SLO_SECONDS in LATENCY_BUCKETS_SECONDS
    assert sum(b < 0.001 for b in LATENCY_BUCKETS_SECONDS) >= 3  # sub-millisecond resolution
    assert 'anomaly_http_request_duration_seconds_bucket{le="0.025"' in text
    assert 1.0 in SCORE_RATIO_BUCKETS and DRIFT_BUCKETS_RATIO[0] == 0.0


async def test_each_app_has_its_own_registry(store: Path) -> None:
    given = CollectorRegistry()
    async with Serving(store) as first, Serving(store) as second:
        await first.post("/v1/score", json={"values": [0.0]})
        one, two = await scrape(first), await scrape(second)
        from factory_anomaly.app.main import create_app

        create_app(settings_for(store), metrics_registry=given)
    key = {"route": "/v1/score", "method": "POST", "status_class": "4xx"}
    assert value(one, "anomaly_http_request_duration_seconds_count", **key) == 1
    assert value(two, "anomaly_http_request_duration_seconds_count", **key) == 0
    assert b"anomaly_readings_scored_total" in generate_latest(given)


# --- counting -------------------------------------------------------------------------------------------


async def test_readings_anomalies_ratios_and_drift_count_what_was_scored(
    store: Path, readings: np.ndarray, manifest: Manifest
) -> None:
    bad = anomalous(manifest)
    async with Serving(store) as client:
        flags: list[bool] = []
        for row in readings[:5]:
            answer = (await client.post("/v1/score", json={"values": row.tolist()})).json()
            flags.append(answer["is_anomaly"])
        answer = (await client.post("/v1/score", json={"values": bad.tolist()})).json()
        flags.append(answer["is_anomaly"])
        batch = np.vstack([readings[5:37], bad[None, :], bad[None, :]])
        answer = (
            await client.post(
                "/v1/score/batch",
                content=batch.astype("<f4").tobytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
        ).json()
        flags += [r["is_anomaly"] for r in answer["results"]]
        explained = await client.post("/v1/explain", json={"values": bad.tolist()})
        assert explained.json()["is_anomaly"] is True
        samples = await scrape(client)
    sent = 6 + len(batch)
    assert flags[5] is True and sum(flags[-2:]) == 2
    assert of_model(samples, "anomaly_readings_scored_total") == sent  # explain not counted
    assert of_model(samples, "anomaly_readings_anomalous_total") == sum(flags)
    assert of_model(samples, "anomaly_score_threshold_ratio_count") == sent
    assert of_model(samples, "anomaly_score_threshold_ratio_bucket", le="1.0") == sent - sum(flags)
    assert of_model(samples, "anomaly_input_drift_ratio_count") == sent
    # the anomalous reading has 3 of 40 sensors far outside the training range; the normal ones some, rarely
    x = np.vstack([readings[:5], bad[None, :], batch])
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    shares = ((x < low) | (x > high)).mean(axis=1)
    assert of_model(samples, "anomaly_input_drift_ratio_sum") == pytest.approx(shares.sum())
    assert of_model(samples, "anomaly_input_drift_ratio_bucket", le="0.0") == (shares == 0).sum()
    assert shares[5] == pytest.approx(3 / 40)
    sizes = {"/v1/score": (6, 6), "/v1/score/batch": (1, len(batch))}
    for route, (count, total) in sizes.items():
        assert of_model(samples, "anomaly_batch_size_rows_count", route=route) == count
        assert of_model(samples, "anomaly_batch_size_rows_sum", route=route) == total
    assert of_model(samples, "anomaly_inference_duration_seconds_count", operation="score") == 7
    assert of_model(samples, "anomaly_inference_duration_seconds_count", operation="explain") == 1
    assert of_model(samples, "anomaly_inference_duration_seconds_sum", operation="score") > 0


async def test_a_non_finite_score_is_an_anomaly_in_the_top_bucket(store: Path, manifest: Manifest) -> None:
    huge = np.full(manifest.n_sensors, 3.0e38, dtype=np.float32)  # overflows inside the graph
    async with Serving(store) as client:
        answer = (await client.post("/v1/score", json={"values": huge.tolist()})).json()
        samples = await scrape(client)
    assert answer["is_anomaly"] is True
    assert of_model(samples, "anomaly_score_threshold_ratio_bucket", le="1000.0") == 0
    assert of_model(samples, "anomaly_score_threshold_ratio_bucket", le="+Inf") == 1
    assert np.isfinite(of_model(samples, "anomaly_score_threshold_ratio_sum"))


async def test_route_labels_are_templates_and_unknown_paths_share_one(store: Path) -> None:
    async with Serving(store) as client:
        for path in ("/wp-login.php", "/v1/score/../../etc", "/a/b/c/d/1234"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/v1/score")).status_code == 405
        assert (await client.request("BREW", "/healthz")).status_code == 405
        text = (await client.get("/metrics")).text
    samples = parse(text)
    durations = series(samples, "anomaly_http_request_duration_seconds_count")
    routes = {dict(labels)["route"] for labels in durations}
    assert UNMATCHED_ROUTE in routes
    assert all(route.startswith("/") or route == UNMATCHED_ROUTE for route in routes)
    assert "wp-login" not in text and "1234" not in text and "etc" not in text
    unmatched = {"route": UNMATCHED_ROUTE, "method": "GET", "status_class": "4xx"}
    assert value(samples, "anomaly_http_request_duration_seconds_count", **unmatched) == 3
    not_allowed = {"route": "/v1/score", "method": "GET", "status_class": "4xx"}
    assert value(samples, "anomaly_http_request_duration_seconds_count", **not_allowed) == 1
    brew = {"route": "/healthz", "method": "OTHER", "status_class": "4xx"}
    assert value(samples, "anomaly_http_request_duration_seconds_count", **brew) == 1
    assert value(samples, "anomaly_requests_rejected_total", code="not_found") == 3
    assert value(samples, "anomaly_requests_rejected_total", code="method_not_allowed") == 2


async def test_rejections_count_by_code_and_a_crash_is_a_5xx(store: Path, manifest: Manifest) -> None:
    serving = Serving(store, api_keys="k1")
    async with serving as client:

        @serving.app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("bug")

        key = {"Authorization": "Bearer k1"}
        await client.post("/v1/score", json={"values": [0.0] * manifest.n_sensors})  # no key
        await client.post(
            "/v1/score", json={"values": [0.0] * manifest.n_sensors}, headers={"X-API-Key": "x"}
        )
        await client.post("/v1/score", content=b"{", headers=key | {"Content-Type": "application/json"})
        await client.post("/v1/score", json={"values": [0.0, 1.0]}, headers=key)
        await client.post("/v1/score", content=b"1", headers=key | {"Content-Type": "text/plain"})
        await client.post("/v1/admin/reload")
        assert (await client.get("/boom")).status_code == 500
        samples = await scrape(client)
    rejected = {
        dict(labels)["code"]: v for labels, v in series(samples, "anomaly_requests_rejected_total").items()
    }
    assert {code: n for code, n in rejected.items() if n} == {
        "missing_api_key": 1,
        "invalid_api_key": 1,
        "malformed_json": 1,
        "wrong_length": 1,
        "unsupported_media_type": 1,
        "admin_disabled": 1,
        "internal_error": 1,
    }
    crash = {"route": "/boom", "method": "GET", "status_class": "5xx"}
    assert value(samples, "anomaly_http_request_duration_seconds_count", **crash) == 1
    score_4xx = {"route": "/v1/score", "method": "POST", "status_class": "4xx"}
    assert value(samples, "anomaly_http_request_duration_seconds_count", **score_4xx) == 5
    assert of_model(samples, "anomaly_readings_scored_total") == 0


# --- the model's lifecycle ------------------------------------------------------------------------------


async def test_reloads_count_by_outcome_and_model_info_follows_the_version(
    store: Path, tmp_path: Path, manifest: Manifest
) -> None:
    private = copy_store(store, tmp_path / "store")
    publish_copy(private / MODEL_NAME, manifest.version, "v2")
    async with Serving(private, admin_token="t0k") as client:
        auth = {"Authorization": "Bearer t0k"}
        assert (
            await client.post("/v1/admin/reload", json={"version": "v2"}, headers=auth)
        ).status_code == 200
        assert (
            await client.post("/v1/admin/reload", json={"version": "nope"}, headers=auth)
        ).status_code == 409
        samples = await scrape(client)
    assert of_model(samples, "anomaly_model_reloads_total", outcome="success") == 2
    assert of_model(samples, "anomaly_model_reloads_total", outcome="failure") == 1
    assert of_model(samples, "anomaly_model_ready") == 1
    [labels] = series(samples, "anomaly_model_info")
    assert dict(labels)["version"] == "v2"
    assert value(samples, "anomaly_requests_rejected_total", code="version_missing") == 1


async def test_without_a_model_ready_is_zero_and_the_failure_is_counted(tmp_path: Path) -> None:
    async with Serving(tmp_path / "empty") as client:
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.post("/v1/score", json={"values": [1.0]})).status_code == 503
        samples = await scrape(client)
    assert of_model(samples, "anomaly_model_ready") == 0
    assert of_model(samples, "anomaly_model_reloads_total", outcome="failure") == 1
    assert series(samples, "anomaly_model_info") == {}
    assert value(samples, "anomaly_requests_rejected_total", code="current_missing") == 1  # /readyz
    assert value(samples, "anomaly_requests_rejected_total", code="model_unavailable") == 1
    unavailable = {"route": "/v1/score", "method": "POST", "status_class": "5xx"}
    assert value(samples, "anomaly_http_request_duration_seconds_count", **unavailable) == 1


# --- the histogram that takes a batch at once ------------------------------------------------------------


def test_bulk_histogram_matches_prometheus_client_bucket_for_bucket() -> None:
    rng = np.random.default_rng(0)
    observed = np.concatenate([rng.exponential(1.0, 500), [0.0, 0.5, 1.0, 2.0, 1e9]])  # bounds included
    buckets = (0.0, 0.5, 1.0, 2.0, 10.0)
    reference_registry, bulk_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "doc", ("m",), registry=reference_registry, buckets=buckets)
    for x in observed:
        reference.labels("a").observe(float(x))
    bulk = BulkHistogram("h", "doc", ("m",), buckets, bulk_registry)
    bulk.observe_many(("a",), observed[:100])
    bulk.observe_many(("a",), observed[100:400])
    for x in observed[400:]:  # one at a time, as a single reading's request records them
        bulk.observe_one(("a",), float(x))
    expected, got = (
        parse(generate_latest(reference_registry).decode()),
        parse(generate_latest(bulk_registry).decode()),
    )
    assert set(got) == {key for key in expected if not key[0].endswith("_created")}
    for key, v in got.items():
        assert v == pytest.approx(expected[key], rel=1e-12), key


def test_out_of_range_share_counts_strictly_outside_the_training_range(
    store: Path, manifest: Manifest
) -> None:
    from factory_anomaly.app.model import load_model

    model = load_model(store / MODEL_NAME / manifest.version, settings_for(store))
    low = np.asarray(manifest.sensor_low, dtype=np.float32)
    high = np.asarray(manifest.sensor_high, dtype=np.float32)
    x = np.vstack([low, high, (low + high) / 2, low - 1, high + 1]).astype(np.float32)
    x[2, :4] = high[:4] + 1
    assert model.out_of_range_share(x).tolist() == [0.0, 0.0, 4 / manifest.n_sensors, 1.0, 1.0]


# --- the process model -------------------------------------------------------------------------------------


def test_multiprocess_mode_is_refused_at_startup(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "ANOMALY_LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-c", "import factory_anomaly.app.main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "MultiprocessModeRefused" in out.stderr and "one process per container" in out.stderr


def test_one_uvicorn_process_counts_every_request_of_concurrent_clients(
    live: LiveServer, readings: np.ndarray
) -> None:
    """The chosen mode, for real: every scrape of the one process sees every request, however many clients
    and connections sent them (with several workers each scrape would see one worker's share)."""

    def scored(client: httpx.Client) -> float:
        return value(parse(client.get("/metrics").text), "anomaly_readings_scored_total", model=MODEL_NAME)

    def send(i: int) -> bool:
        with live.client(headers=AUTH) as client:
            answer = client.post("/v1/score", json={"values": readings[i % len(readings)].tolist()})
            return answer.status_code == 200

    with live.client() as client:
        before = scored(client)
        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(send, range(120)))
        after = [scored(client) for _ in range(5)]
    assert after == [before + 120] * 5


def test_metrics_is_open_even_with_api_keys(live: LiveServer) -> None:
    with live.client() as client:  # no key; the live server has API keys set
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/model").status_code == 401


def test_concurrent_bulk_observations_lose_nothing() -> None:
    bulk = BulkHistogram("b", "doc", ("m",), (1.0,), CollectorRegistry())

    def work(_: int) -> None:
        for _ in range(200):
            bulk.observe_many(("a",), np.array([0.5, 2.0]))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    [family] = bulk.collect()
    counts = {s.labels["le"]: s.value for s in family.samples if s.name == "b_bucket"}
    assert counts == {"1.0": 800, "+Inf": 1600}
