"""The soak harness itself (bench/soak.py, `make soak`), on the session's small model for a few seconds:
its checks pass on a healthy service, and what it reports adds up."""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import main

SECONDS = 6


def test_a_short_soak_passes_and_accounts_for_every_request(trained_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    store, name = trained_small.parent.parent, trained_small.parent.name
    args = ["--minutes", str(SECONDS / 60), "--rate", "60", "--concurrency", "4", "--reload-every-s", "2"]
    args += ["--window-s", "2", "--rss-every-s", "1", "--store", str(store), "--model-name", name]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["passed"] and all(result["checks"].values())
    totals = result["totals"]
    assert totals["sent"] == totals["received"] > 100 and totals["lost"] == 0
    classes = result["by_class"]
    answered = classes["2xx"] + sum(classes["4xx"].values()) + sum(classes["5xx"].values())
    assert answered + sum(classes["transport"].values()) == totals["received"]
    assert set(classes["4xx"]) == {"400", "401", "404", "415", "422"}  # every kind of invalid request
    assert set(result["by_kind"]) >= {"score", "batch_json", "batch_binary", "explain", "reload"}
    versions = result["model"]["versions"]
    assert [r["version"] for r in result["reloads"]] == [versions[1], versions[0]]  # at 2 s and 4 s
    # a request sent a few µs before the end may open one more window
    assert len(result["windows"]) in (SECONDS // 2, SECONDS // 2 + 1)
    counters = result["counters"]
    assert counters["match"] and counters["reloads_success"]["server"] == 3
    assert sum(row["client"] for row in counters["http"]) == totals["received"]
    assert result["rss_mib"]["series"] and result["server"]["exit_code"] in (0, -15)
