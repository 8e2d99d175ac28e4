"""The model card: a page a person can judge the model by, with its plots.

Every number in it is read from the manifest, the training result or the evaluation report; nothing is
typed by hand. Plots (matplotlib, Agg backend, PNG):
  loss.png            training and validation MSE per epoch (log axis)
  scores.png          score histogram, normal vs anomalous test readings, log axis, threshold line
  roc.png             ROC curves of the autoencoder and the PCA baseline on the test recording
  recall_by_kind.png  recall at the stored thresholds per fault kind, autoencoder vs PCA
Without a labelled test recording, scores.png shows the calibration scores and the other test plots and
tables are absent (the card says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from factory_anomaly.artifact import CARD_FILE, Manifest

if TYPE_CHECKING:
    from factory_anomaly.training.evaluate import Evaluation
    from factory_anomaly.training.result import TrainResult

DPI = 110


def write_card(
    directory: Path, manifest: Manifest, result: TrainResult, evaluation: Evaluation | None
) -> Path:
    """Write the card (CARD_FILE) and its plots into `directory`; return the card's path."""
    plots: list[Path | None] = [_loss_plot(directory, result)]
    plots.append(_score_plot(directory, manifest, result, evaluation))
    if evaluation is not None:
        plots += [_roc_plot(directory, evaluation), _recall_plot(directory, evaluation)]
    text = _card_text(manifest, result, evaluation, [p.name for p in plots if p is not None])
    path = directory / CARD_FILE
    path.write_text(text)
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _card_text(
    manifest: Manifest, result: TrainResult, evaluation: Evaluation | None, plots: list[str]
) -> str:
    s = result.summary
    t = manifest.threshold
    data = s["data"]
    lines = [
        f"# Model card: {manifest.name} {manifest.version}",
        "",
        f"Created {manifest.created_at}. Format version {manifest.format_version}. "
        f"Scorer graph `{manifest.graphs['scorer'].file}` (ONNX opset {manifest.graphs['scorer'].opset}).",
        "",
        "## What it does",
        f"Scores one reading of {manifest.n_sensors} sensors: `score` = {_SCORE_TEXT[_aggregate(s)]} of a "
        f"fully connected {_MODEL_TEXT[_model(s)]} "
        f"({manifest.n_sensors} → {' → '.join(map(str, s['architecture']['hidden']))} → mirrored, "
        f"{s['architecture']['trainable_parameters']:,} trainable parameters){_ensemble_text(s)}. "
        "A reading is anomalous "
        f"when `score > {t.value:.6g}`. `sensor_error` gives each "
        "sensor's share, for a first look at which sensors are off.",
        "",
        "## Intended use and limits",
        "- Plant readings shaped like the training data: the same sensors, units and operating modes. A new "
        "operating mode, a re-calibrated sensor or a changed process looks anomalous until the model is "
        "retrained on data that contains it.",
        "- The false-alarm rate below holds for readings like the calibration rows. It is a per-reading "
        "rate; alerting should require flags to cluster in time.",
        "- Faults that show only over time (a stuck sensor, a slow drift) are not visible in one reading; "
        "the per-kind recall table shows which fault kinds this model can and cannot see.",
        "",
        "## Training data",
        f"- File `{Path(data['file']).name}`: {data['rows']:,} rows × {data['sensors']} sensors, "
        f"sha256 `{data['sha256'][:16]}…`.",
        _split_line(s["splits"]),
        f"- Constant sensors: {len(s['constant_sensors'])}.",
        "",
        "## Training",
        f"- {s['epochs_run']} epochs (best {s['best_epoch']}, validation MSE {s['best_val_mse']:.4f}), "
        f"{s['fit_seconds']:.0f} s on {s['torch_threads']} torch thread(s) "
        f"({s['total_seconds']:.0f} s for the whole run before export); "
        f"{_loss_text(s['config'])}; seed {s['config']['seed']}.",
        "",
        "## Threshold",
        f"- {t.value:.6g}, method `{t.method}`, target false-alarm rate {t.target_fpr:g} per reading, "
        f"from {t.n_calibration:,} held-out normal scores.",
        *_calibration_lines(s.get("calibration", {})),
        "",
        *_alarm_lines(s.get("alarms", {})),
    ]
    if evaluation is not None:
        lines += _test_section(evaluation)
    else:
        lines += ["## Test recording", "No labelled test recording was given: no detection metrics.", ""]
    lines += _explainer_section(manifest)
    lines += _figure_lines()
    parity = manifest.metrics.get("parity", {})
    if parity:
        lines += [
            "## Export check",
            f"- onnxruntime vs torch over {parity['rows']} rows: score relative error "
            f"{parity['score_max_rel_error']:.2g}, sensor_error {parity['sensor_error_max_rel_error']:.2g}.",
            "",
        ]
    if plots:
        lines += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    versions = ", ".join(f"{k} {v}" for k, v in manifest.library_versions.items())
    lines += ["## Software", versions, ""]
    return "\n".join(lines)


_SCORE_TEXT = {
    "mean": "the mean over sensors of the squared scaled reconstruction residual (`sensor_error`)",
    "max": "the largest squared scaled reconstruction residual over sensors (`sensor_error`)",
    "mean+max": "the larger of the mean and the maximum over sensors of the squared scaled "
    "reconstruction residual (`sensor_error`), each divided by its own held-out normal quantile",
}
"""`sensor_error` is r² with each sensor's heavy tail tempered beyond its 99 % quantile
(`model.AnomalyScorer`); the card says "scaled" for both steps."""


def _aggregate(summary: dict[str, Any]) -> str:
    return str(summary.get("config", {}).get("aggregate", "mean"))


_MODEL_TEXT = {
    "ae": "autoencoder",
    "dae": "denoising autoencoder",
    "vae": "variational autoencoder (decoded from the posterior mean, so the score is deterministic)",
}


ENSEMBLE_PARTNERS = {
    "iforest": "an IsolationForest's score (200 trees) on the standardised readings",
    "latent": "the squared Mahalanobis distance of the bottleneck code from the normal codes",
}


def _ensemble_text(summary: dict[str, Any]) -> str:
    kind = summary.get("config", {}).get("ensemble", "none")
    if kind not in ENSEMBLE_PARTNERS:
        return ""
    return (
        f"; with `--ensemble {kind}`, the larger of that and {ENSEMBLE_PARTNERS[kind]}, each divided by "
        "its own held-out normal quantile"
    )


def _model(summary: dict[str, Any]) -> str:
    return str(summary.get("config", {}).get("model", "ae"))


def _loss_text(config: dict[str, Any]) -> str:
    """The training loss of the run's variant (docs/training.md, "Model variants")."""
    l2, kind = f"λ = {config['l2']:g}", config.get("model", "ae")
    if kind == "dae":
        mask = config["dae_mask_fraction"]
        masked = f", {mask:.0%} of entries masked to the mean" if mask > 0 else ""
        return (
            f"denoising: loss MSE + λ·Σ‖W‖² of the clean reading reconstructed from one with Gaussian noise "
            f"of std {config['dae_noise_std']:g} (standardised){masked}, {l2}"
        )
    if kind == "vae":
        return (
            f"variational: loss MSE + β·KL/n + λ·Σ‖W‖² on a latent sampled by the reparameterisation trick, "
            f"β = {config['vae_beta']:g}, {l2}"
        )
    return f"loss MSE + λ·Σ‖W‖² with {l2}"


def _split_line(splits: dict[str, Any]) -> str:
    if splits.get("procedure") == "cross_fit":
        return (
            f"- Cross-fitted: {splits['normal_rows']:,} normal rows, {splits['folds']} folds, each scored "
            "by a model trained without it (its threshold's calibration sample); the shipped model trained "
            f"on {splits['train_rows']:,} rows and stopped early on {splits['validation_rows']:,}; labelled "
            "rows never train."
        )
    return (
        f"- Split: {splits['split_blocks']} time blocks, each train / validation / calibration "
        f"(gaps of {splits['gap_fraction']:.0%} of a block between parts): "
        f"{splits['train_rows']:,} training, {splits['validation_rows']:,} validation, "
        f"{splits['calibration_rows']:,} calibration normal rows; labelled rows never train."
    )


def _calibration_lines(c: dict[str, Any]) -> list[str]:
    """The calibration facts: requested vs used target, what the data supports, the threshold's spread."""
    if not c:
        return []
    lines = [
        f"- Requested target {c['requested_target_fpr']:g}; the tightest these {c['rows']:,} held-out scores "
        f"support is {c['tightest_supported_target_fpr']:.2g}"
        + (" (accepted with --accept-tightest-target)." if c["accepted_tightest_target"] else "."),
    ]
    low, high = c.get("threshold_interval_90", [None, None])
    if low is not None and high is not None:
        lines.append(f"- Bootstrap 90 % interval of the threshold: [{low:.4g}, {high:.4g}].")
    check = c.get("held_out_check")
    if check:
        low, high = check["false_alarm_rate_ci95"]
        lines.append(
            f"- Held-out check (each fold against a threshold calibrated on the others): "
            f"{check['false_alarms']} false alarms in {check['rows']:,} normal rows where "
            f"{check['expected_false_alarms']:.3g} were expected; rate {check['false_alarm_rate']:.2g} "
            f"(95 % interval [{low:.2g}, {high:.2g}])."
        )
    levels = ", ".join(f"{lv['target_fpr']:g} → {lv['value']:.4g}" for lv in c.get("levels", []))
    if levels:
        lines.append(f"- Thresholds at other targets (same scores): {levels}.")
    return lines


_PERIOD_SOURCE = {
    "timestamps": "from the data's timestamps",
    "declared": "declared",
    "assumed": "assumed: the data has no timestamps",
}


def _alarm_lines(a: dict[str, Any]) -> list[str]:
    """The per-asset episode rule: what opens and closes an episode, and the promise per asset-day."""
    if not a:
        return []
    head = ["## Alarm episodes (per asset)"]
    if not a.get("calibrated"):
        return [*head, f"No episode rule: {a.get('why', 'not calibrated')}.", ""]
    period = a["reading_period_s"]
    source = _PERIOD_SOURCE.get(a.get("reading_period_source", ""), "")
    low, high = a["episodes_per_day_ci95"]
    rule_target = a.get("rule_target_episodes_per_day", a["target_episodes_per_day"])
    return [
        *head,
        f"- The promise: {a['target_episodes_per_day']:g} false episodes per asset-day at one reading every "
        f"{period:g} s ({source}), shared by the evidence below (each episode needs one of them).",
        f"- An episode opens when {a['k']} of an asset's last {a['n']} readings are over the level: a score "
        f"above {a['level']:.4g}, or the evidence of a channel below (an abrupt change opens one on its "
        f"own); it closes after {a['close_after']} readings without one.",
        f"- The score's level is calibrated ({a['method']}) for {rule_target:g} of them; the "
        f"{a['days_covered']:.2g} days of normal scores it was fitted on are extrapolated "
        f"{a['extrapolation']:.2g}×. On those scores it opens {a['episodes_on_normal_scores']} episodes: "
        f"{a['episodes_per_day_on_normal_scores']:.3g} a day (95 % interval [{low:.3g}, {high:.3g}]).",
        *_jitter_lines(a.get("jitter")),
        *_velocity_lines(a.get("velocity")),
        "",
    ]


def _velocity_lines(v: dict[str, Any] | None) -> list[str]:
    """The velocity channel's line: its level and share, or why there is none."""
    if v is None:
        return []
    if not v.get("calibrated"):
        return [f"- No velocity channel: {v.get('why', 'not calibrated')}."]
    return [
        f"- Velocity (the process state, on its {v['components']} principal directions, changing over "
        f"{v['lag']} readings faster than normal operation does): level {v['level']:.4g} (squared "
        f"Mahalanobis distance), calibrated for {v['target_episodes_per_day']:g} of the false episodes on "
        f"{v['days_covered']:.2g} days of normal readings; {v['readings_over_level_on_normal']} of those "
        "readings are over it."
    ]


def _jitter_lines(j: dict[str, Any] | None) -> list[str]:
    """The jitter channel's line: its level and share, or why there is none."""
    if j is None:
        return []
    if not j.get("calibrated"):
        return [f"- No jitter channel: {j.get('why', 'not calibrated')}."]
    return [
        f"- Jitter (a sensor's reading-to-reading jitter far above what its level explains): level "
        f"{j['level']:.4g} e-folds, calibrated for {j['target_episodes_per_day']:g} of the false episodes on "
        f"{j['days_covered']:.2g} days of normal readings ({j['active_sensors']} sensors judged)."
    ]


def _ranking_table(ranking: dict[str, dict[str, Any]]) -> list[str]:
    """Rows per fault kind: HitRate@150 % and NDCG@150 % of attention, error ranking and random ranking."""
    methods = ("attention", "error", "random")
    lines = [
        "| fault kind | rows | HitRate@150% attention | error | random "
        "| NDCG@150% attention | error | random |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in ranking["attention"]:
        hit = [_fmt(ranking[m][kind]["hitrate@150%"]) for m in methods]
        ndcg = [_fmt(ranking[m][kind]["ndcg@150%"]) for m in methods]
        rows = ranking["attention"][kind]["n_rows_ranked"]
        lines.append(f"| {kind} | {rows} | {' | '.join(hit)} | {' | '.join(ndcg)} |")
    return lines


def _explainer_section(manifest: Manifest) -> list[str]:
    if "explainer" not in manifest.graphs:
        return ["## Explainer", "This version has no attention explainer.", ""]
    e = manifest.training["explainer"]
    lines = [
        "## Explainer",
        f"`{manifest.graphs['explainer'].file}`: one self-attention layer over the {manifest.n_sensors} "
        f"sensor tokens (d_model {e['architecture']['d_model']}, d_k {e['architecture']['d_key']}) and an "
        "attention-pooling readout whose weights (non-negative, summing to 1) rank the sensors. Trained on "
        f"faults injected into normal training rows, {e['epochs_run']} epochs (best {e['best_epoch']}), "
        f"{e['fit_seconds']:.0f} s.",
        "",
        f"Held out: faults injected into {e['held_out_ranking_rows']} calibration rows "
        "(all = every kind together).",
        "",
        *_ranking_table(e["held_out_ranking"]),
        "",
    ]
    test = manifest.metrics.get("explainer_test_ranking")
    if test:
        lines += ["On the test recording's real faults:", "", *_ranking_table(test), ""]
    return lines


def _figure_lines() -> list[str]:
    """Where the seed's Figures 1 and 2 of this version's graphs come from (`graph_figures`)."""
    return [
        "The seed's Figure 1 (the autoencoder) and Figure 2 (self-attention), drawn from this version's "
        "ONNX graphs with every edge's shape: `python -m factory_anomaly.training.graph_figures "
        "--model-dir <its model directory> --out <folder>` (for the shipped model, `make figures` writes "
        "them to [docs/figures](../../../docs/figures.md)).",
        "",
    ]


def _against(section: dict[str, Any]) -> str:
    low, high = section["false_alarm_ratio_ci95"]
    return (
        f"{section['false_positives']} / {section['expected_false_alarms']:.3g} "
        f"({section['false_alarm_ratio']:.2f}×, [{low:.2f}, {high:.2f}])"
    )


def _test_section(evaluation: Evaluation) -> list[str]:
    r = evaluation.report
    ae, pca = r["autoencoder"], r["baseline_pca"]
    lines = [
        "## Test recording",
        f"`{Path(r['data']['file']).name}`: {ae['n_rows']:,} rows, {ae['n_anomalous']:,} anomalous "
        "(scored by this artifact's ONNX graph). PCA = reconstruction baseline with the same bottleneck, "
        "standardisation and score definition, calibrated the same way.",
        "",
        "| metric | autoencoder | PCA baseline |",
        "|---|---|---|",
    ]
    for key, label in (
        ("roc_auc", "ROC-AUC"),
        ("pr_auc", "PR-AUC"),
        ("precision", "precision at threshold"),
        ("recall", "recall at threshold"),
        ("f1", "F1 at threshold"),
        ("false_alarm_rate", "false-alarm rate at threshold"),
    ):
        lines.append(f"| {label} | {_fmt(ae[key])} | {_fmt(pca[key])} |")
    if "false_alarm_ratio" in ae:
        lines.append(
            f"| false alarms / expected at target {ae['target_fpr']:g} (ratio, 95 % interval) "
            f"| {_against(ae)} | {_against(pca)} |"
        )
    if "best_f1" in ae:
        lines.append(f"| best F1 over all thresholds (reference only) | {_fmt(ae['best_f1'])} | "
                     f"{_fmt(pca.get('best_f1'))} |")  # fmt: skip
    for key in ("hitrate@100%", "ndcg@100%", "hitrate@150%", "ndcg@150%"):
        if "ranking" in ae:
            lines.append(
                f"| sensor ranking {key} | {_fmt(ae['ranking'][key])} | {_fmt(pca['ranking'][key])} |"
            )
    kinds = ae.get("recall_by_fault_kind", {})
    if kinds:
        lines += [
            "",
            "| fault kind | rows | recall AE | recall PCA | ROC-AUC AE | ROC-AUC PCA |",
            "|---|---|---|---|---|---|",
        ]
        for kind, k in kinds.items():
            p = pca["recall_by_fault_kind"][kind]
            lines.append(
                f"| {kind} | {k['n_rows']} | {_fmt(k['recall'])} | {_fmt(p['recall'])} | "
                f"{_fmt(k['roc_auc'])} | {_fmt(p['roc_auc'])} |"
            )
    return [*lines, "", *_episode_lines(r.get("alarm_episodes"))]


def _episode_lines(e: dict[str, Any] | None) -> list[str]:
    """The alarm episodes the version's rule opens on the test recording, replayed as one asset in time
    order (`episode_quality`): recall and delay per fault kind, false episodes per asset-day."""
    if e is None:
        return []
    false = e["false_on_test"]
    low, high = false["per_day_ci95"]
    lines = [
        "### Alarm episodes on the test recording (one asset, in time order)",
        f"{e['fault_episodes']} fault episodes; the rule opened {e['alarm_episodes']} alarm episodes. A "
        "fault is caught when an alarm opens during it; the delay counts readings from its first one.",
        "",
        "| fault kind | episodes | caught | delay median | delay p90 |",
        "|---|---|---|---|---|",
        *(
            f"| {kind} | {k['episodes']} | {_fmt(k['recall'])} | {_fmt(k['delay_median'])} | "
            f"{_fmt(k['delay_p90'])} |"
            for kind, k in e["by_kind"].items()
        ),  # fmt: skip
        "",
        f"Episode recall {_fmt(e['recall'])}; false episodes (touching no fault) {false['episodes']} in "
        f"{false['days']:.2g} asset-days: {false['per_day']:.3g} a day (95 % interval [{low:.3g}, "
        f"{high:.3g}]); an alarm open during {e['alarm_time_on_normal']:.3g} of the normal readings.",
        "",
    ]
    return lines


def _loss_plot(directory: Path, result: TrainResult) -> Path:
    epochs = [r["epoch"] for r in result.history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(epochs, [r["train_mse"] for r in result.history], label="training MSE")
    ax.plot(epochs, [r["val_mse"] for r in result.history], label="validation MSE")
    ax.axvline(result.summary["best_epoch"], color="grey", linestyle=":", label="kept (best validation)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised units)")
    ax.set_title("Training and validation loss")
    ax.legend()
    return _save(fig, directory / "loss.png")


def _score_plot(
    directory: Path, manifest: Manifest, result: TrainResult, evaluation: Evaluation | None
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    threshold = manifest.threshold.value
    if evaluation is not None:
        s, y = evaluation.scores["autoencoder"], evaluation.labels
        groups = [(s[y == 0], "normal test readings"), (s[y == 1], "anomalous test readings")]
    else:
        groups = [(result.calibration_scores.astype(np.float64), "calibration readings (normal)")]
    positive = np.concatenate([g for g, _ in groups])
    positive = positive[positive > 0]
    low = max(float(positive.min()), 1e-3) if positive.size else 1e-3
    high = max(float(positive.max()), threshold) * 1.5 if positive.size else threshold * 1.5
    bins = [float(b) for b in np.geomspace(low, high, 80)]
    for values, label in groups:
        ax.hist(np.clip(values, low, None), bins=bins, alpha=0.55, label=label)
    ax.axvline(threshold, color="crimson", label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("score (log)")
    ax.set_ylabel("readings")
    ax.set_title("Score distribution")
    ax.legend()
    return _save(fig, directory / "scores.png")


def _roc_plot(directory: Path, evaluation: Evaluation) -> Path | None:
    y = evaluation.labels
    if y.min() == y.max():
        return None
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    for name, label in (("autoencoder", "autoencoder"), ("baseline_pca", "PCA baseline")):
        fpr, tpr, _ = roc_curve(y, evaluation.scores[name])
        auc = evaluation.report[name]["roc_auc"]
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false-alarm rate")
    ax.set_ylabel("recall")
    ax.set_title("ROC on the test recording")
    ax.legend(loc="lower right")
    return _save(fig, directory / "roc.png")


def _recall_plot(directory: Path, evaluation: Evaluation) -> Path | None:
    ae = evaluation.report["autoencoder"].get("recall_by_fault_kind", {})
    pca = evaluation.report["baseline_pca"].get("recall_by_fault_kind", {})
    if not ae:
        return None
    kinds = list(ae)
    x = np.arange(len(kinds))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(x - 0.2, [ae[k]["recall"] for k in kinds], 0.4, label="autoencoder")
    ax.bar(x + 0.2, [pca[k]["recall"] for k in kinds], 0.4, label="PCA baseline")
    ax.set_xticks(x, kinds, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall at the stored threshold")
    ax.set_title("Recall per fault kind")
    ax.legend()
    return _save(fig, directory / "recall_by_kind.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path
