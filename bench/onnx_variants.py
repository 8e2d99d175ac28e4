"""Which ONNX variant to serve: graph optimisation offline vs at load, and fp16 / int8 against fp32.

For each variant of the shipped scorer graph: session creation time (median of repeats), in-process
throughput at batch 1 and 64 on one intra-op thread, and — against the fp32 graph on real readings of the
synthetic plant, normal and faulty — the largest relative score error and how many anomaly decisions at
the stored threshold flip. Prints a table with the command that produced it and writes JSON beside it.
The figures, with the command that measured them: docs/model_format.md, "Variants considered".

    .venv/bin/python -m bench.onnx_variants [--model model_store/factory-ae] [--out FILE.json]

Needs the `train` extra (onnx; the synthetic plant). Run it alone: the machine has two cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from bench.common import heading, markdown_table, ort_session, plant_readings, results_head, write_results
from factory_anomaly.artifact import SCORER, resolve_current, verify_artifact

SESSION_REPEATS = 7
TIMED_SECONDS = 1.5
# The accuracy columns' readings: the synthetic plant, 20 % of them in fault episodes.
READING_ROWS, READINGS_SEED, ANOMALY_RATE = 4000, 77, 0.2


def _creation_ms(path: Path, level: ort.GraphOptimizationLevel) -> float:
    times = []
    for _ in range(SESSION_REPEATS):
        started = time.perf_counter()
        ort_session(path, level=level)
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
    real = plant_readings(manifest.sensor_names, READING_ROWS, seed=READINGS_SEED, anomaly_rate=ANOMALY_RATE)

    work = Path(tempfile.mkdtemp(prefix="onnx-variants-"))
    optimised = work / "optimised.onnx"
    ort_session(fp32, optimised_to=optimised)
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
    reference = ort_session(fp32).run(None, {"readings": real})[0]
    ref_flags = reference > threshold
    rows: list[dict[str, Any]] = []
    for label, (path, level) in variants.items():
        session = ort_session(path, level=level)
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

    results = results_head("bench.onnx_variants", argv, manifest=manifest) | {
        "onnxruntime": ort.__version__,
        "intra_op_threads": 1,
        "rows": rows,
    }
    print(heading(results))
    print(f"# onnxruntime {ort.__version__}, model {manifest.version}, 1 intra-op thread")
    print(
        markdown_table(
            ["variant", "MB", "load ms", "batch 1 readings/s", "batch 64 readings/s"]
            + ["max rel. error", "flips"],
            (
                [r["variant"], f"{r['file_bytes'] / 1e6:.2f}", f"{r['session_create_ms']:.1f}"]
                + [f"{r['batch1_readings_per_s']:.0f}", f"{r['batch64_readings_per_s']:.0f}"]
                + [f"{r['score_max_rel_error']:.1e}", r["flipped_decisions"]]
                for r in rows
            ),
        )
    )
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
