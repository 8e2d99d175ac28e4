"""Which ONNX variant to serve: graph optimisation offline vs at load, and fp16 / int8 against fp32.

For each variant of the shipped scorer graph: session creation time (median of repeats), in-process
throughput at batch 1 and 64 on one intra-op thread, and — against the fp32 graph on real readings of the
synthetic plant, normal and faulty — the largest relative score error and how many anomaly decisions at
the stored threshold flip. Prints a table with the command that produced it and writes JSON beside it.

    .venv/bin/python -m bench.onnx_variants [--model model_store/factory-ae] [--out FILE.json]

Needs the `train` extra (onnx; the synthetic plant). Run it alone: the machine has two cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from factory_anomaly.artifact import SCORER, resolve_current, verify_artifact
from factory_anomaly.plant.synthetic import Plant, PlantConfig

SESSION_REPEATS = 7
TIMED_SECONDS = 1.5


def _options(level: ort.GraphOptimizationLevel, save_to: Path | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return options


def _session(path: Path, level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), _options(level), providers=["CPUExecutionProvider"])


def _creation_ms(path: Path, level: ort.GraphOptimizationLevel) -> float:
    times = []
    for _ in range(SESSION_REPEATS):
        started = time.perf_counter()
        _session(path, level)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _throughput(session: ort.InferenceSession, x: np.ndarray) -> float:
    """Readings per second for repeated runs on batch `x`."""
    name = session.get_inputs()[0].name
    for _ in range(20):
        session.run(None, {name: x})
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < TIMED_SECONDS:
        session.run(None, {name: x})
        runs += 1
    return runs * len(x) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("model_store/factory-ae"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/onnx_variants.json"))
    args = parser.parse_args(argv)

    version = resolve_current(args.model)
    manifest = verify_artifact(version)
    fp32 = version / manifest.graphs[SCORER].file
    threshold = manifest.threshold.value
    plant = Plant(PlantConfig(n_sensors=manifest.n_sensors), plant_seed=0)
    run = plant.simulate(4000, seed=77, anomaly_rate=0.2)
    real = run.values

    work = Path(tempfile.mkdtemp(prefix="onnx-variants-"))
    optimised = work / "optimised.onnx"
    _ = ort.InferenceSession(
        str(fp32), _options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimised), ["CPUExecutionProvider"]
    )
    fp16 = work / "fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(fp16))
    int8 = work / "int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)

    variants = {
        "fp32, optimised at load (ENABLE_ALL)": (fp32, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        "fp32, optimised offline, loaded with optimisation off": (
            optimised,
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ),
        "fp32, no optimisation": (fp32, ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        "fp16 weights (fp32 I/O)": (fp16, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        "int8 dynamic quantisation": (int8, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    }
    reference = _session(fp32, ort.GraphOptimizationLevel.ORT_ENABLE_ALL).run(None, {"readings": real})[0]
    ref_flags = reference > threshold
    rows: list[dict[str, Any]] = []
    for label, (path, level) in variants.items():
        session = _session(path, level)
        scores = session.run(None, {"readings": real})[0].astype(np.float64)
        rel = np.abs(scores - reference) / np.maximum(np.abs(reference), 1e-12)
        rows.append(
            {
                "variant": label,
                "file_bytes": path.stat().st_size,
                "session_create_ms": _creation_ms(path, level),
                "batch1_readings_per_s": _throughput(session, real[:1]),
                "batch64_readings_per_s": _throughput(session, real[:64]),
                "score_max_rel_error": float(rel.max()),
                "score_median_rel_error": float(np.median(rel)),
                "flipped_decisions": int(np.count_nonzero((scores > threshold) != ref_flags)),
                "rows_compared": len(real),
            }
        )

    command = "python -m bench.onnx_variants " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (
        f"{'variant':<55} {'MB':>5} {'load ms':>8} {'b1 r/s':>8} {'b64 r/s':>8} {'max rel':>8} {'flips':>5}"
    )
    print(f"# {command.strip()}\n# {platform.node()}, {platform.processor() or platform.machine()}, "
          f"onnxruntime {ort.__version__}, model {manifest.version}, 1 intra-op thread")  # fmt: skip
    print(header)
    for r in rows:
        print(
            f"{r['variant']:<55} {r['file_bytes'] / 1e6:5.2f} {r['session_create_ms']:8.1f} "
            f"{r['batch1_readings_per_s']:8.0f} {r['batch64_readings_per_s']:8.0f} "
            f"{r['score_max_rel_error']:8.1e} {r['flipped_decisions']:5d}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "model": manifest.version, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
