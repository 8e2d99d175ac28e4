"""Command line: `python -m factory_anomaly.training {synth,train,explain,evaluate,recalibrate}`.

Other tooling depends on these command and option names (see README). Every bad input exits with
status 2 and a one-line `error: ...` on stderr naming what was wrong; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from factory_anomaly.artifact import MANIFEST_FILE
from factory_anomaly.training.data import DataError

EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser = argparse.ArgumentParser(
        prog="python -m factory_anomaly.training", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    synth = command("synth", "simulate a factory plant with injected, labelled faults")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--rows", type=_positive_int, default=20_000, help="readings (1 per second)")
    synth.add_argument("--sensors", type=_positive_int, default=1000)
    synth.add_argument("--anomaly-rate", type=float, default=0.1, help="share of rows inside fault episodes")
    synth.add_argument("--seed", type=int, default=0, help="seed of this run of the plant")
    synth.add_argument(
        "--plant-seed", type=int, default=0, help="seed of the plant itself (layout, responses)"
    )
    synth.add_argument(
        "--episode-gap",
        type=_positive_int,
        default=10,
        help="normal readings at least around each fault episode (default 10); a wider gap spreads the "
        "episodes over the kinds by count, for judging alarm episodes one fault at a time",
    )
    synth.add_argument(
        "--formats", default="csv,parquet,npz", help="comma-separated subset of csv,parquet,npz"
    )

    train = command("train", "train the autoencoder and calibrate its threshold")
    train.add_argument(
        "--data", type=Path, required=True, help="CSV, Parquet, NPY or NPZ; rows in time order"
    )
    train.add_argument(
        "--out",
        type=Path,
        required=True,
        help="model directory <store>/<name>: a new <version>/ is published there and CURRENT points at it",
    )
    train.add_argument("--val-data", type=Path, help="held-out recording for early stopping and calibration")
    train.add_argument("--epochs", type=_positive_int, help="maximum epochs (early stopping may end sooner)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--target-fpr", type=_fraction, help="target false-alarm rate per reading (default 1e-4)"
    )
    train.add_argument(
        "--accept-tightest-target",
        action="store_true",
        help="when the data cannot support --target-fpr, calibrate for the tightest target it supports "
        "(recorded in the manifest) instead of refusing",
    )
    train.add_argument(
        "--aggregate",
        help="how per-sensor errors become the score: mean (the seed's), max, or mean+max (default)",
    )
    train.add_argument(
        "--model",
        help="autoencoder variant: ae (the seed's, default), dae (denoising), vae (variational); "
        "docs/training.md, 'Model variants'",
    )
    train.add_argument(
        "--ensemble",
        help="what scores beside the autoencoder, the larger of the two calibrated scores counting: none "
        "(default), iforest (an IsolationForest) or latent (the bottleneck code's distance from the normal "
        "codes); docs/training.md, 'Model variants'",
    )
    train.add_argument(
        "--dae-noise", type=float, help="dae: std of the Gaussian input noise, standardised (default 0.2)"
    )
    train.add_argument(
        "--dae-mask", type=float, help="dae: share of input entries masked to the mean (default 0)"
    )
    train.add_argument("--vae-beta", type=float, help="vae: weight β of KL / sensors (default 1)")
    train.add_argument(
        "--alarm-target-per-day",
        type=float,
        help="false alarm episodes per asset-day the episode rule is calibrated for (default 1)",
    )
    train.add_argument(
        "--alarm-k", type=_positive_int, help="episode rule: k of the last n readings (default 3)"
    )
    train.add_argument("--alarm-n", type=_positive_int, help="episode rule: the window n (default 10)")
    train.add_argument(
        "--alarm-jitter",
        action="store_true",
        help="add the jitter channel (noise bursts), calibrated for half the alarm target; the score's "
        "episode rule gets the other half",
    )
    train.add_argument(
        "--no-alarm-velocity",
        action="store_true",
        help="leave out the velocity channel (an abrupt change of the process state opens an episode; "
        "calibrated for a quarter of the alarm target)",
    )
    train.add_argument(
        "--alarm-velocity-components",
        type=_positive_int,
        help="principal directions of the process state the velocity channel watches (default 8)",
    )
    train.add_argument(
        "--reading-period-s",
        type=float,
        help="seconds between an asset's readings (default: the data's timestamps, else 1)",
    )
    train.add_argument(
        "--folds",
        type=_positive_int,
        help="cross-fitting folds for the calibration scores (default 5 up to 5 000 normal rows, else 3)",
    )
    train.add_argument(
        "--hidden",
        help="encoder widths, comma-separated (default: 512,32 at 1000 sensors, scaled down for fewer); "
        "decoder mirrors",
    )
    train.add_argument("--l2", type=float, help="λ of MSE + λ·Σ‖W‖² (default 1e-6)")
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--patience", type=_positive_int, help="early-stopping patience in epochs")
    train.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    train.add_argument(
        "--split-blocks",
        type=_positive_int,
        help="time blocks, each cut train/validation/calibration (default 8; 1 = past trains, future tests)",
    )
    train.add_argument("--impute", action="store_true", help="fill NaN/Inf by forward then backward fill")
    train.add_argument("--on-constant", choices=("warn", "error"), default="warn", help="constant sensors")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (epochs are still logged)")
    train.add_argument("--no-explainer", action="store_true", help="skip training the attention explainer")
    train.add_argument("--explainer-epochs", type=_positive_int, help="explainer epochs (default 12)")
    train.add_argument(
        "--sensor-units", type=Path,
        help='JSON of each sensor\'s unit: {"name": "unit"} or [{"name": ..., "unit": ...}] (sensors.json)',
    )  # fmt: skip
    train.add_argument("--test-data", type=Path, help="labelled recording for the model card's metrics")
    train.add_argument("--test-labels", type=Path, help="labels of --test-data (else its `label` column)")
    train.add_argument("--test-fault-sensors", type=Path, help="fault sensors of --test-data (JSON)")

    explain = command("explain", "train the attention explainer for an existing version (new version)")
    explain.add_argument("--model", type=Path, required=True, help="model directory <store>/<name> (CURRENT)")
    explain.add_argument("--data", type=Path, required=True, help="the recording the version was trained on")
    explain.add_argument("--val-data", type=Path, help="the --val-data the version was trained with")
    explain.add_argument(
        "--epochs", type=_positive_int, help="explainer epochs (default: the version's config)"
    )
    explain.add_argument("--sensor-units", type=Path, help="as train's; else the version's units carry over")
    explain.add_argument("--test-data", type=Path)
    explain.add_argument("--test-labels", type=Path)
    explain.add_argument("--test-fault-sensors", type=Path)
    explain.add_argument("--no-progress", action="store_true")

    evaluate = command("evaluate", "score a labelled recording and write a JSON report")
    evaluate.add_argument(
        "--model", type=Path, required=True, help="a version directory, or a model directory with CURRENT"
    )
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--labels", type=Path, help="CSV with a `label` column (and optional `fault_kind`)")
    evaluate.add_argument("--fault-sensors", type=Path, help='JSON {"row": [sensor indices]}')
    evaluate.add_argument("--out", type=Path, required=True, help="report path (JSON)")
    evaluate.add_argument("--impute", action="store_true")

    recalibrate = command(
        "recalibrate",
        "re-estimate the threshold of a version on recent normal data (new version, same model)",
    )
    recalibrate.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model directory <store>/<name>: its CURRENT version is recalibrated into a new one there",
    )
    recalibrate.add_argument(
        "--data",
        type=Path,
        required=True,
        help="recent normal readings, in time order; rows labelled 1 are dropped",
    )
    recalibrate.add_argument(
        "--reason", required=True, help="why (recorded in the manifest and the model card)"
    )
    recalibrate.add_argument(
        "--target-fpr",
        type=_fraction,
        help="target false-alarm rate (default: the version's requested target)",
    )
    recalibrate.add_argument(
        "--accept-tightest-target",
        action="store_true",
        help="when the data cannot support the target, calibrate for the tightest one it supports",
    )
    recalibrate.add_argument(
        "--impute", action="store_true", help="fill NaN/Inf by forward then backward fill"
    )
    return parser


def _synth(args: argparse.Namespace) -> None:
    from factory_anomaly.plant.synthetic import FORMATS, Plant, PlantConfig, write_run

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"--formats: unknown {unknown}; choose from {list(FORMATS)}")
    if not 0.0 <= args.anomaly_rate < 0.5:
        raise ValueError(f"--anomaly-rate must be in [0, 0.5), got {args.anomaly_rate}")
    plant = Plant(PlantConfig(n_sensors=args.sensors), plant_seed=args.plant_seed)
    run = plant.simulate(
        args.rows, seed=args.seed, anomaly_rate=args.anomaly_rate, episode_gap=args.episode_gap
    )
    paths = write_run(plant, run, args.out, formats)
    logging.getLogger("training").info(
        "wrote %d rows x %d sensors (%d anomalous) to %s",
        args.rows,
        args.sensors,
        int(run.labels.sum()),
        args.out,
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))


def _train(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from factory_anomaly.training.data import load_dataset, load_sensor_units
    from factory_anomaly.training.evaluate import TestRecording
    from factory_anomaly.training.train import TrainConfig, train

    config = TrainConfig(
        seed=args.seed, threads=args.threads, on_constant=args.on_constant, progress=not args.no_progress
    )
    overrides = {
        "max_epochs": args.epochs,
        "target_fpr": args.target_fpr,
        "l2": args.l2,
        "batch_size": args.batch_size,
        "patience": args.patience,
        "split_blocks": args.split_blocks,
        "explainer_epochs": args.explainer_epochs,
        "aggregate": args.aggregate,
        "folds": args.folds,
        "model": args.model,
        "ensemble": args.ensemble,
        "dae_noise_std": args.dae_noise,
        "dae_mask_fraction": args.dae_mask,
        "vae_beta": args.vae_beta,
        "alarm_target_per_day": args.alarm_target_per_day,
        "alarm_k": args.alarm_k,
        "alarm_n": args.alarm_n,
        "alarm_velocity_components": args.alarm_velocity_components,
        "reading_period_s": args.reading_period_s,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_explainer:
        config = replace(config, explainer=False)
    if args.alarm_jitter:
        config = replace(config, alarm_jitter=True)
    if args.no_alarm_velocity:
        config = replace(config, alarm_velocity=False)
    if args.accept_tightest_target:
        config = replace(config, accept_tightest_target=True)
    if args.hidden:
        try:
            hidden = tuple(int(h) for h in args.hidden.split(","))
        except ValueError:
            raise ValueError(f"--hidden must be comma-separated integers, got {args.hidden!r}") from None
        config = replace(config, hidden=hidden)
    data = load_dataset(args.data, impute=args.impute)
    val_data = load_dataset(args.val_data, impute=args.impute) if args.val_data else None
    if args.test_data is None and (args.test_labels or args.test_fault_sensors):
        raise ValueError("--test-labels and --test-fault-sensors need --test-data")
    test = (
        TestRecording(args.test_data, args.test_labels, args.test_fault_sensors) if args.test_data else None
    )
    units = load_sensor_units(args.sensor_units, data.sensor_names) if args.sensor_units else None
    out = train(data, args.out, config, val_data, test, units)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    training = manifest["training"]
    summary = {"version": str(out), "threshold": manifest["threshold"]}
    summary |= {k: training[k] for k in ("epochs_run", "best_epoch", "fit_seconds")}
    if "test" in manifest["metrics"]:
        summary["test"] = {k: manifest["metrics"]["test"]["autoencoder"][k] for k in ("roc_auc", "pr_auc")}
    print(json.dumps(summary, indent=1))


def _explain(args: argparse.Namespace) -> None:
    from factory_anomaly.training.data import load_dataset, load_sensor_units
    from factory_anomaly.training.evaluate import TestRecording
    from factory_anomaly.training.train import add_explainer

    test = None
    if args.test_data is not None:
        test = TestRecording(args.test_data, args.test_labels, args.test_fault_sensors)
    data = load_dataset(args.data)
    val_data = load_dataset(args.val_data) if args.val_data else None
    units = load_sensor_units(args.sensor_units, data.sensor_names) if args.sensor_units else None
    out = add_explainer(
        args.model,
        data,
        val_data,
        test,
        epochs=args.epochs,
        progress=not args.no_progress,
        sensor_units=units,
    )
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    ranking = manifest["training"]["explainer"]["held_out_ranking"]
    print(json.dumps({"version": str(out)} | {m: ranking[m]["all"] for m in ranking}, indent=1))


def _evaluate(args: argparse.Namespace) -> None:
    from factory_anomaly.training.evaluate import evaluate, write_report

    report = evaluate(args.model, args.data, args.labels, args.fault_sensors, impute=args.impute)
    write_report(report, args.out)
    headline = {
        name: {k: report[name][k] for k in ("roc_auc", "pr_auc", "precision", "recall", "false_alarm_rate")}
        for name in ("autoencoder", "baseline_pca")
    }
    print(json.dumps(headline, indent=1))


def _recalibrate(args: argparse.Namespace) -> None:
    from factory_anomaly.training.recalibrate import recalibrate

    out = recalibrate(
        args.model,
        args.data,
        args.reason,
        target_fpr=args.target_fpr,
        accept_tightest_target=args.accept_tightest_target,
        impute=args.impute,
    )
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    record = manifest["training"]["recalibration"]
    summary = {"version": str(out), "threshold": manifest["threshold"]}
    summary |= {k: record[k] for k in ("previous_version", "previous_threshold")}
    summary["check"] = {k: record["check"][k] for k in ("rows", "levels", "previous_threshold")}
    print(json.dumps(summary, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = {
        "synth": _synth,
        "train": _train,
        "explain": _explain,
        "evaluate": _evaluate,
        "recalibrate": _recalibrate,
    }[args.command]
    try:
        command(args)
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
