"""bench/common.py, the one helper module the benchmarks share: what it computes and writes, wrk's summary
read from a stand-in `wrk`, and the rule that benchmarks import nothing from one another."""

from __future__ import annotations

import ast
import http.server
import importlib
import json
import os
import shutil
import stat
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.common import (
    BATCH_BODIES,
    BATCH_ROWS,
    BODY_ROWS,
    ROOT,
    SCORE,
    SINGLE_BODIES,
    command,
    drift_by_day,
    latency_ms,
    markdown_table,
    metric_samples,
    ratio,
    require_wrk,
    v2_batch_binary,
    v2_header,
    write_bodies,
    write_results,
    wrk,
)

BENCH = ROOT / "bench"
BENCHMARKS = sorted(p.stem for p in BENCH.glob("*.py") if "def main(" in p.read_text())

SUMMARY = {
    "requests": 500,
    "duration_us": 2_000_000,
    "bytes": 1,
    "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
    "latency_us": {"p50": 1500, "p90": 2500, "p99": 4000, "max": 9000, "mean": 1700.5},
}


@pytest.fixture
def fake_wrk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `wrk` on PATH that prints the Lua script's summary line from $FAKE_WRK_SUMMARY and records its
    arguments, so the parsing is tested without generating load."""
    script = tmp_path / "wrk"
    script.write_text(
        '#!/bin/sh\nif [ "$1" = -v ]; then echo "wrk 4.1.0 [fake]"; exit 1; fi\n'
        'echo "$@" > "$FAKE_WRK_ARGS"\necho "Running 1s test"\necho "WRK_JSON $FAKE_WRK_SUMMARY"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_WRK_ARGS", str(tmp_path / "args"))
    monkeypatch.setenv("FAKE_WRK_SUMMARY", json.dumps(SUMMARY))
    return tmp_path / "args"


def test_wrk_reads_the_summary_into_rates_and_milliseconds(fake_wrk: Path) -> None:
    assert require_wrk() == "wrk 4.1.0 [fake]"
    r = wrk("http://127.0.0.1:1", SCORE, [Path("a.body"), Path("b.body")], 8, 2.0, None)
    assert r["requests"] == 500 and r["seconds"] == 2.0 and r["requests_per_s"] == 250.0
    assert r["readings_per_s"] == 250.0 * SCORE.rows
    assert (r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"], r["mean_ms"]) == (1.5, 2.5, 4.0, 9.0, 1.7005)
    args = fake_wrk.read_text().split()
    assert args[:4] == ["-t1", "-c8", "-d2s", "--timeout=10s"]
    assert args[-4:] == [SCORE.path, SCORE.content_type, "a.body", "b.body"]


def test_wrk_passes_the_asset_count_to_the_script(fake_wrk: Path) -> None:
    route = replace(SCORE, key="score_asset", assets=16)
    wrk("http://127.0.0.1:1", route, [Path("a.body")], 8, 1.0, None)
    assert fake_wrk.read_text().split()[-4:] == [SCORE.path, SCORE.content_type, "--assets=16", "a.body"]


def test_the_script_sends_each_body_to_every_asset_in_turn(tmp_path: Path) -> None:
    """The real wrk and Lua script against a stdlib server that records what arrives."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make bench installs Debian's)")
    seen: list[tuple[str | None, bytes]] = []

    class Record(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers.get("X-Asset"), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bodies = [tmp_path / "a.body", tmp_path / "b.body"]
    for path, data in zip(bodies, (b"first", b"second"), strict=True):
        path.write_bytes(data)
    try:
        route = replace(SCORE, assets=3)
        wrk(f"http://127.0.0.1:{server.server_address[1]}", route, bodies, 1, 1.0, None)
    finally:
        server.shutdown()
    # wrk asks the script for one request before it starts sending, so the cycle starts one step in
    by_asset = {a: [body for asset, body in seen if asset == a] for a in ("bench-1", "bench-2", "bench-3")}
    assert {asset for asset, _ in seen} == set(by_asset)
    for got in by_asset.values():  # each asset receives the bodies in order, never one twice in a row
        assert len(got) >= 2 and all(a != b for a, b in zip(got, got[1:], strict=False))


def test_wrk_fails_on_any_error_and_without_a_summary(
    fake_wrk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = SUMMARY | {"errors": SUMMARY["errors"] | {"status": 3}}
    monkeypatch.setenv("FAKE_WRK_SUMMARY", json.dumps(errors))
    with pytest.raises(RuntimeError, match="errors"):
        wrk("http://127.0.0.1:1", SCORE, [Path("a.body")], 1, 1, None)
    monkeypatch.setenv("FAKE_WRK_SUMMARY", "")
    fake_wrk.parent.joinpath("wrk").write_text("#!/bin/sh\necho broken\nexit 2\n")
    with pytest.raises(RuntimeError, match=r"wrk failed \(2\)"):
        wrk("http://127.0.0.1:1", SCORE, [Path("a.body")], 1, 1, None)


def test_latency_summary() -> None:
    figures = latency_ms(np.arange(1, 101, dtype=np.float64))
    assert figures["n"] == 100 and figures["max_ms"] == 100.0 and figures["mean_ms"] == 50.5
    assert figures["p50_ms"] == 50.5 and figures["p99_ms"] == pytest.approx(99.01)
    assert latency_ms([1.23456], digits=2)["p90_ms"] == 1.23
    assert latency_ms([]) == {
        "n": 0,
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "mean_ms": None,
    }
    assert ratio(3.0, 2.0) == 1.5 and ratio(None, 2.0) is None and ratio(1.0, 0.0) is None


def test_bodies_carry_the_readings_exactly(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=(BODY_ROWS, 5)).astype(np.float32)
    files = write_bodies(values, tmp_path)
    assert [len(files[k]) for k in ("single", "batch_json", "batch_binary")] == [
        SINGLE_BODIES,
        *[BATCH_BODIES] * 2,
    ]
    single = json.loads(files["single"][1].read_bytes())["values"]
    assert np.array_equal(np.asarray(single, dtype=np.float32), values[1])
    first = values[SINGLE_BODIES : SINGLE_BODIES + BATCH_ROWS]
    assert np.array_equal(
        np.asarray(json.loads(files["batch_json"][0].read_bytes())["vectors"], np.float32), first
    )
    assert np.array_equal(
        np.frombuffer(files["batch_binary"][0].read_bytes(), "<f4").reshape(first.shape), first
    )
    v2 = files["v2_binary"][0].read_bytes()
    header = v2_header(*first.shape)
    assert len(files["v2_binary"]) == BATCH_BODIES and v2.startswith(header)
    assert json.loads(header)["inputs"][0]["parameters"]["binary_data_size"] == first.nbytes
    assert np.array_equal(np.frombuffer(v2[len(header) :], "<f4").reshape(first.shape), first)
    route = v2_batch_binary("m", first.shape[1])
    assert route.path == "/v2/models/m/infer" and route.headers == (
        ("Inference-Header-Content-Length", str(len(header))),
    )
    with pytest.raises(ValueError, match=str(BODY_ROWS)):
        write_bodies(values[:-1], tmp_path)


def test_table_command_json_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = markdown_table(["a", "b", "c"], [["x", 1, "2.50"]], left=2)
    assert table == "| a | b | c |\n|---|---|---:|\n| x | 1 | 2.50 |"
    assert command("bench.load", ["--duration-s", "1"]) == "python -m bench.load --duration-s 1"
    assert command("bench.load", []) == "python -m bench.load"
    out = write_results({"command": "python -m bench.x", "value": 1.5}, tmp_path / "sub" / "x.json")
    assert json.loads(out.read_text()) == {"command": "python -m bench.x", "value": 1.5}
    assert f"written to {out}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="command"):
        write_results({"value": 1}, tmp_path / "y.json")
    text = 'h_sum{route="/a"} 2.0\nh_count{route="/a"} 4.0\n'
    assert metric_samples(text)[("h_count", frozenset({("route", "/a")}))] == 4.0


def test_benchmarks_import_nothing_from_one_another() -> None:
    """Shared pieces live in bench/common.py, under public names: no benchmark imports another one, or a
    private name."""
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench"):
                assert node.module == "bench.common", f"{path.name} imports from {node.module}"
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports private names {private}"
            elif isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.startswith("bench")], path.name


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert f"-m bench.{name}" in module.__doc__ and "--out" in capsys.readouterr().out


# --- drift_by_day -------------------------------------------------------------------------------------------


def test_drift_by_day_replays_the_detector_and_judges_each_day() -> None:
    """Five days of one reading a minute at a 1 % target: 10 flags a day (0.69x), except day 2 (120: 8.3x,
    sustained) and a 30-minute fault episode on day 4 (every reading flagged, labelled anomalous, so day
    4's normal rows stay at 0.71x). The detector turns on in day 2 and is still on at the start of day 3
    (its window is a day); the episode of day 4 is a burst and raises nothing."""
    minute = np.arange(5 * 1440)
    t = minute * 60.0 + 7 * 86_400  # any origin: days count from the first reading's
    day, of_day = minute // 1440, minute % 1440
    flags = np.where(day == 2, of_day % 12 == 0, of_day % 144 == 0)
    episode = (day == 4) & (of_day >= 600) & (of_day < 630)
    flags[episode] = True
    result = drift_by_day(flags, ~episode, t, 0.01)
    assert result["settings"] == {"window_s": 86_400.0, "bucket_s": 300.0, "alpha": 0.01, "min_ratio": 2.0}
    days = result["days"]
    assert [d["day"] for d in days] == [0, 1, 2, 3, 4]
    assert [d["ratio"] for d in days] == pytest.approx(
        [10 / 14.4, 10 / 14.4, 120 / 14.4, 10 / 14.4, 10 / 14.1], abs=1e-4
    )
    assert [d["raised"] for d in days] == [False, False, True, True, False]
    assert (days[4]["rows"], days[4]["normal_rows"], days[4]["normal_flags"]) == (1440, 1410, 10)
    assert result["summary"]["above_3x"] == {"days": 1, "raised": 1, "share": 1.0}
    assert result["summary"]["within_1x"] == {"days": 4, "raised": 1, "share": 0.25}  # day 3: day 2 lingers
    assert result["summary"]["between"] == {"days": 0, "raised": 0, "share": None}


def test_drift_by_day_sorts_by_time_and_refuses_mismatched_input() -> None:
    t = np.arange(3000) * 60.0
    flags = np.arange(3000) % 100 == 0
    forwards = drift_by_day(flags, np.ones(3000, bool), t, 0.01)
    backwards = drift_by_day(flags[::-1], np.ones(3000, bool), t[::-1], 0.01)
    assert forwards == backwards
    with pytest.raises(ValueError, match="one length"):
        drift_by_day(flags, np.ones(10, bool), t, 0.01)
