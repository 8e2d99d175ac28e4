"""What the service keeps in memory: freed heap pages really go back to the OS (glibc), as reloads and the
periodic trim rely on; one malloc arena when limited; no copy of a CPU session's serialized graph."""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry

from factory_anomaly.app import main
from factory_anomaly.app.config import Settings
from factory_anomaly.app.model import load_model
from factory_anomaly.app.model.memory import release_freed_memory
from factory_anomaly.app.observability.metrics import Metrics


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library to trim")
def test_freed_small_allocations_are_returned() -> None:
    release_freed_memory()
    before = _rss_mib()
    # ~200 MiB in 4 KiB blocks: below glibc's mmap threshold, so they come from the heap, which keeps
    # their pages after free() until trimmed (freeing in reverse leaves no live block on top of the heap)
    blocks = [np.ones(512) for _ in range(50_000)]
    held = _rss_mib()
    assert held - before > 150
    del blocks
    assert release_freed_memory()
    assert _rss_mib() - before < 50, (before, held, _rss_mib())


ARENAS_SCRIPT = """
import ctypes, sys, tempfile, threading
import numpy as np
from factory_anomaly.app.model.memory import limit_malloc_arenas

limited = limit_malloc_arenas(int(sys.argv[1]))
gate = threading.Barrier(4)

def allocate():
    gate.wait()  # all four alive at once, so none can reuse another's arena
    blocks = [np.ones(512) for _ in range(2_000)]
    gate.wait()
    del blocks

threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(limited, open(out.name).read().count("<heap nr="))
"""


def _arenas(arenas: int, **env: str) -> tuple[str, int]:
    """Whether `limit_malloc_arenas(arenas)` set a limit, and the arenas four allocating threads used."""
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    run = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, str(arenas)], env=environment,
                         capture_output=True, text=True, check=True)  # fmt: skip
    limited, heaps = run.stdout.split()
    return limited, int(heaps)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_one_arena_serves_every_thread_when_limited() -> None:
    assert _arenas(1) == ("True", 1)
    limited, heaps = _arenas(0)  # 0: glibc's default, an arena per allocating thread
    assert limited == "False" and heaps >= 4


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_an_operators_malloc_arena_max_wins() -> None:
    limited, heaps = _arenas(1, MALLOC_ARENA_MAX="3")
    assert limited == "False" and heaps == 3


@pytest.mark.anyio
async def test_the_trim_runs_only_after_rounds_that_served_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The round's trim is counted, not performed: what a trim gives back is tested above."""
    trims: list[int] = []

    def counted() -> bool:
        trims.append(1)
        return True

    monkeypatch.setattr(main, "release_freed_memory", counted)
    metrics = Metrics(CollectorRegistry(), "factory-ae")
    task = asyncio.create_task(main.trim_memory(metrics, 0.02))
    try:
        await asyncio.sleep(0.1)
        assert trims == []  # idle: nothing was freed, nothing to give back
        metrics.observe_request({"method": "POST"}, 200, 0.001)
        await asyncio.sleep(0.1)
        assert trims == [1]
        await asyncio.sleep(0.1)
        assert trims == [1]  # idle again
    finally:
        task.cancel()


def test_onnxruntime_still_keeps_the_graph_bytes_of_a_session_built_from_bytes(trained_small: Path) -> None:
    """Pins the private attribute the loader clears: an onnxruntime that renames it fails here."""
    graph = (trained_small / "model.onnx").read_bytes()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    assert session._model_bytes is graph


def test_a_cpu_version_keeps_no_copy_of_its_graphs_and_still_scores(trained_small: Path) -> None:
    model = load_model(trained_small, Settings(provider="cpu"))
    assert model.explainer is not None
    for session in (model.session, model.explainer):
        assert session._model_bytes is None
        assert session._enable_fallback is False  # nothing to rebuild it from, and no provider to fall to
    x = np.zeros((3, model.manifest.n_sensors), np.float32)
    again = load_model(trained_small, Settings(provider="cpu"))
    assert np.array_equal(model.score(x)[0], again.score(x)[0])
    assert np.isfinite(model.explain(x[:1])[0]).all()
