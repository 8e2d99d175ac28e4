"""Is the attention explainer's lead over the error ranking real? A paired bootstrap per fault kind.

HitRate@150 % of attention and of the per-sensor error ranking on the same faulty rows of a labelled
recording, scored through the artifact's ONNX graphs; the difference's 95 % interval comes from resampling
rows (2 000 draws). Default: the shipped model and the test recording `make model` writes. Prints a table
with the command that produced it and writes JSON. The figures, with the command that measured them:
docs/explainer.md, "Measured against the baselines".

    .venv/bin/python -m bench.explainer_bootstrap [--model DIR] [--recording DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, heading, markdown_table, results_head, write_results
from factory_anomaly.training.evaluate import open_model


def hit_rates(ranking: np.ndarray, faults: list[np.ndarray], depth: float = 1.5) -> np.ndarray:
    """Per row: the share of its faulty sensors among its top ⌊depth·k⌋ sensors (k = faulty count)."""
    out = np.empty(len(faults))
    for i, sensors in enumerate(faults):
        top = np.argsort(-ranking[i], kind="stable")[: int(math.floor(depth * sensors.size + 1e-9))]
        out[i] = np.isin(sensors, top).mean()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "model_store" / "factory-ae")
    parser.add_argument("--recording", type=Path, default=ROOT / "runs" / "default-model" / "test")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/explainer_bootstrap.json"))
    args = parser.parse_args(argv)

    model = open_model(args.model)
    fault_sensors = json.loads((args.recording / "fault_sensors.json").read_text())
    rows = sorted(int(r) for r, sensors in fault_sensors.items() if sensors)
    faults = [np.asarray(fault_sensors[str(r)], dtype=np.int64) for r in rows]
    kinds = pd.read_csv(args.recording / "labels.csv")["fault_kind"].to_numpy()[rows]
    readings = np.load(args.recording / "readings.npz")["values"][rows]

    attention = hit_rates(model.attention(readings), faults)
    error = hit_rates(model.score(readings)[1], faults)
    rng = np.random.default_rng(0)
    by_kind: list[dict[str, Any]] = []
    for kind in ["all", *sorted(set(kinds))]:
        chosen = np.ones(len(rows), dtype=bool) if kind == "all" else kinds == kind
        diff = attention[chosen] - error[chosen]
        draws = [diff[rng.integers(diff.size, size=diff.size)].mean() for _ in range(args.draws)]
        low, high = np.percentile(draws, [2.5, 97.5])
        by_kind.append(
            {
                "fault_kind": str(kind),
                "rows": int(chosen.sum()),
                "attention": float(attention[chosen].mean()),
                "error": float(error[chosen].mean()),
                "difference": float(diff.mean()),
                "interval_95": [float(low), float(high)],
            }
        )
    results = results_head("bench.explainer_bootstrap", argv) | {
        "model": str(args.model),
        "recording": str(args.recording),
        "draws": args.draws,
        "by_kind": by_kind,
    }
    print(heading(results))
    print(
        markdown_table(
            ["fault kind", "rows", "attention", "error", "difference", "95 % interval"],
            (
                [r["fault_kind"], r["rows"], f"{r['attention']:.3f}", f"{r['error']:.3f}"]
                + [f"{r['difference']:+.3f}", "[{:+.3f}, {:+.3f}]".format(*r["interval_95"])]
                for r in by_kind
            ),
        )
    )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
