"""The registry: one load at a time, failures remembered and reported, a model reference outlives a swap."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.app.errors import InvalidInput, ModelUnavailable, ReloadFailed
from factory_anomaly.app.model import registry as registry_module
from factory_anomaly.app.model.registry import ModelRegistry
from tests.app.conftest import MODEL_NAME, copy_store, publish_copy, settings_for

pytestmark = pytest.mark.anyio

NEW = "20991231T000000Z-0000beef"


@pytest.fixture
def model_dir(store: Path, tmp_path: Path) -> Path:
    return copy_store(store, tmp_path / "store") / MODEL_NAME


async def test_failed_first_load_is_reported_until_a_load_succeeds(
    model_dir: Path, trained_small: Path
) -> None:
    registry = ModelRegistry(settings_for(model_dir.parent))
    with pytest.raises(ModelUnavailable, match="no load has been attempted"):
        registry.require()
    with pytest.raises(ReloadFailed) as caught:
        await registry.load("20000101T000000Z-00000000")
    assert caught.value.code == "version_missing" and caught.value.status == 409
    assert registry.model is None
    assert registry.last_error is not None and registry.last_error.code == "version_missing"
    with pytest.raises(ModelUnavailable, match="version_missing"):
        registry.require()
    swap = await registry.load()
    assert swap.previous_version is None and swap.model.version == trained_small.name
    assert registry.require() is swap.model and registry.last_error is None


async def test_a_model_reference_outlives_the_swap(
    model_dir: Path, trained_small: Path, readings: np.ndarray
) -> None:
    publish_copy(model_dir, trained_small.name, NEW)
    registry = ModelRegistry(settings_for(model_dir.parent))
    await registry.load()
    held = registry.require()
    swap = await registry.load(NEW)
    assert swap.previous_version == trained_small.name
    assert registry.require() is swap.model and held is not swap.model
    assert held.version == trained_small.name
    assert np.array_equal(held.score(readings)[0], swap.model.score(readings)[0])


async def test_loads_run_one_at_a_time_off_the_event_loop(
    model_dir: Path, trained_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_copy(model_dir, trained_small.name, NEW)
    active, peak, threads = 0, 0, set()
    real_load = registry_module.load_model

    def counting_load(*args: object, **kwargs: object) -> object:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        threads.add(threading.get_ident())
        try:
            return real_load(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            active -= 1

    monkeypatch.setattr(registry_module, "load_model", counting_load)
    registry = ModelRegistry(settings_for(model_dir.parent))
    swaps = await asyncio.gather(*(registry.load(v) for v in (NEW, trained_small.name, NEW, None)))
    assert peak == 1
    assert threading.get_ident() not in threads
    assert [s.model.version for s in swaps] == [NEW, trained_small.name, NEW, trained_small.name]


@pytest.mark.parametrize("version", ["..", "../x", "a/b", ".hidden", "-x", "x y", "é", ""])
async def test_invalid_version_names_are_client_errors(model_dir: Path, version: str) -> None:
    registry = ModelRegistry(settings_for(model_dir.parent))
    with pytest.raises(InvalidInput) as caught:
        await registry.load(version)
    assert caught.value.code == "invalid_version" and caught.value.status == 422
    assert registry.last_error is None
