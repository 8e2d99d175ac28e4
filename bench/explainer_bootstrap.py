"""Is the attention explainer's lead over the error ranking real? A paired bootstrap per fault kind.

HitRate@150 % of attention and of the per-sensor error ranking on the same faulty rows of a labelled
recording, scored through the artifact's ONNX graphs; the difference's 95 % interval comes from resampling
rows (2 000 draws). Default: the shipped model and the test recording `make model` writes.

    .venv/bin/python -m bench.explainer_bootstrap [--model DIR] [--recording DIR]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from factory_anomaly.training.evaluate import open_model

ROOT = Path(__file__).resolve().parent.parent


def hit_rates(ranking: np.ndarray, faults: list[np.ndarray], depth: float = 1.5) -> np.ndarray:
    """Per row: the share of its faulty sensors among its top ⌊depth·k⌋ sensors (k = faulty count)."""
    out = np.empty(len(faults))
    for i, sensors in enumerate(faults):
        top = np.argsort(-ranking[i], kind="stable")[: int(math.floor(depth * sensors.size + 1e-9))]
        out[i] = np.isin(sensors, top).mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "model_store" / "factory-ae")
    parser.add_argument("--recording", type=Path, default=ROOT / "runs" / "default-model" / "test")
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()

    model = open_model(args.model)
    fault_sensors = json.loads((args.recording / "fault_sensors.json").read_text())
    rows = sorted(int(r) for r, sensors in fault_sensors.items() if sensors)
    faults = [np.asarray(fault_sensors[str(r)], dtype=np.int64) for r in rows]
    kinds = pd.read_csv(args.recording / "labels.csv")["fault_kind"].to_numpy()[rows]
    readings = np.load(args.recording / "readings.npz")["values"][rows]

    attention = hit_rates(model.attention(readings), faults)
    error = hit_rates(model.score(readings)[1], faults)
    rng = np.random.default_rng(0)
    print(f"{'fault kind':18s} {'rows':>5s} {'attention':>9s} {'error':>6s} {'diff':>7s}  95 % interval")
    for kind in ["all", *sorted(set(kinds))]:
        chosen = np.ones(len(rows), dtype=bool) if kind == "all" else kinds == kind
        diff = attention[chosen] - error[chosen]
        draws = [diff[rng.integers(diff.size, size=diff.size)].mean() for _ in range(args.draws)]
        low, high = np.percentile(draws, [2.5, 97.5])
        print(
            f"{kind:18s} {chosen.sum():5d} {attention[chosen].mean():9.3f} {error[chosen].mean():6.3f} "
            f"{diff.mean():+7.3f}  [{low:+.3f}, {high:+.3f}]"
        )


if __name__ == "__main__":
    main()
