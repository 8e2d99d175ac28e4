"""A synthetic factory plant with injected faults and exact ground truth (numpy only).

Why a simulator: real plants rarely come with labelled faults, and a detector can only be judged against
faults whose kind, rows and sensors are known exactly. The plant is built so that a detector has to learn
cross-sensor structure: most faults keep every reading inside that sensor's normal range.

The model of the plant
- `n_latent` process variables z_t (load, feed rate, ambient, ...) follow AR(1) dynamics around the mean of
  the current operating mode; modes form a Markov chain with long dwell times, so the plant moves smoothly
  between regimes.
- Sensors sit at `n_stations` stations. Each sensor reads h = a·z + c, a sparse mix of 2-3 latents that
  shares its station's loading pattern (so sensors of one station and kind move together), passed through
  the nonlinear response of its physical kind (temperature: softplus, pressure: quadratic, vibration:
  exponential, current: saturating tanh, ...), scaled to its unit and range, plus white noise with a
  per-sensor signal-to-noise ratio. Some sensors are quantised; a few (supply voltages) are nearly constant.
- A `Plant` is fixed by `plant_seed`; `simulate(..., seed)` draws a new run of the same plant, so fresh
  normal data for a realised false-alarm check comes from the plant the model was trained on.

Fault kinds (ground truth = label, kind and the exact sensors at fault, per row)
- spike: 1-3 sensors jump by 6-12 noise standard deviations for 1-3 rows, towards the side with room
  and no further than the sensor's normal range.
- stuck: 1-3 sensors hold the reading they had when the fault began (no noise) while the plant moves on.
- drift: a group of related sensors (one station, one kind) gets an offset that ramps (or steps) to 4-8
  noise standard deviations.
- correlation_break: a station's sensors report values from another time of the same run: each reading is
  plausible and even jointly plausible within the group, but inconsistent with the rest of the plant.
- noise_burst: a few sensors of one station get 4-8x their noise.
- excursion: one process variable leaves its normal operating envelope; every sensor stays consistent with
  the process, and the sensors at fault are those moved by more than 3 noise standard deviations (more
  than 1 while the push is still ramping up).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FAULT_KINDS: tuple[str, ...] = ("spike", "stuck", "drift", "correlation_break", "noise_burst", "excursion")
NORMAL = "none"  # fault_kind of normal rows in the side files
EPISODE_GAP = 10  # normal rows at least around each fault episode, by default


def _softplus(h: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, 2.0 * h) / 2.0


def _sigmoid(h: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-3.0 * h))


@dataclass(frozen=True)
class SensorKind:
    """A physical sensor family: how it responds to the process and in which unit it reports."""

    short: str
    unit: str
    response: Callable[[np.ndarray], np.ndarray]
    offset: tuple[float, float]  # range of the reading's base value
    span: tuple[float, float]  # range of the process-driven swing
    lower_limit: float | None  # physical floor (no negative vibration)
    upper_limit: float | None
    quantum: float  # reading resolution of the quantised sensors of this kind


KINDS: dict[str, SensorKind] = {
    "temperature": SensorKind("temp", "degC", _softplus, (20, 180), (10, 60), -40.0, None, 0.1),
    "pressure": SensorKind("pres", "bar", lambda h: h * h + h, (1, 12), (0.5, 3), 0.0, None, 0.01),
    "vibration": SensorKind("vib", "mm/s", lambda h: np.exp(0.8 * h), (0.2, 1.0), (0.5, 3), 0.0, None, 0.01),
    "current": SensorKind("curr", "A", lambda h: np.tanh(1.5 * h), (10, 80), (5, 30), 0.0, None, 0.1),
    "flow": SensorKind("flow", "m3/h", lambda h: h, (20, 200), (5, 40), 0.0, None, 0.1),
    "speed": SensorKind("speed", "rpm", _sigmoid, (600, 1500), (200, 1200), 0.0, None, 1.0),
    "valve": SensorKind("valve", "%", _sigmoid, (10, 30), (20, 60), 0.0, 100.0, 0.5),
    "power": SensorKind("power", "kW", lambda h: h * np.abs(h), (50, 400), (10, 80), 0.0, None, 0.1),
}
# Share of sensors per kind; the remainder after rounding goes to temperature.
KIND_SHARES: dict[str, float] = {
    "temperature": 0.22,
    "pressure": 0.16,
    "vibration": 0.14,
    "current": 0.12,
    "flow": 0.12,
    "speed": 0.06,
    "valve": 0.08,
    "power": 0.10,
}
VOLTAGE_NOMINAL_V = 24.0  # nearly constant supply-voltage sensors


@dataclass(frozen=True)
class PlantConfig:
    n_sensors: int = 1000
    n_latent: int = 8
    n_modes: int = 4
    n_stations: int = 20
    mean_dwell_rows: int = 900  # expected rows between operating-mode changes
    ar_coefficient: float = 0.98  # z_t - mu = phi (z_{t-1} - mu) + eps: time constant ~50 rows
    quantised_share: float = 0.15
    near_constant_share: float = 0.01
    snr_range: tuple[float, float] = (4.0, 20.0)  # process sd / noise sd, log-uniform per sensor
    sample_period_s: float = 1.0
    start: str = "2026-01-01T00:00:00"

    def __post_init__(self) -> None:
        if self.n_sensors < 2:
            raise ValueError(f"a plant needs at least 2 sensors, got {self.n_sensors}")
        if self.n_latent < 1 or self.n_modes < 1 or self.n_stations < 1:
            raise ValueError("n_latent, n_modes and n_stations must be positive")


@dataclass
class Run:
    """One simulated stretch of plant operation; every array has one row per reading, in time order."""

    values: np.ndarray  # float32 [rows, n_sensors], what the sensors report
    timestamps: np.ndarray  # datetime64[s] [rows]
    labels: np.ndarray  # int8 [rows]: 1 = a fault is active
    fault_kinds: np.ndarray  # object [rows]: one of FAULT_KINDS, or NORMAL
    fault_sensors: dict[int, list[int]]  # row -> sorted sensor indices at fault (anomalous rows only)
    modes: np.ndarray  # int16 [rows]: operating mode
    latent: np.ndarray = field(repr=False)  # float64 [rows, n_latent]: the process variables


class Plant:
    """A fixed plant: sensor layout, responses and noise levels all follow from `plant_seed`."""

    def __init__(self, config: PlantConfig | None = None, plant_seed: int = 0) -> None:
        self.config = cfg = config or PlantConfig()
        self.plant_seed = plant_seed
        rng = np.random.default_rng([plant_seed, 0xFAC7])
        n, n_latent = cfg.n_sensors, cfg.n_latent

        self.mode_means = rng.normal(0.0, 1.2, size=(cfg.n_modes, n_latent))
        self.mode_means[0] = 0.0
        self.transition = _mode_transitions(rng, cfg.n_modes, cfg.mean_dwell_rows)

        self.kinds = _assign_kinds(rng, n, cfg.near_constant_share)
        self.stations = rng.integers(0, cfg.n_stations, size=n)
        self.stations[np.argsort(rng.random(n))[: cfg.n_stations]] = np.arange(min(n, cfg.n_stations))
        station_pattern = rng.normal(size=(cfg.n_stations, n_latent))
        loadings = np.zeros((n, n_latent))
        for j in range(n):
            active = rng.choice(n_latent, size=min(n_latent, int(rng.integers(2, 4))), replace=False)
            loadings[j, active] = (
                rng.normal(size=active.size) + 0.7 * station_pattern[self.stations[j], active]
            )
        self.loadings = loadings
        self.bias = rng.normal(0.0, 0.3, size=n)
        self.offset = np.empty(n)
        self.span = np.empty(n)
        self.quantum = np.zeros(n)
        for name, kind in KINDS.items():
            idx = np.flatnonzero(self.kinds == name)
            self.offset[idx] = rng.uniform(*kind.offset, size=idx.size)
            self.span[idx] = rng.uniform(*kind.span, size=idx.size) * rng.choice([-1.0, 1.0], size=idx.size)
        volts = np.flatnonzero(self.kinds == "voltage")
        self.offset[volts] = VOLTAGE_NOMINAL_V
        self.span[volts] = 0.004  # a few millivolts of load sag

        # Scale each sensor's process argument to unit variance, so the responses act in their
        # nonlinear region, then measure the process-driven spread to set noise and ranges.
        pilot_latent, _ = self._latent_path(4000, np.random.default_rng([plant_seed, 1]))
        h = pilot_latent @ self.loadings.T
        self.loadings /= h.std(axis=0)[:, None] + 1e-12
        self.bias -= (pilot_latent @ self.loadings.T).mean(axis=0)
        clean = self.clean_values(pilot_latent)
        process_sd = clean.std(axis=0)
        snr = np.exp(rng.uniform(np.log(cfg.snr_range[0]), np.log(cfg.snr_range[1]), size=n))
        self.noise_sd = np.where(self.kinds == "voltage", 0.02, process_sd / snr)
        quantised = rng.random(n) < cfg.quantised_share
        for name, kind in KINDS.items():
            sel = quantised & (self.kinds == name)
            # a resolution of about half a noise sd, rounded to the kind's display step
            self.quantum[sel] = np.maximum(
                kind.quantum, np.round(0.5 * self.noise_sd[sel] / kind.quantum) * kind.quantum
            )
        self.quantum[volts] = 0.1  # 24.0 V shown with one decimal: mostly the same reading
        self.typical_low = np.percentile(clean, 0.5, axis=0) - 2 * self.noise_sd
        self.typical_high = np.percentile(clean, 99.5, axis=0) + 2 * self.noise_sd
        self.latent_sd = pilot_latent.std(axis=0)
        self.sensor_names = _sensor_names(self.kinds, self.stations)

    # --- the normal process ---------------------------------------------------------------
    def _latent_path(self, n_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        phi = cfg.ar_coefficient
        innovation_sd = 0.6 * np.sqrt(1.0 - phi * phi)
        modes = np.empty(n_rows, dtype=np.int16)
        latent = np.empty((n_rows, cfg.n_latent))
        mode = int(rng.integers(cfg.n_modes))
        z = self.mode_means[mode] + rng.normal(0.0, 0.6, cfg.n_latent)
        shocks = rng.normal(0.0, innovation_sd, size=(n_rows, cfg.n_latent))
        switches = rng.random(n_rows)
        for t in range(n_rows):
            row = self.transition[mode]
            if switches[t] > row[mode]:  # leave the mode, to one of the others
                leave = np.where(np.arange(cfg.n_modes) == mode, 0.0, row)
                mode = int(rng.choice(cfg.n_modes, p=leave / leave.sum()))
            mu = self.mode_means[mode]
            z = mu + phi * (z - mu) + shocks[t]
            latent[t] = z
            modes[t] = mode
        return latent, modes

    def clean_values(self, latent: np.ndarray) -> np.ndarray:
        """Noise-free readings [rows, n_sensors] for process states `latent` [rows, n_latent]."""
        h = latent @ self.loadings.T + self.bias
        out = np.empty_like(h)
        for name, kind in KINDS.items():
            idx = np.flatnonzero(self.kinds == name)
            out[:, idx] = self.offset[idx] + self.span[idx] * kind.response(h[:, idx])
        volts = np.flatnonzero(self.kinds == "voltage")
        out[:, volts] = self.offset[volts] - self.span[volts] * h[:, volts]
        return out

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        """Clip to physical limits, then quantise, as a real transmitter would report."""
        for name, kind in KINDS.items():
            idx = np.flatnonzero(self.kinds == name)
            if kind.lower_limit is not None or kind.upper_limit is not None:
                raw[:, idx] = np.clip(raw[:, idx], kind.lower_limit, kind.upper_limit)
        q = self.quantum > 0
        raw[:, q] = np.round(raw[:, q] / self.quantum[q]) * self.quantum[q]
        return raw.astype(np.float32)

    # --- a run, with faults ---------------------------------------------------------------
    def simulate(
        self, n_rows: int, *, seed: int = 0, anomaly_rate: float = 0.0, episode_gap: int = EPISODE_GAP
    ) -> Run:
        """Simulate `n_rows` readings; about `anomaly_rate` of them fall inside injected fault episodes, each
        with at least `episode_gap` normal readings before and after it. With a gap longer than the
        default, episodes are spread over the kinds by count rather than by rows (`_schedule_episodes`),
        and fewer may fit than the rate asks for."""
        if n_rows < 1:
            raise ValueError(f"n_rows must be positive, got {n_rows}")
        if not 0.0 <= anomaly_rate < 0.5:
            raise ValueError(f"anomaly_rate must be in [0, 0.5), got {anomaly_rate}")
        if episode_gap < EPISODE_GAP:
            raise ValueError(f"episode_gap must be at least {EPISODE_GAP}, got {episode_gap}")
        rng = np.random.default_rng([self.plant_seed, seed, 2])
        latent, modes = self._latent_path(n_rows, rng)
        clean = self.clean_values(latent)
        noise = rng.normal(size=clean.shape) * self.noise_sd
        raw = clean + noise
        labels = np.zeros(n_rows, dtype=np.int8)
        kinds = np.full(n_rows, NORMAL, dtype=object)
        fault_sensors: dict[int, list[int]] = {}

        stuck: list[tuple[slice, np.ndarray]] = []
        for start, stop, kind in _schedule_episodes(rng, n_rows, anomaly_rate, episode_gap):
            rows = slice(start, stop)
            at_fault = self._inject(kind, rows, raw, clean, latent, noise, rng, stuck)
            for r in range(start, stop):
                sensors = at_fault(r) if callable(at_fault) else at_fault
                labels[r] = 1
                kinds[r] = kind
                fault_sensors[r] = sorted(int(s) for s in sensors)
        values = self._finish(raw)
        for rows, sensors in stuck:  # hold the reported value, after quantisation
            values[rows, sensors] = values[rows.start, sensors]
        period = np.timedelta64(int(round(self.config.sample_period_s * 1000)), "ms")
        timestamps = np.datetime64(self.config.start, "ms") + period * np.arange(n_rows)
        return Run(values, timestamps, labels, kinds, fault_sensors, modes, latent)

    def _related_group(self, rng: np.random.Generator, max_size: int) -> np.ndarray:
        """Sensors of one kind at one station (the unit a calibration drift or a loose earth hits)."""
        for _ in range(50):
            j = int(rng.integers(self.config.n_sensors))
            if self.kinds[j] == "voltage":
                continue
            group = np.flatnonzero((self.stations == self.stations[j]) & (self.kinds == self.kinds[j]))
            if group.size >= 2:
                return rng.permutation(group)[:max_size]
        return np.array([j])

    def _inject(
        self,
        kind: str,
        rows: slice,
        raw: np.ndarray,
        clean: np.ndarray,
        latent: np.ndarray,
        noise: np.ndarray,
        rng: np.random.Generator,
        stuck: list[tuple[slice, np.ndarray]],
    ) -> np.ndarray | Callable[[int], np.ndarray]:
        n = self.config.n_sensors
        length = rows.stop - rows.start
        candidates = np.flatnonzero(self.kinds != "voltage")
        if kind == "spike":
            sensors = rng.choice(candidates, size=int(rng.integers(1, 4)), replace=False)
            size = rng.uniform(6.0, 12.0, size=sensors.size) * self.noise_sd[sensors]
            here = raw[rows.start, sensors]
            room_up = self.typical_high[sensors] - here
            room_down = here - self.typical_low[sensors]
            # towards the side with more room, and no further than the sensor's normal range allows
            sign = np.where(room_up >= room_down, 1.0, -1.0)
            size = np.minimum(size, np.maximum(np.maximum(room_up, room_down), 3.0 * self.noise_sd[sensors]))
            raw[rows, sensors] += sign * size
            return sensors
        if kind == "stuck":
            sensors = rng.choice(candidates, size=int(rng.integers(1, 4)), replace=False)
            stuck.append((rows, sensors))
            return sensors
        if kind == "drift":
            sensors = self._related_group(rng, max_size=12)
            final = (
                rng.uniform(4.0, 8.0, size=sensors.size) * self.noise_sd[sensors] * rng.choice([-1.0, 1.0])
            )
            ramp = np.linspace(1.0 / length, 1.0, length) if rng.random() < 0.6 else np.ones(length)
            raw[rows, sensors] += ramp[:, None] * final
            return sensors
        if kind == "correlation_break":
            station = int(self.stations[rng.choice(candidates)])
            sensors = np.flatnonzero((self.stations == station) & (self.kinds != "voltage"))
            if sensors.size > 40:
                sensors = np.sort(rng.choice(sensors, size=40, replace=False))
            donor = _far_donor(rng, raw.shape[0], rows, latent)
            raw[rows, sensors] = clean[donor][:, sensors] + noise[donor][:, sensors]
            return sensors
        if kind == "noise_burst":
            group = self._related_group(rng, max_size=6)
            factor = rng.uniform(4.0, 8.0)
            extra = rng.normal(size=(length, group.size)) * self.noise_sd[group] * np.sqrt(factor**2 - 1.0)
            raw[rows, group] += extra
            return group
        if kind == "excursion":
            variable = int(rng.integers(self.config.n_latent))
            push = np.zeros_like(latent[rows])
            envelope = rng.uniform(2.5, 4.0) * self.latent_sd[variable] * rng.choice([-1.0, 1.0])
            push[:, variable] = envelope * np.minimum(1.0, np.arange(1, length + 1) / 3.0)
            moved = self.clean_values(latent[rows] + push) - clean[rows]
            raw[rows] += moved
            shift = np.abs(moved) / self.noise_sd

            def at_fault(r: int) -> np.ndarray:
                # sensors moved by more than 3 noise sd; while the push is still small, those moved
                # by more than 1; at the very least the one moved most. Every episode row is a fault.
                row = shift[r - rows.start]
                for cutoff in (3.0, 1.0):
                    if (row > cutoff).any():
                        return np.flatnonzero(row > cutoff)
                return np.array([int(np.argmax(row))])

            return at_fault
        raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS} ({n} sensors)")

    def describe_sensors(self) -> list[dict[str, Any]]:
        """One record per sensor: name, kind, unit, station, quantum, noise sd (for side files and docs)."""
        units = {name: kind.unit for name, kind in KINDS.items()} | {"voltage": "V"}
        return [
            {
                "index": j,
                "name": self.sensor_names[j],
                "kind": str(self.kinds[j]),
                "unit": units[str(self.kinds[j])],
                "station": int(self.stations[j]),
                "quantum": float(self.quantum[j]),
                "noise_sd": float(self.noise_sd[j]),
            }
            for j in range(self.config.n_sensors)
        ]


def _mode_transitions(rng: np.random.Generator, n_modes: int, mean_dwell_rows: int) -> np.ndarray:
    stay = 1.0 - 1.0 / max(mean_dwell_rows, 1)
    matrix = np.zeros((n_modes, n_modes))
    for m in range(n_modes):
        if n_modes == 1:
            matrix[m, m] = 1.0
            continue
        others = rng.dirichlet(np.ones(n_modes - 1)) * (1.0 - stay)
        matrix[m] = np.insert(others, m, stay)
    return matrix


def _assign_kinds(rng: np.random.Generator, n: int, near_constant_share: float) -> np.ndarray:
    n_volt = max(1, int(round(near_constant_share * n))) if n >= 20 else 0
    counts = {name: int(share * (n - n_volt)) for name, share in KIND_SHARES.items()}
    counts["temperature"] += n - n_volt - sum(counts.values())
    kinds = np.array(
        [name for name, c in counts.items() for _ in range(c)] + ["voltage"] * n_volt, dtype=object
    )
    return kinds[rng.permutation(n)]


def _sensor_names(kinds: np.ndarray, stations: np.ndarray) -> tuple[str, ...]:
    short = {name: kind.short for name, kind in KINDS.items()} | {"voltage": "volt"}
    seen: dict[tuple[int, str], int] = {}
    names = []
    for kind, station in zip(kinds, stations, strict=True):
        key = (int(station), str(kind))
        seen[key] = seen.get(key, 0) + 1
        names.append(f"st{station:02d}_{short[str(kind)]}_{seen[key]:02d}")
    return tuple(names)


def _schedule_episodes(
    rng: np.random.Generator, n_rows: int, anomaly_rate: float, gap: int = EPISODE_GAP
) -> list[tuple[int, int, str]]:
    """Non-overlapping fault episodes covering about `anomaly_rate` of the rows, separated by at least
    `gap` normal rows. Each goes to the kind with the fewest rows so far, so every kind covers about as
    many rows; with a wider gap (a run for judging alarm episodes, where a fault must not start while
    the previous one's alarm is still open) to the kind with the fewest episodes, so that short kinds
    (spikes) do not take most of the few places."""
    durations = {
        "spike": (1, 3),
        "stuck": (20, 120),
        "drift": (30, 200),
        "correlation_break": (10, 60),
        "noise_burst": (10, 60),
        "excursion": (30, 150),
    }
    wanted = int(round(anomaly_rate * n_rows))
    episodes: list[tuple[int, int, str]] = []
    taken = np.zeros(n_rows + 1, dtype=bool)
    rows_by_kind = dict.fromkeys(FAULT_KINDS, 0)
    count_by_kind = dict.fromkeys(FAULT_KINDS, 0)
    balance = rows_by_kind if gap == EPISODE_GAP else count_by_kind
    covered, attempts = 0, 0
    while covered < wanted and attempts < 20 * max(wanted, 1):
        attempts += 1
        fewest = min(balance.values())
        kind = str(rng.choice([k for k, c in balance.items() if c == fewest]))
        lo, hi = durations[kind]
        length = min(int(rng.integers(lo, hi + 1)), max(lo, wanted - covered))
        start = int(rng.integers(20, max(21, n_rows - length)))
        stop = min(start + length, n_rows)
        margin = slice(max(0, start - gap), min(n_rows, stop + gap))
        if stop <= start or taken[margin].any():
            continue
        taken[start:stop] = True
        rows_by_kind[kind] += stop - start
        count_by_kind[kind] += 1
        episodes.append((start, stop, kind))
        covered += stop - start
    return sorted(episodes)


def _far_donor(rng: np.random.Generator, n_rows: int, rows: slice, latent: np.ndarray) -> np.ndarray:
    """Rows from elsewhere in the run whose process state differs most from the faulty stretch."""
    length = rows.stop - rows.start
    candidates = rng.integers(0, max(1, n_rows - length), size=32)
    here = latent[rows].mean(axis=0)
    distance = np.array([np.linalg.norm(latent[c : c + length].mean(axis=0) - here) for c in candidates])
    start = int(candidates[int(np.argmax(distance))])
    return np.arange(start, start + length) % n_rows


# --- files ---------------------------------------------------------------------------------

FORMATS: tuple[str, ...] = ("csv", "parquet", "npz")


def write_run(plant: Plant, run: Run, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Write the readings (timestamp, sensors, label) and the ground-truth side files; return their paths.

    readings.{csv,parquet,npz}: one row per reading, header = `timestamp`, sensor names, `label`.
    labels.csv: `label`, `fault_kind` per row. fault_sensors.json: {row: [sensor indices]} for every
    anomalous row. sensors.json: per-sensor metadata. plant.json: the configuration and seeds.
    """
    import pandas as pd  # only the file writer needs pandas; the simulator itself is numpy-only

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    names = list(plant.sensor_names)
    frame = pd.DataFrame(run.values, columns=names)
    frame.insert(
        0, "timestamp", pd.to_datetime(run.timestamps).strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    )
    frame["label"] = run.labels
    if "csv" in formats:
        paths["csv"] = out_dir / "readings.csv"
        frame.to_csv(paths["csv"], index=False, float_format="%.7g")
    if "parquet" in formats:
        paths["parquet"] = out_dir / "readings.parquet"
        frame.assign(timestamp=pd.to_datetime(run.timestamps)).to_parquet(paths["parquet"], index=False)
    if "npz" in formats:
        paths["npz"] = out_dir / "readings.npz"
        np.savez_compressed(
            paths["npz"],
            values=run.values,
            sensor_names=np.array(names),
            label=run.labels,
            timestamp=run.timestamps.astype("datetime64[ns]"),
        )
    paths["labels"] = out_dir / "labels.csv"
    pd.DataFrame({"label": run.labels, "fault_kind": run.fault_kinds}).to_csv(paths["labels"], index=False)
    paths["fault_sensors"] = out_dir / "fault_sensors.json"
    paths["fault_sensors"].write_text(json.dumps({str(r): s for r, s in run.fault_sensors.items()}))
    paths["sensors"] = out_dir / "sensors.json"
    paths["sensors"].write_text(json.dumps(plant.describe_sensors(), indent=1))
    paths["plant"] = out_dir / "plant.json"
    counts = {k: int((run.fault_kinds == k).sum()) for k in FAULT_KINDS}
    meta = {
        "config": asdict(plant.config),
        "plant_seed": plant.plant_seed,
        "rows": int(run.values.shape[0]),
        "anomalous_rows": int(run.labels.sum()),
        "anomalous_rows_by_kind": counts,
    }
    paths["plant"].write_text(json.dumps(meta, indent=1))
    return paths
