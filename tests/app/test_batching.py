"""Micro-batching (app.batching): concurrent single readings share onnxruntime runs, each request gets
exactly its own row, a full queue is a clear 503, and the HTTP route answers as it does unbatched.

Real parts throughout: the session's small artifact in a real onnxruntime session and a real thread pool.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import Overloaded
from factory_anomaly.app.model import Assessment, LoadedModel, load_model
from factory_anomaly.app.serving.batcher import MicroBatcher
from factory_anomaly.app.serving.pool import InferencePool
from factory_anomaly.artifact import Manifest
from tests.app.conftest import AUTH, anomalous, running, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def model(trained_small: Path) -> LoadedModel:
    return load_model(trained_small, Settings(provider="cpu"))


class Recorder:
    """The batcher's observer: what each run held."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int, list[float]]] = []  # (model id, rows, waits)

    def __call__(self, model: LoadedModel, x: np.ndarray, assessment: Assessment, waits: list[float]) -> None:
        assert len(assessment.scores) == len(x) == len(waits)
        self.runs.append((id(model), len(x), waits))


def batcher(pool: InferencePool, recorder: Recorder, **overrides: Any) -> MicroBatcher:
    options: dict[str, Any] = dict(max_batch=64, max_delay_s=0.0, queue_size=256, workers=1, top_k=3)
    return MicroBatcher(pool, **(options | overrides), observe=recorder)


async def test_concurrent_readings_share_runs_and_each_gets_its_own_row(
    model: LoadedModel, readings: np.ndarray, manifest: Manifest
) -> None:
    # 31 normal readings the model does not flag (at the small model's 2 % target some normal rows are
    # flagged, as promised), then row 31, anomalous
    quiet = readings[~model.assess(readings, top_k=0).is_anomaly][:31]
    assert len(quiet) == 31
    x = np.concatenate([quiet, anomalous(manifest)[None, :]])
    expected = model.assess(x, top_k=3)
    pool, recorder = InferencePool(2), Recorder()
    mb = batcher(pool, recorder, max_delay_s=0.05)
    try:
        results = await asyncio.gather(*(mb.assess(model, x[i : i + 1]) for i in range(len(x))))
    finally:
        await mb.close()
        pool.close()
    assert sum(rows for _, rows, _ in recorder.runs) == len(x)
    assert max(rows for _, rows, _ in recorder.runs) > 1, recorder.runs  # they did share runs
    for i, result in enumerate(results):
        # one row of a batched run: the same float32 score as the whole batch gives it, up to the GEMM's
        # blocking for another batch size
        np.testing.assert_allclose(result.scores, expected.scores[i : i + 1], rtol=1e-5)
        assert result.is_anomaly.tolist() == [bool(expected.is_anomaly[i])]
    assert results[31].is_anomaly[0]
    assert [name for name, _ in results[31].top_sensors[0]] == [n for n, _ in expected.top_sensors[31]]
    assert all(not r.top_sensors for r in results[:31])


async def test_max_batch_bounds_every_run(model: LoadedModel, readings: np.ndarray) -> None:
    pool, recorder = InferencePool(1), Recorder()
    mb = batcher(pool, recorder, max_batch=4, max_delay_s=0.05)
    try:
        await asyncio.gather(*(mb.assess(model, readings[i : i + 1]) for i in range(10)))
    finally:
        await mb.close()
        pool.close()
    assert sum(rows for _, rows, _ in recorder.runs) == 10
    assert max(rows for _, rows, _ in recorder.runs) == 4


async def test_a_lone_reading_is_not_held_back_without_a_delay(
    model: LoadedModel, readings: np.ndarray
) -> None:
    pool, recorder = InferencePool(1), Recorder()
    mb = batcher(pool, recorder, max_delay_s=0.0)
    try:
        for i in range(3):
            result = await mb.assess(model, readings[i : i + 1])
            np.testing.assert_allclose(result.scores, model.assess(readings[i : i + 1], 3).scores, rtol=1e-6)
    finally:
        await mb.close()
        pool.close()
    assert [rows for _, rows, _ in recorder.runs] == [1, 1, 1]
    assert all(wait < 0.5 for _, _, waits in recorder.runs for wait in waits)


async def test_readings_of_two_models_never_share_a_run(trained_small: Path, readings: np.ndarray) -> None:
    """A reload between two arrivals: each request finishes on the model it started with."""
    first, second = (load_model(trained_small, Settings(provider="cpu")) for _ in range(2))
    pool, recorder = InferencePool(1), Recorder()
    mb = batcher(pool, recorder, max_delay_s=0.05)
    try:
        models = [first, second] * 4
        await asyncio.gather(*(mb.assess(m, readings[i : i + 1]) for i, m in enumerate(models)))
    finally:
        await mb.close()
        pool.close()
    assert {model_id for model_id, _, _ in recorder.runs} == {id(first), id(second)}
    assert sum(rows for model_id, rows, _ in recorder.runs if model_id == id(first)) == 4


async def test_a_full_queue_is_refused_at_once_and_the_rest_are_answered(
    model: LoadedModel, readings: np.ndarray
) -> None:
    pool, recorder = InferencePool(1), Recorder()
    mb = batcher(pool, recorder, max_batch=2, queue_size=3)
    release = threading.Event()
    blocker = asyncio.ensure_future(pool.run(release.wait))  # the only pool thread is busy
    try:
        # the first two make a batch that waits for the pool thread; three more fill the queue
        accepted = [asyncio.ensure_future(mb.assess(model, readings[i : i + 1])) for i in range(2)]
        await asyncio.sleep(0.02)
        assert mb.waiting == 0
        accepted += [asyncio.ensure_future(mb.assess(model, readings[i : i + 1])) for i in range(2, 5)]
        await asyncio.sleep(0.02)
        assert mb.waiting == 3
        with pytest.raises(Overloaded) as refused:
            await mb.assess(model, readings[5:6])
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        release.set()
        results = await asyncio.gather(*accepted)
    finally:
        release.set()
        await blocker
        await mb.close()
        pool.close()
    expected = model.assess(readings[:5], 0).scores
    np.testing.assert_allclose(np.concatenate([r.scores for r in results]), expected, rtol=1e-5)


async def test_a_cancelled_request_does_not_disturb_its_batch(
    model: LoadedModel, readings: np.ndarray
) -> None:
    pool, recorder = InferencePool(1), Recorder()
    mb = batcher(pool, recorder, max_delay_s=0.05)
    try:
        tasks = [asyncio.ensure_future(mb.assess(model, readings[i : i + 1])) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        results = await asyncio.gather(tasks[0], tasks[2], tasks[3])
    finally:
        await mb.close()
        pool.close()
    assert tasks[1].cancelled()
    assert [rows for _, rows, _ in recorder.runs] == [3]  # the cancelled reading was not even run
    expected = model.assess(readings[[0, 2, 3]], 0).scores
    np.testing.assert_allclose(np.concatenate([r.scores for r in results]), expected, rtol=1e-5)


async def test_invalid_configuration_is_refused(model: LoadedModel) -> None:
    pool = InferencePool(1)
    try:
        for bad in (dict(max_batch=1), dict(max_delay_s=-1.0), dict(queue_size=0), dict(workers=0)):
            with pytest.raises(ValueError):
                batcher(pool, Recorder(), **bad)
    finally:
        pool.close()


def micro_batched(store: Path, **overrides: Any) -> Settings:
    options: dict[str, Any] = dict(microbatch_max_batch=16, microbatch_max_delay_us=2000)
    return settings_for(
        store, api_keys=[AUTH["Authorization"].removeprefix("Bearer ")], **(options | overrides)
    )


async def test_http_answers_match_the_unbatched_route_and_metrics_count_the_runs(
    store: Path, readings: np.ndarray, manifest: Manifest
) -> None:
    x = np.concatenate([readings[:23], anomalous(manifest)[None, :]])
    bodies = [{"values": row.tolist(), "id": f"r{i}"} for i, row in enumerate(x)]

    async def answers(settings: Settings) -> tuple[list[dict[str, Any]], str]:
        async with running(settings) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                responses = await asyncio.gather(
                    *(client.post("/v1/score", json=b, headers=AUTH) for b in bodies)
                )
                assert [r.status_code for r in responses] == [200] * len(bodies)
                return [r.json() for r in responses], (await client.get("/metrics")).text

    batched, metrics = await answers(micro_batched(store))
    plain, _ = await answers(micro_batched(store, microbatch_max_batch=0))
    assert [a["id"] for a in batched] == [f"r{i}" for i in range(len(x))]
    flags = [a["is_anomaly"] for a in plain]
    assert [a["is_anomaly"] for a in batched] == flags and flags[-1] is True
    np.testing.assert_allclose([a["score"] for a in batched], [a["score"] for a in plain], rtol=1e-5)

    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if not line.startswith("#")
    }
    label = '{model="small-ae"}'
    assert samples[f"anomaly_microbatch_size_rows_sum{label}"] == len(x)
    assert samples[f"anomaly_microbatch_queue_wait_seconds_count{label}"] == len(x)
    assert samples[f"anomaly_microbatch_size_rows_count{label}"] < len(x)  # some runs were shared
    assert samples[f"anomaly_readings_scored_total{label}"] == len(x)
    assert samples[f"anomaly_readings_anomalous_total{label}"] == sum(flags)
    assert samples['anomaly_batch_size_rows_count{model="small-ae",route="/v1/score"}'] == len(x)


async def test_http_overload_is_503_overloaded_with_retry_after(store: Path, readings: np.ndarray) -> None:
    settings = micro_batched(
        store,
        microbatch_max_batch=2,
        microbatch_max_delay_us=500_000,  # the first reading waits for the second: they run as a batch
        microbatch_queue_size=1,
        scoring_threads=1,
    )
    release = threading.Event()
    async with running(settings) as app:
        blocker = asyncio.ensure_future(app.state.pool.run(release.wait))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
                body = {"values": readings[0].tolist()}
                waiting = []
                # two readings make a batch stuck behind the blocked thread, the next one waits in the
                # queue; should a stalled machine let one run alone, the next ones are sent the same way
                for _ in range(20):
                    waiting.append(asyncio.ensure_future(client.post("/v1/score", json=body, headers=AUTH)))
                    await asyncio.sleep(0.03)
                    if app.state.batcher.waiting == 1:
                        break
                assert app.state.batcher.waiting == 1
                refused = await client.post("/v1/score", json=body, headers=AUTH)
                assert refused.status_code == 503
                assert refused.headers["Retry-After"] == "1"
                assert refused.json()["error"]["code"] == "overloaded"
                release.set()
                assert [r.status_code for r in await asyncio.gather(*waiting)] == [200] * len(waiting)
                after = await client.post("/v1/score", json=body, headers=AUTH)
                assert after.status_code == 200
        finally:
            release.set()
            await blocker


async def test_close_answers_the_readings_a_worker_holds(model: LoadedModel, readings: np.ndarray) -> None:
    """Shutdown with a batch in flight: its requests get an error, none is left waiting forever."""
    pool, recorder = InferencePool(1), Recorder()
    mb = batcher(pool, recorder, max_batch=8, max_delay_s=5.0)  # the worker holds what it collects
    held = [asyncio.ensure_future(mb.assess(model, readings[i : i + 1])) for i in range(2)]
    await asyncio.sleep(0.05)
    assert mb.waiting == 0 and not any(task.done() for task in held)
    await mb.close()
    pool.close()
    for task in held:
        with pytest.raises(RuntimeError, match="shutting down"):
            await asyncio.wait_for(task, 1.0)
