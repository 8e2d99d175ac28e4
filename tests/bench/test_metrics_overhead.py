"""bench/metrics_overhead.py runs end to end (a smoke run: its figures are not judged here)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.metrics_overhead import main


def test_a_short_run_measures_the_middleware_the_scoring_metrics_and_the_exposition(tmp_path: Path) -> None:
    out = tmp_path / "mo.json"
    assert main(["--requests", "2000", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["middleware_us_per_request"]["with_metrics"] > report["middleware_us_per_request"]["bare"]
    assert set(report["observe_scoring_us"]) == {"1", "1024"} and report["exposition_bytes"] > 0
