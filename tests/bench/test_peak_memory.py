"""bench.peak_memory as a smoke run on the shipped model, with a refused body of 12 MiB (just over
MAX_BATCH rows): every step answers as it should and its memory is read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT


def test_a_short_run_reads_the_peak_of_every_step(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    argv = [sys.executable, "-m", "bench.peak_memory", "--body-mib", "12", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = json.loads(out.read_text())["steps"]
    statuses = [[], [200], [413], [413, 413], [200] * 4, [413], [413, 413], [413], [413, 413]]
    assert [step["statuses"] for step in steps] == statuses
    assert all(step["peak_mib"] >= step["rss_mib"] > 0 for step in steps)
    assert steps[2]["body_mib"] < 12 and "peak MiB" in done.stdout
