"""bench/profile.py: the real server sampled by py-spy under wrk load (a 2-second smoke run), and the
summary it prints counted from the raw stacks as py-spy writes them."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from bench.profile import flame_graph_svg, main, py_spy, summarise

RAW = """\
run (uvloop/__init__.py:92);app (x.py:1);score (factory_anomaly/app/x.py:2);run (onnxruntime/y.py:3) 6
run (uvloop/__init__.py:92);app (x.py:1);score (factory_anomaly/app/x.py:2) 2
run (uvloop/__init__.py:92);app (x.py:1);log (logging/__init__.py:9) 2
"""


def test_the_summary_counts_inclusive_and_self_shares() -> None:
    summary = summarise(RAW)
    assert summary["samples"] == 10
    inclusive = {e["frame"]: e["share"] for e in summary["inclusive"]}
    own = {e["frame"]: e["share"] for e in summary["self"]}
    assert inclusive["app (x.py:1)"] == 1.0 and inclusive["score (factory_anomaly/app/x.py:2)"] == 0.8
    assert own["run (onnxruntime/y.py:3)"] == 0.6 and own["score (factory_anomaly/app/x.py:2)"] == 0.2
    svg = ElementTree.fromstring(flame_graph_svg(RAW))
    assert len(svg) == 5  # a box per distinct frame path


@pytest.mark.skipif(py_spy() is None or shutil.which("wrk") is None, reason="needs py-spy and wrk")
def test_a_short_profile_of_the_real_server(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    assert main(["--seconds", "2", "--warmup-s", "1", "--connections", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["samples"] > 100 and result["load"]["requests"] > 0
    frames = [e["frame"] for e in result["self"]]
    assert any(f.startswith("Session.run (onnxruntime/") for f in frames)  # the graph's own time is seen
    assert Path(result["flame_graph"]).exists() and Path(result["raw"]).exists()
