"""Re-estimate a published version's alarm threshold on recent normal readings, as a new version.

Why: after training, a plant's normal behaviour moves on (servicing, wear, another product), and the
realised false-alarm rate drifts far from the threshold's promise: the service's "calibration drift"
signal (docs/serving.md). When the model still describes the machine but its scores now sit higher or lower,
only the threshold is wrong, and re-estimating it on recent normal readings restores the promise without
retraining: graphs, weights and baseline stay exactly as they were. It is no cure for a fault: calibrated
on a fault's readings, the threshold rises until the fault stops flagging (docs/training.md,
"Recalibrating").

The readings are scored by the version's own ONNX scorer graph (what serving runs) and cut in time: the
first 70 % calibrate, with `train`'s estimators and support rule; the last 30 % check the new thresholds
out of sample, later in time, which is how they will be used.

The version's alarm episode rule (`manifest.alarms`) rests on the same scores, so its level is re-estimated
too, on the same rows and by training's procedure (`training.episodes`), for the same k, n, reading period
and target; where the rows are too few for that fit, the previous level is kept and the record says why.

The new version holds every file of the previous one byte for byte, but for the manifest (new `threshold`,
`alarms.level` and `training["threshold_details"]`, `training["calibration"]` with procedure "recalibrated", a
`training["recalibration"]` record) and the model card (a "Recalibration" section appended). It is
published through `publish.publish_built` like a trained version; the previous version stays in the store,
so rolling back is a reload of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from factory_anomaly.alarms.rule import EpisodeRule, episodes
from factory_anomaly.artifact import (
    CARD_FILE,
    CURRENT_FILE,
    MANIFEST_FILE,
    AlarmSpec,
    ArtifactCode,
    ArtifactError,
    Manifest,
    ThresholdSpec,
    check_consistency,
    hash_files,
    iso_utc,
    resolve_current,
    sha256_file,
    verify_artifact,
    version_id,
    write_manifest,
)
from factory_anomaly.training.data import CalibrationError, DataError, Dataset, align_sensors, load_dataset
from factory_anomaly.training.episodes import DAY_S, calibrate_episode_rule
from factory_anomaly.training.evaluate import ArtifactModel
from factory_anomaly.training.metrics import binomial_interval
from factory_anomaly.training.publish import publish_built
from factory_anomaly.training.threshold import (
    Threshold,
    calibrate,
    calibrate_levels,
    round_up_target,
    threshold_interval,
    tightest_supported_target,
)

log = logging.getLogger("training.recalibrate")

PROCEDURE = "recalibrated"
MIN_NORMAL_ROWS = 100
"""Fewer recent normal rows give a threshold and a check too noisy to act on: refused, naming this."""
CALIBRATION_PERCENT = 70
"""The first 70 % of the normal rows (in time) calibrate; the rest, later in time, check the result."""
JUDGED_MIN_EXPECTED = 20.0
"""A level is judged where the check rows expect at least this many false alarms (the quality benchmark's
rule, bench/quality.py); with fewer, its realised rate is only reported."""
CHECK_BAND = (0.5, 2.0)
"""A judged level holds when its realised rate is within this factor of its target (bench/quality.py)."""


def recalibrate(
    model_dir: Path,
    data_path: Path,
    reason: str,
    *,
    target_fpr: float | None = None,
    accept_tightest_target: bool = False,
    impute: bool = False,
) -> Path:
    """Recalibrate the version `model_dir/CURRENT` names on the normal rows of `data_path`, publish the
    result as a new version of `model_dir`, point CURRENT at it, and return its path.

    `target_fpr` defaults to the target the version was asked for. Every bad input (an empty reason, no or
    an unverifiable version, sensors that differ, too few rows, a target the rows cannot support) raises
    before anything is written: `DataError` / `ValueError` / `FileNotFoundError`, naming the file.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("--reason is empty: say why the threshold is re-estimated (the version records it)")
    model_dir = Path(model_dir)
    previous = _open_current(model_dir)
    data, rows = _recent_normal_rows(data_path, previous.manifest, impute)
    scores = previous.score(data.values[rows])[0].astype(np.float64)
    cut = rows.size * CALIBRATION_PERCENT // 100
    fit_scores, check_scores = scores[:cut], scores[cut:]
    target, facts = _target_for(previous.manifest, data, rows.size, cut, target_fpr, accept_tightest_target)
    try:
        threshold = calibrate(fit_scores, target)
        levels = calibrate_levels(fit_scores)
        interval = threshold_interval(fit_scores, target)
    except ValueError as exc:  # e.g. the top scores are one tied value: no tail to fit
        raise DataError(f"{data.source}: cannot calibrate on these rows: {exc}") from exc

    old = previous.manifest
    alarms, alarm_record = _episode_rule(old.alarms, fit_scores, check_scores)
    created = datetime.now(UTC).replace(microsecond=0)
    record: dict[str, Any] = {
        "at": iso_utc(created),
        "reason": reason,
        "previous_version": old.version,
        "previous_threshold": old.threshold.to_dict(),
        "data": {
            "file": str(data.source.resolve()),
            "sha256": sha256_file(data.source),
            "rows": data.n_rows,
            "normal_rows": int(rows.size),
            "labelled_anomalous_rows_dropped": int(data.n_rows - rows.size),
            "time_range": _time_range(data, rows),
        },
        "calibration": {"rows": int(cut), "time_range": _time_range(data, rows[:cut])},
        "check": {
            "rows": int(check_scores.size),
            "time_range": _time_range(data, rows[cut:]),
            "levels": held_out_check(check_scores, [*levels, threshold]),
            "previous_threshold": _check_one(check_scores, old.threshold.value, old.threshold.target_fpr),
        },
    }
    if alarm_record is not None:
        record["alarms"] = alarm_record
    earlier = old.training.get("recalibration")
    if earlier is not None:  # the chain of recalibrations since training stays readable in the newest
        record["earlier"] = [
            *earlier.get("earlier", []),
            {k: v for k, v in earlier.items() if k != "earlier"},
        ]
    scoring = old.training.get("calibration", {})  # how the graph scores: unchanged, so kept
    calibration = facts | {
        "procedure": PROCEDURE,
        "target_fpr": target,
        "rows": int(cut),
        "threshold_interval_90": list(interval),
        "levels": [level.to_dict() for level in levels],
    }
    calibration |= {k: scoring[k] for k in ("aggregate", "residual_scale") if k in scoring}
    training = old.training | {
        "calibration": calibration,
        "threshold_details": threshold.to_dict()["details"],
        "recalibration": record,
    }
    _log_outcome(old.threshold.value, threshold, record["check"]["levels"])
    try:
        return publish_built(
            model_dir, lambda build: _build(build, previous, threshold, alarms, training, created)
        )
    except ArtifactError as exc:
        if exc.code != ArtifactCode.VERSION_EXISTS:
            raise
        # the same recalibration twice within one second: the same version id
        raise ValueError(f"{model_dir}: {exc}; run it again") from None


def _recent_normal_rows(data_path: Path, manifest: Manifest, impute: bool) -> tuple[Dataset, np.ndarray]:
    """The recording with its columns in the model's order (`align_sensors`: by name, or a `DataError`
    naming the sensors that differ), and the indices of its normal rows, in time order."""
    data = align_sensors(load_dataset(data_path, impute=impute), manifest.sensor_names)
    rows = np.flatnonzero(data.labels == 0) if data.labels is not None else np.arange(data.n_rows)
    if rows.size < MIN_NORMAL_ROWS:
        raise DataError(
            f"too few rows: {data.source} holds {rows.size} normal rows; recalibrating needs at least "
            f"{MIN_NORMAL_ROWS} ({CALIBRATION_PERCENT} % calibrate, the rest check)"
        )
    return data, rows


def _log_outcome(previous: float, threshold: Threshold, checked: list[dict[str, Any]]) -> None:
    log.info(
        "threshold %.5g -> %.5g (%s, target %g, %d calibration rows)",
        previous, threshold.value, threshold.method, threshold.target_fpr, threshold.n_calibration,
    )  # fmt: skip
    for level in checked:
        if level["status"] == "judged" and not level["within_band"]:
            log.warning(
                "held-out check: at target %g the later rows realised %.3g (%.2fx), outside %s x the "
                "target: the recent rows are not alike over time",
                level["target_fpr"], level["false_alarm_rate"], level["ratio"], CHECK_BAND,
            )  # fmt: skip


def held_out_check(scores: np.ndarray, thresholds: list[Threshold]) -> list[dict[str, Any]]:
    """The realised false-alarm rate of each threshold (one per target, largest target first) on the
    check rows' scores, with its exact 95 % interval: judged where enough false alarms are expected."""
    by_target = {t.target_fpr: t for t in thresholds}
    return [_check_one(scores, by_target[t].value, t) for t in sorted(by_target, reverse=True)]


def _check_one(scores: np.ndarray, value: float, target: float) -> dict[str, Any]:
    n = int(scores.size)
    flags = int(np.count_nonzero(scores > value))  # serving's rule: score > threshold
    expected = n * target
    low, high = binomial_interval(flags, n)
    judged = expected >= JUDGED_MIN_EXPECTED
    ratio = flags / expected
    return {
        "target_fpr": target,
        "threshold": float(value),
        "rows": n,
        "expected_false_alarms": expected,
        "false_alarms": flags,
        "false_alarm_rate": flags / n,
        "false_alarm_rate_ci95": [low, high],
        "ratio": ratio,
        "status": "judged" if judged else "reported",
        "within_band": (CHECK_BAND[0] <= ratio <= CHECK_BAND[1]) if judged else None,
    }


def _open_current(model_dir: Path) -> ArtifactModel:
    """The verified version `model_dir/CURRENT` names, with its ONNX scorer opened."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model not found")
    if (model_dir / MANIFEST_FILE).is_file():
        raise ValueError(
            f"{model_dir} is a version directory; --model takes the model directory holding {CURRENT_FILE} "
            f"({model_dir.parent}), where the new version is published"
        )
    try:
        version_dir = resolve_current(model_dir)
    except ArtifactError as exc:
        raise FileNotFoundError(f"{model_dir}: no version to recalibrate ({exc.code}): {exc}") from None
    try:
        manifest = verify_artifact(version_dir)
    except ArtifactError as exc:
        raise ValueError(f"{version_dir}: the version does not verify ({exc.code}): {exc}") from None
    return ArtifactModel(version_dir, manifest)


def _target_for(
    manifest: Manifest,
    data: Dataset,
    n_rows: int,
    n_calibration: int,
    requested: float | None,
    accept_tightest: bool,
) -> tuple[float, dict[str, Any]]:
    """`train`'s support rule on the calibration rows: the requested target (by default the one the version
    was asked for) when they support it; else the tightest they support, rounded up to one digit, when the
    user accepted that; else a `CalibrationError` naming it."""
    where = "--target-fpr"
    if requested is None:
        where = "the version's requested target; --target-fpr sets another"
        recorded = manifest.training.get("calibration", {}).get("requested_target_fpr")
        requested = float(recorded if recorded is not None else manifest.threshold.target_fpr)
    tightest = tightest_supported_target(n_calibration)
    facts: dict[str, Any] = {
        "requested_target_fpr": requested,
        "tightest_supported_target_fpr": tightest,
        "accepted_tightest_target": False,
    }
    if requested >= tightest:
        return requested, facts
    nice = round_up_target(tightest)
    if not accept_tightest:
        needed = math.ceil(1 / requested)
        raise CalibrationError(
            f"{data.source}: target false-alarm rate {requested:g} ({where}) needs at least {needed} "
            f"calibration rows; the first {CALIBRATION_PERCENT} % of these {n_rows} normal rows give "
            f"{n_calibration}: the tightest target they support is {nice:g} (pass --accept-tightest-target "
            f"to recalibrate at it, or bring at least {-(-needed * 100 // CALIBRATION_PERCENT)} normal rows)"
        )
    log.warning("target false-alarm rate %g is not supported by %d calibration rows: calibrating for %g",
                requested, n_calibration, nice)  # fmt: skip
    return nice, facts | {"accepted_tightest_target": True}


def _time_range(data: Dataset, rows: np.ndarray) -> dict[str, Any]:
    """Where `rows` lie in the file: its timestamps when it has them, else 0-based data-row indices."""
    if data.timestamps is not None:
        first, last = np.datetime_as_string(data.timestamps[[rows[0], rows[-1]]], unit="ms", timezone="UTC")
        return {"from": str(first), "to": str(last)}
    return {"first_row": int(rows[0]), "last_row": int(rows[-1])}


def _episode_rule(
    spec: AlarmSpec | None, fit_scores: np.ndarray, check_scores: np.ndarray
) -> tuple[AlarmSpec | None, dict[str, Any] | None]:
    """The episode rule's level re-estimated on the calibration scores (same k, n, period and target), and
    its record: both levels' false episodes on the check rows. The previous level stays where the rows are
    too few for the fit."""
    if spec is None:
        return None, None
    period, target = spec.reading_period_s, spec.rule_target_per_day
    close_after_s = spec.close_after * period
    rule, facts = calibrate_episode_rule(fit_scores, period, target, spec.k, spec.n, close_after_s)
    new = spec if rule is None else replace(spec, level=rule.level, close_after=rule.close_after)
    days = check_scores.size * spec.reading_period_s / DAY_S

    def on_check(level: float) -> dict[str, Any]:
        found = len(episodes(check_scores, EpisodeRule.of(replace(spec, level=level))))
        return {"level": level, "episodes": found, "per_day": found / days if days > 0 else None}

    return new, {
        "previous_level": spec.level,
        "level": new.level,
        "re_estimated": rule is not None,
        "fit": facts,
        "check": {"days": days, "new": on_check(new.level), "previous": on_check(spec.level)},
    }


def _build(
    build: Path,
    previous: ArtifactModel,
    threshold: Threshold,
    alarms: AlarmSpec | None,
    training: dict[str, Any],
    created: datetime,
) -> Manifest:
    """Copy the previous version's files into `build`, append the card's section, write the manifest."""
    old = previous.manifest
    for rel in old.files:
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(previous.directory / rel, build / rel)
    copied = hash_files(build)  # before the card changes: the copies must be the bytes just verified
    changed = sorted(rel for rel, digest in old.files.items() if copied.get(rel) != digest)
    if changed:
        raise RuntimeError(f"{previous.directory}: files changed while being copied: {changed}")
    content = json.dumps([threshold.to_dict(), training["recalibration"]], sort_keys=True).encode()
    manifest = replace(
        old,
        version=version_id(created, hashlib.sha256(content).hexdigest()),
        created_at=iso_utc(created),
        threshold=ThresholdSpec(
            value=float(threshold.value),
            method=threshold.method,
            target_fpr=float(threshold.target_fpr),
            n_calibration=int(threshold.n_calibration),
        ),
        alarms=alarms,
        training=training,
    )
    card = build / CARD_FILE
    text = card.read_text() if card.is_file() else ""
    card.write_text(text.rstrip("\n") + "\n\n" + card_section(manifest) + "\n")
    manifest = replace(manifest, files=hash_files(build))
    check_consistency(manifest)
    write_manifest(manifest, build)
    return manifest


def card_section(manifest: Manifest) -> str:
    """The model card's "Recalibration" section, read from the recalibrated version's manifest."""
    r, c, t = manifest.training["recalibration"], manifest.training["calibration"], manifest.threshold
    old, d, check = r["previous_threshold"], r["data"], r["check"]
    before = check["previous_threshold"]
    low, high = c["threshold_interval_90"]
    lines = [
        "## Recalibration",
        f"Version `{manifest.version}` is version `{r['previous_version']}` recalibrated at {r['at']}: only "
        "the threshold was re-estimated, on recent normal readings; the model is unchanged (every other "
        "file is the previous version's, byte for byte). The threshold here supersedes the one stated "
        "above; the test metrics, plots and evaluation above were measured at the previous threshold.",
        "",
        f"- Reason: {r['reason']}",
        f"- Data: `{d['file']}` (sha256 `{d['sha256'][:16]}…`), {d['rows']:,} rows, {d['normal_rows']:,} "
        f"normal ({d['labelled_anomalous_rows_dropped']:,} labelled anomalous dropped), "
        f"{_span(d['time_range'])}.",
        f"- Threshold {old['value']:.4g} (`{old['method']}`, target {old['target_fpr']:g}) → "
        f"**{t.value:.4g}** (`{t.method}`, target {t.target_fpr:g}), from the first {c['rows']:,} normal "
        f"rows ({_span(r['calibration']['time_range'])}).",
        f"- Requested target {c['requested_target_fpr']:g}; the tightest these {c['rows']:,} scores support "
        f"is {c['tightest_supported_target_fpr']:.2g}"
        + (" (accepted with --accept-tightest-target)." if c["accepted_tightest_target"] else "."),
        f"- Bootstrap 90 % interval of the threshold: [{low:.4g}, {high:.4g}].",
        "",
        f"Held-out check on the last {check['rows']:,} normal rows ({_span(check['time_range'])}): judged "
        f"where at least {JUDGED_MIN_EXPECTED:g} false alarms are expected (it holds within "
        f"{CHECK_BAND[0]:g}-{CHECK_BAND[1]:g}x the target), else reported.",
        "",
        "| target | threshold | false alarms | expected | rate (95 % interval) | ratio | status |",
        "|---|---|---|---|---|---|---|",
        *(_check_row(level) for level in check["levels"]),
        "",
        f"The previous threshold flags {before['false_alarms']:,} of these rows "
        f"({before['false_alarm_rate']:.3g}, {before['ratio']:.3g}x its target {old['target_fpr']:g}).",
        *_alarm_lines(r.get("alarms"), manifest.alarms),
        "",
        f'Roll back: `POST /v1/admin/reload` with `{{"version": "{r["previous_version"]}"}}`, and point '
        f'`{CURRENT_FILE}` back at it so that a restart keeps it (docs/training.md, "Recalibrating").',
    ]
    return "\n".join(lines)


def _alarm_lines(record: dict[str, Any] | None, spec: AlarmSpec | None) -> list[str]:
    """The card's lines on the episode rule's level (none for a version without a rule)."""
    if record is None or spec is None:
        return []
    check, days = record["check"], record["check"]["days"]
    rule = (
        f"{spec.k} of {spec.n} readings, target {spec.target_episodes_per_day:g} false episodes per asset-day"
    )
    if record["re_estimated"]:
        head = f"- Alarm episodes ({rule}): level {record['previous_level']:.4g} → **{record['level']:.4g}**."
    else:
        head = (f"- Alarm episodes ({rule}): level {record['level']:.4g} kept from the previous version: "
                f"{record['fit']['why']}.")  # fmt: skip
    return [
        "",
        head,
        f"  On the check rows ({days:.3g} asset-days): {check['new']['episodes']} episodes at the level "
        f"served, {check['previous']['episodes']} at the previous one.",
    ]


def _span(time_range: dict[str, Any]) -> str:
    if "from" in time_range:
        return f"{time_range['from']} to {time_range['to']}"
    return f"data rows {time_range['first_row']:,} to {time_range['last_row']:,}"


def _check_row(level: dict[str, Any]) -> str:
    low, high = level["false_alarm_rate_ci95"]
    status = level["status"] + (
        (": holds" if level["within_band"] else ": outside the band") if level["status"] == "judged" else ""
    )
    return (
        f"| {level['target_fpr']:g} | {level['threshold']:.4g} | {level['false_alarms']:,} | "
        f"{level['expected_false_alarms']:.3g} | {level['false_alarm_rate']:.3g} [{low:.3g}, {high:.3g}] | "
        f"{level['ratio']:.3g}x | {status} |"
    )
