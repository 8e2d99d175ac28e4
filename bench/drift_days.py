"""Does the calibration-drift signal say what it should, day by day? An offline replay on real servers.

`bench.common.drift_by_day` replays a per-reading flag series through the service's own detector
(`factory_anomaly.app.serving.drift`) in time order and reports, for each day (86 400 s), the realised
flag rate on the rows labelled normal and whether the signal was raised at any moment of that day; then
the goal's summary: among the days whose normal rows were flagged at more than 3x the target, the share
raised (goal >= 90 %), and among the days within the target (<= 1x), the share raised (goal <= 10 %).
It lives in bench/common.py so that the quality benchmark replays the real model's flags through it too
(benchmarks import nothing from one another).

The command runs it on the SMD server machines (`../shared/data/smd-machine-*`, one row a minute, a target
of 1e-2 per reading) with a plain stand-in score, so the rule can be checked before a real model exists:
PCA (components explaining 90 % of the variance) fitted on each machine's standardised first 70 % of
`train.parquet`, the threshold the (1 - 1e-2) quantile of the scores of the last 30 %, flags on
`test.parquet`. Then the same replay on synthetic flags (each reading flagged independently at 1x to 5x
the target, 30 days, seeded) at the two rates the defaults are meant for: one reading a minute at 1e-2 and
one a second at 1e-4. Prints the tables with the command that produced them and writes JSON. The figures,
with the command: docs/serving.md, "Calibration drift".

    .venv/bin/python -m bench.drift_days [--data DIR] [--out bench/results/drift_days.json]
        [--window-s S] [--bucket-s S] [--alpha A] [--min-ratio R]   (the service's defaults otherwise)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DAY_S, ROOT, drift_by_day, heading, markdown_table, results_head, write_results
from factory_anomaly.app.serving.drift import DriftSettings

SMD_MACHINES = ("smd-machine-1-7", "smd-machine-2-2", "smd-machine-2-7", "smd-machine-3-4")
SMD_ROW_S = 60.0
SMD_TARGET_FPR = 1e-2
STAND_IN_VARIANCE = 0.90
STAND_IN_FIT_SHARE = 0.70
SYNTHETIC_PLANTS = ((60.0, 1e-2), (1.0, 1e-4))
"""(seconds between readings, target_fpr) of the synthetic replays."""
SYNTHETIC_RATIOS = (1.0, 2.0, 3.0, 5.0)
SYNTHETIC_DAYS = 30


def stand_in_flags(machine_dir: Path, target_fpr: float = SMD_TARGET_FPR) -> tuple[np.ndarray, np.ndarray]:
    """The PCA stand-in's flags on `machine_dir`'s test.parquet and its normal-row mask (label == 0)."""
    import pandas as pd
    from sklearn.decomposition import PCA

    train = pd.read_parquet(machine_dir / "train.parquet").to_numpy(dtype=np.float64)
    test = pd.read_parquet(machine_dir / "test.parquet")
    labels = test.pop("label").to_numpy()
    fit_rows = int(len(train) * STAND_IN_FIT_SHARE)
    fit, held_out = train[:fit_rows], train[fit_rows:]
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std[std == 0] = 1.0
    pca = PCA(n_components=STAND_IN_VARIANCE, svd_solver="full").fit((fit - mean) / std)

    def score(x: np.ndarray) -> np.ndarray:
        z = (x - mean) / std
        residual = z - pca.inverse_transform(pca.transform(z))
        return np.asarray(np.sum(residual**2, axis=1))

    threshold = np.quantile(score(held_out), 1 - target_fpr)
    return score(test.to_numpy(dtype=np.float64)) > threshold, labels == 0


def synthetic_days(
    row_s: float, target_fpr: float, ratio: float, days: int, settings: DriftSettings, seed: int
) -> dict[str, Any]:
    """`drift_by_day` on `days` days of one reading every `row_s` seconds, each flagged independently with
    probability ratio x target_fpr (all normal): the share of days raised, the first day (its window still
    filling) included."""
    rng = np.random.default_rng(seed)
    n = int(days * DAY_S / row_s)
    flags = rng.random(n) < ratio * target_fpr
    replay = drift_by_day(flags, np.ones(n, dtype=bool), np.arange(n) * row_s, target_fpr, settings)
    raised = [d["raised"] for d in replay["days"]]
    return {"row_s": row_s, "target_fpr": target_fpr, "ratio": ratio, "days": len(raised),
            "raised": sum(raised), "share": round(sum(raised) / len(raised), 4)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("bench/results/drift_days.json"))
    defaults = DriftSettings()
    parser.add_argument("--window-s", type=float, default=defaults.window_s)
    parser.add_argument("--bucket-s", type=float, default=defaults.bucket_s)
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    parser.add_argument("--min-ratio", type=float, default=defaults.min_ratio)
    args = parser.parse_args(argv)

    settings = DriftSettings(args.window_s, args.bucket_s, args.alpha, args.min_ratio)
    results = results_head("bench.drift_days", argv)
    results |= {
        "stand_in": f"PCA ({STAND_IN_VARIANCE:.0%} variance) on the standardised first "
        f"{STAND_IN_FIT_SHARE:.0%} of train.parquet; threshold the (1 - target) quantile of the rest",
        "row_s": SMD_ROW_S,
        "machines": {},
    }
    rows = []
    totals = {"above_3x": [0, 0], "within_1x": [0, 0]}
    for machine in SMD_MACHINES:
        flags, normal = stand_in_flags(args.data / machine)
        replay = drift_by_day(flags, normal, np.arange(len(flags)) * SMD_ROW_S, SMD_TARGET_FPR, settings)
        results["machines"][machine] = replay
        s = replay["summary"]
        for key in totals:
            totals[key][0] += s[key]["days"]
            totals[key][1] += s[key]["raised"]
        ratios = [d["ratio"] for d in replay["days"] if d["ratio"] is not None]
        rows.append(
            [
                machine,
                len(replay["days"]),
                f"{min(ratios):.2f}-{max(ratios):.1f}",
                f"{s['above_3x']['raised']}/{s['above_3x']['days']}",
                f"{s['between']['raised']}/{s['between']['days']}",
                f"{s['within_1x']['raised']}/{s['within_1x']['days']}",
            ]
        )
    results["summary"] = {
        key: {"days": days, "raised": hit, "share": round(hit / days, 4) if days else None}
        for key, (days, hit) in totals.items()
    }
    up, quiet = totals["above_3x"], totals["within_1x"]
    rows.append(["all", "", "", f"{up[1]}/{up[0]}", "", f"{quiet[1]}/{quiet[0]}"])
    print(heading(results))
    print(
        f"# target {SMD_TARGET_FPR:g} per reading, one reading every {SMD_ROW_S:g} s; window "
        f"{settings.window_s:g} s, bucket {settings.bucket_s:g} s, alpha {settings.alpha:g}, min ratio "
        f"{settings.min_ratio:g}"
    )
    header = ["machine", "days", "day ratio range", "> 3x raised", "1-3x raised", "<= 1x raised"]
    print(markdown_table(header, rows))

    synthetic = [
        synthetic_days(row_s, target, ratio, SYNTHETIC_DAYS, settings, seed)
        for seed, (row_s, target, ratio) in enumerate(
            (row_s, target, ratio) for row_s, target in SYNTHETIC_PLANTS for ratio in SYNTHETIC_RATIOS
        )
    ]
    results["synthetic"] = synthetic
    print(f"\n# synthetic: every reading flagged independently at ratio x target, {SYNTHETIC_DAYS} days")
    header = ["one reading every", "target", *(f"{r:g}x: days raised" for r in SYNTHETIC_RATIOS)]
    table = []
    for row_s, target in SYNTHETIC_PLANTS:
        cells = [
            f"{r['raised']}/{r['days']}"
            for r in synthetic
            if (r["row_s"], r["target_fpr"]) == (row_s, target)
        ]
        table.append([f"{row_s:g} s", f"{target:g}", *cells])
    print(markdown_table(header, table))
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
