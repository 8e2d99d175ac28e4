"""Shadow scoring in process (real lifespan, a private copy of the store): a shadow whose threshold differs
on known rows shows exactly those counts, in its admin status and its metrics; a full queue and a failing
shadow drop readings and say so, and never change an answer; the admin calls load, unload and promote; the
shadow's thread runs at the lowest CPU priority."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi import FastAPI

from factory_anomaly.app.model import Assessment
from factory_anomaly.app.serving.shadow import LOWEST_PRIORITY
from factory_anomaly.artifact import Manifest, read_manifest, write_manifest
from tests.app.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    MODEL_NAME,
    anomalous,
    copy_store,
    publish_copy,
    running,
    serving,
    settings_for,
)

pytestmark = pytest.mark.anyio

SHADOW = "20991231T000000Z-00005had"


@pytest.fixture
def shadow_store(store: Path, manifest: Manifest, tmp_path: Path, readings: np.ndarray,
                 reference: ort.InferenceSession) -> Path:  # fmt: skip
    """A copy of the store with a shadow version whose threshold is the median score of `readings`: it
    flags half the normal readings the serving version passes."""
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    target = publish_copy(model_dir, manifest.version, SHADOW)
    scores = reference.run(["score"], {"readings": readings})[0].astype(np.float64)
    shadowed = read_manifest(target)
    write_manifest(
        replace(shadowed, threshold=replace(shadowed.threshold, value=float(np.median(scores)))), target
    )
    return model_dir.parent


def expected_agreement(scores: np.ndarray, serving: float, shadow: float) -> dict[str, int]:
    """The service's rule, `not score <= threshold` in float64, for both versions."""
    s, h = ~(scores.astype(np.float64) <= serving), ~(scores.astype(np.float64) <= shadow)
    return {"both": int((s & h).sum()), "serving_only": int((s & ~h).sum()),
            "shadow_only": int((~s & h).sum()), "neither": int((~s & ~h).sum())}  # fmt: skip


async def post_batch(app: FastAPI, x: np.ndarray) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        return await client.post("/v1/score/batch", json={"vectors": x.tolist()})


def metric_value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def test_a_shadow_that_disagrees_on_known_rows_shows_exactly_those_counts(
    shadow_store: Path, readings: np.ndarray, manifest: Manifest, reference: ort.InferenceSession
) -> None:
    x = np.concatenate([readings, np.tile(anomalous(manifest), (3, 1))])
    scores = reference.run(["score"], {"readings": x})[0]
    shadow_threshold = read_manifest(shadow_store / MODEL_NAME / SHADOW).threshold.value
    expected = expected_agreement(scores, manifest.threshold.value, shadow_threshold)
    assert expected["shadow_only"] >= 20 and expected["both"] >= 3  # the rows are known to disagree
    async with running(settings_for(shadow_store, shadow_version=SHADOW)) as app:
        answer = await post_batch(app, x)
        single = await post_batch(app, x[:1])  # one more reading, through the same path
        assert app.state.shadow.wait_idle(10)
        status = app.state.shadow.status()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            metrics = (await client.get("/metrics")).text
    assert answer.status_code == single.status_code == 200
    flags = [result["is_anomaly"] for result in answer.json()["results"]]
    assert flags == (scores.astype(np.float64) > manifest.threshold.value).tolist()  # the serving decision
    first = expected_agreement(scores[:1], manifest.threshold.value, shadow_threshold)
    total = {name: expected[name] + first[name] for name in expected}
    assert status["version"] == SHADOW and status["agreement"] == total
    assert status["readings"] == len(x) + 1 and status["dropped"] == {"queue_full": 0, "failed": 0}
    assert status["flag_rate"]["shadow"] == pytest.approx(
        (total["both"] + total["shadow_only"]) / (len(x) + 1)
    )
    for name, count in total.items():
        assert (
            metric_value(metrics, f'anomaly_shadow_readings_total{{agreement="{name}",model="{MODEL_NAME}"}}')
            == count
        )
    assert f'anomaly_shadow_model_info{{model="{MODEL_NAME}",version="{SHADOW}"}} 1.0' in metrics
    # same graph: each shadow score equals the serving one, so every ratio lands in the bucket around 1
    assert metric_value(metrics, 'anomaly_shadow_score_ratio_bucket{le="1.01"') == len(x) + 1
    assert metric_value(metrics, 'anomaly_shadow_score_ratio_bucket{le="0.99"') == 0


async def test_a_full_queue_drops_and_counts_instead_of_waiting(
    shadow_store: Path, readings: np.ndarray
) -> None:
    async with running(settings_for(shadow_store, shadow_version=SHADOW, shadow_queue_rows=4)) as app:
        answer = await post_batch(app, readings[:8])  # 8 rows never fit a queue of 4
        assert app.state.shadow.wait_idle(10)
        status = app.state.shadow.status()
    assert answer.status_code == 200
    assert status["dropped"]["queue_full"] == 8 and status["readings"] == 0


async def test_a_failing_shadow_never_changes_an_answer(shadow_store: Path, readings: np.ndarray) -> None:
    async with running(settings_for(shadow_store)) as app:
        plain = (await post_batch(app, readings[:16])).json()
    async with running(settings_for(shadow_store, shadow_version=SHADOW)) as app:

        class Broken:
            def run(self, *args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("the shadow's graph failed")

        object.__setattr__(app.state.shadow.model, "session", Broken())  # an onnxruntime failure at run time
        shadowed = await post_batch(app, readings[:16])
        assert app.state.shadow.wait_idle(10)
        status = app.state.shadow.status()
    assert shadowed.status_code == 200 and shadowed.json() == plain
    assert status["dropped"]["failed"] == 16 and status["readings"] == 0


async def test_admin_calls_load_unload_and_promote(shadow_store: Path, manifest: Manifest) -> None:
    async with serving(settings_for(shadow_store, admin_token=ADMIN_TOKEN)) as client:
        assert (await client.get("/v1/admin/shadow")).status_code == 401
        empty = (await client.get("/v1/admin/shadow", headers=ADMIN)).json()
        assert empty["version"] is None and empty["readings"] == 0
        nothing = await client.post("/v1/admin/shadow/promote", headers=ADMIN)
        assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "no_shadow"
        missing = await client.post("/v1/admin/shadow", headers=ADMIN, json={"version": "20990101T000000Z-0"})
        assert missing.status_code == 409 and missing.json()["error"]["code"] == "version_missing"
        no_version = await client.post("/v1/admin/shadow", headers=ADMIN, json={})
        assert no_version.status_code == 422 and no_version.json()["error"]["code"] == "missing_field"
        loaded = await client.post("/v1/admin/shadow", headers=ADMIN, json={"version": SHADOW})
        assert loaded.status_code == 200 and loaded.json()["version"] == SHADOW
        assert loaded.json()["target_fpr"] == manifest.threshold.target_fpr
        unloaded = await client.delete("/v1/admin/shadow", headers=ADMIN)
        assert unloaded.json()["version"] is None
        await client.post("/v1/admin/shadow", headers=ADMIN, json={"version": SHADOW})
        promoted = await client.post("/v1/admin/shadow/promote", headers=ADMIN)
        assert promoted.status_code == 200, promoted.text
        assert (
            promoted.json()["version"] == SHADOW and promoted.json()["previous_version"] == manifest.version
        )
        assert (await client.get("/v1/model")).json()["version"] == SHADOW
        assert (await client.get("/v1/admin/shadow", headers=ADMIN)).json()["version"] is None


@pytest.mark.parametrize(
    "version", ["20990101T000000Z-0", "../escape", ""], ids=["missing", "bad-name", "empty"]
)
async def test_a_shadow_that_cannot_load_leaves_serving_alone(
    shadow_store: Path, readings: np.ndarray, version: str
) -> None:
    async with running(settings_for(shadow_store, shadow_version=version)) as app:
        assert app.state.shadow.model is None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            assert (await client.get("/readyz")).status_code == 200
        assert (await post_batch(app, readings[:4])).status_code == 200


async def test_a_shadow_with_other_sensors_is_refused(shadow_store: Path, manifest: Manifest) -> None:
    """Its runs would fail, or compare other sensors: 409 `shadow_mismatch`, the shadow unchanged."""
    model_dir = shadow_store / MODEL_NAME
    other = publish_copy(model_dir, manifest.version, "20991231T000002Z-000other")
    renamed = read_manifest(other)
    write_manifest(replace(renamed, sensor_names=tuple(reversed(renamed.sensor_names))), other)
    async with serving(settings_for(shadow_store, admin_token=ADMIN_TOKEN)) as client:
        refused = await client.post("/v1/admin/shadow", headers=ADMIN, json={"version": other.name})
        status = (await client.get("/v1/admin/shadow", headers=ADMIN)).json()
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "shadow_mismatch"
    assert status["version"] is None


async def test_every_scoring_path_is_shadowed(shadow_store: Path, readings: np.ndarray) -> None:
    """/v1/score micro-batched, /v1/score/batch and V2 infer each hand their readings to the shadow."""
    settings = settings_for(shadow_store, shadow_version=SHADOW, microbatch_max_batch=4)
    v2 = {"inputs": [{"name": "readings", "datatype": "FP32", "shape": [3, readings.shape[1]],
                      "data": readings[:3].ravel().tolist()}]}  # fmt: skip
    async with running(settings) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            single = await client.post("/v1/score", json={"values": readings[0].tolist()})
            infer = await client.post(f"/v2/models/{MODEL_NAME}/infer", json=v2)
        batch = await post_batch(app, readings[:5])
        assert app.state.shadow.wait_idle(10)
        status = app.state.shadow.status()
    assert single.status_code == infer.status_code == batch.status_code == 200
    assert status["readings"] == 1 + 3 + 5


async def test_work_queued_for_an_unloaded_shadow_is_skipped(
    shadow_store: Path, readings: np.ndarray
) -> None:
    async with running(settings_for(shadow_store, shadow_version=SHADOW)) as app:
        shadow = app.state.shadow
        decisions = Assessment(np.ones(8, np.float32), np.zeros(8, bool), {})
        with shadow._ready:  # the worker held back while readings queue; then the shadow goes
            for _ in range(3):
                shadow.offer(readings[:8], decisions)
            queued = shadow._queued_rows
            shadow.unload()
        assert shadow.wait_idle(10)
        status = shadow.status()
    assert queued == 24
    assert status["version"] is None and status["readings"] == 0 and status["pending"] == 0
    assert status["dropped"] == {"queue_full": 0, "failed": 0}


async def test_the_shadow_thread_runs_at_the_lowest_priority(shadow_store: Path) -> None:
    """SCHED_IDLE: it runs only when no other thread wants the CPU (and nice 19 besides)."""
    async with running(settings_for(shadow_store, shadow_version=SHADOW)) as app:
        assert app.state.shadow.model is not None
        (thread,) = [t for t in threading.enumerate() if t.name == "shadow-scorer"]
        policy = os.sched_getscheduler(thread.native_id)
        stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of stat: nice
        serving_policy = os.sched_getscheduler(threading.get_native_id())
    assert policy == os.SCHED_IDLE and nice == LOWEST_PRIORITY
    assert serving_policy == os.SCHED_OTHER  # the rest of the process as it was
