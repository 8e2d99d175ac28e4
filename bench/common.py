"""What every benchmark shares, so each one measures and reports the same way. The benchmarks import from
here and never from one another.

- the machine and the command: `machine()`, `command()`;
- CPU pinning (server on SERVER_CPU, client and load generator on CLIENT_CPU): `pin_client()` -> `Pinning`,
  `pinned_to()`;
- a uvicorn under test, spawned on a free port, pinned, timed to ready, its memory read from /proc,
  stopped with SIGTERM: `Server`, `server_env()`, `free_port()`, `default_python()`;
- onnxruntime sessions built as the service builds them: `ort_session()`;
- readings of the synthetic plant the shipped model was trained on, and request bodies made of them:
  `plant_readings()`, `json_reading()`, `json_batch()`, `binary_batch()`, `write_bodies()`;
- closed-loop wrk runs over loopback: `Route`, `SCORE`, `FLOOR`, `require_wrk()`, `wrk()`;
- latencies and ratios: `time_each_ms()`, `latency_ms()`, `ratio()`, and the server's /metrics:
  `metric_samples()`;
- the results' head, the printed table and the JSON beside it: `results_head()`, `fmt()`,
  `markdown_table()`, `heading()`, `write_results()`;
- a per-reading flag series replayed through the service's calibration-drift detector and judged day by
  day (`bench.drift_days` on the SMD servers, the quality benchmark on the real model): `drift_by_day()`.

The figures these measure live in docs/ with the command that measured them (docs/benchmarks.md lists
where each benchmark's figures are).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
from prometheus_client.parser import text_string_to_metric_families

from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.app.model.loader import CPU, ModelLoadError, select_providers
from factory_anomaly.app.serving.drift import DRIFT, DriftDetector, DriftSettings
from factory_anomaly.artifact import Manifest
from factory_anomaly.plant.synthetic import Plant, PlantConfig

ROOT = Path(__file__).resolve().parents[1]
APP = "factory_anomaly.app.main:app"
SERVER_CPU, CLIENT_CPU = 0, 1
STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 15.0
POLL_S = 0.005
MIB = 1 << 20
JSON, OCTET = "application/json", "application/octet-stream"
# The readings: the synthetic plant the shipped model was trained on, 10 % of its rows in fault episodes.
PLANT_SEED, READINGS_SEED, ANOMALY_RATE = 0, 5, 0.1
# The bodies `write_bodies` writes for wrk: single readings, and batches of BATCH_ROWS as JSON and binary.
SINGLE_BODIES, BATCH_BODIES, BATCH_ROWS = 32, 8, 64
BODY_ROWS = SINGLE_BODIES + BATCH_BODIES * BATCH_ROWS
WRK_LUA = ROOT / "bench" / "wrk" / "post_bodies.lua"
WRK_TIMEOUT = "10s"


# --- the machine and the command ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The host, its CPU model and count, the OS and Python: what a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def command(module: str, argv: list[str] | None) -> str:
    """The command that produced a result, as a reader would type it: `python -m <module> <arguments>`
    (`argv` None: this process's own arguments)."""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


# --- pinning ------------------------------------------------------------------------------------------------


def pinned_to(cpu: int | None) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child to `cpu` between fork and exec, so every thread the server
    starts later inherits the mask (safe: the benchmarks start no threads before spawning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@dataclass(frozen=True)
class Pinning:
    """What `pin_client` did: the CPUs to give the server and the load generator (None: not pinned)."""

    applied: bool
    detail: str

    @property
    def server_cpu(self) -> int | None:
        return SERVER_CPU if self.applied else None

    @property
    def client_cpu(self) -> int | None:
        return CLIENT_CPU if self.applied else None

    def as_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "detail": self.detail}


def pin_client() -> Pinning:
    """Pins this process (the client, and the parent of wrk) to CLIENT_CPU when the server can have
    SERVER_CPU to itself (the server is pinned at spawn: `Server(..., cpu=pinning.server_cpu)`), and says
    what was done."""
    if not hasattr(os, "sched_setaffinity"):
        return Pinning(False, "not applied: os.sched_setaffinity is not available on this platform")
    allowed = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= allowed:
        wanted = f"CPUs {SERVER_CPU} and {CLIENT_CPU}"
        return Pinning(False, f"not applied: {wanted} are not both available ({sorted(allowed)})")
    os.sched_setaffinity(0, {CLIENT_CPU})
    return Pinning(True, f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}")


# --- the server under test ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_python() -> Path:
    """The project's virtual environment when there is one (it has the serving dependencies)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def server_env(model_store: str | Path, model_name: str) -> dict[str, str]:
    """This process's environment without any ANOMALY_ or TYPICAL_ variable, plus the model store and
    name: every other setting of the server at its default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOMALY_", "TYPICAL_"))}
    return env | {"ANOMALY_MODEL_STORE": str(model_store), "ANOMALY_MODEL_NAME": model_name}


class Server:
    """One `python -m uvicorn <target>` subprocess, output to `log_path`; `cpu` pins it."""

    def __init__(
        self,
        python: Path,
        target: str,
        env: dict[str, str],
        log_path: Path,
        cpu: int | None,
        uvicorn_options: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = [str(python), "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(self.port)]
        self.command += uvicorn_options or []
        self.first_answer_s: float | None = None
        with open(log_path, "wb") as log:
            self.spawned = time.perf_counter()
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned_to(cpu),
            )

    @property
    def shown_command(self) -> str:
        """The command as results show it: `python -m uvicorn ... --port <free> ...`."""
        return " ".join(["python", *self.command[1:]]).replace(f"--port {self.port}", "--port <free>")

    def wait_ready(self, path: str = "/readyz") -> float:
        """Seconds from spawn to the first 200 from GET `path`; `first_answer_s` keeps the seconds to the
        first HTTP answer of any status (polled every POLL_S)."""
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            while True:
                if self.process.poll() is not None:
                    exited = f"{self.command} exited with {self.process.returncode}"
                    raise RuntimeError(f"{exited}:\n{self.log_tail()}")
                try:
                    status: int | None = http.get(path).status_code
                except httpx.TransportError:
                    status = None
                now = time.perf_counter() - self.spawned
                if status is not None and self.first_answer_s is None:
                    self.first_answer_s = now
                if status == 200:
                    return now
                if now > STARTUP_TIMEOUT_S:
                    self.stop()
                    raise RuntimeError(f"{path} not 200 after {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")
                time.sleep(POLL_S)

    def memory_mib(self) -> dict[str, float] | None:
        """VmRSS (resident now) and VmHWM (peak resident) from /proc, in MiB; None without /proc."""
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: int(fields[key].split()[0]) * 1024 / MIB for key in ("VmRSS", "VmHWM")}

    def rss_mib(self) -> float | None:
        memory = self.memory_mib()
        return None if memory is None else memory["VmRSS"]

    def threads_on(self, cpu: int) -> bool:
        """Every thread of the server runs on `cpu` only (threads inherit the affinity they start with)."""
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.process.pid}/task")]
            return all(os.sched_getaffinity(tid) == {cpu} for tid in tids)
        except OSError:
            return False

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after SHUTDOWN_TIMEOUT_S; the exit status (uvicorn's is -SIGTERM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# --- onnxruntime --------------------------------------------------------------------------------------------


PROVIDERS = ("cpu", "cuda")


def ort_session(
    graph: Path,
    intra_op_threads: int = 1,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    optimised_to: Path | None = None,
    providers: Sequence[str] = (CPU,),
) -> ort.InferenceSession:
    """A session with the service's options (factory_anomaly.app.model.loader: 1 inter-op thread,
    sequential, errors-only logging), `intra_op_threads` and the optimisation `level`, on `providers`
    (CPU unless told: `providers_for`); `optimised_to` also saves the optimised graph there."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if optimised_to is not None:
        options.optimized_model_filepath = str(optimised_to)
    return ort.InferenceSession(str(graph), options, providers=list(providers))


def providers_for(choice: str) -> list[str]:
    """onnxruntime providers for a benchmark's `--provider` (cpu | cuda), chosen as the service chooses them
    for ANOMALY_PROVIDER (`select_providers`); exits saying what is missing when CUDA is asked for and
    this onnxruntime has none."""
    try:
        return select_providers(choice, ort.get_available_providers())
    except ModelLoadError as exc:
        raise SystemExit(
            f"--provider {choice}: onnxruntime cannot run it here; CUDA needs onnxruntime-gpu on a CUDA host "
            f'(the `gpu` image, docs/benchmarks.md "GPU"). {exc.message}'
        ) from None


def accelerator(provider: str) -> dict[str, Any]:
    """What the figures ran on besides the CPU: the provider asked for, onnxruntime's version, build
    device and providers, and each GPU `nvidia-smi` lists (none without one)."""
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        gpus = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return {
        "provider": provider,
        "onnxruntime": ort.__version__,
        "onnxruntime_build": ort.get_device(),
        "available_providers": ort.get_available_providers(),
        "gpus": gpus,
    }


# --- readings and bodies ------------------------------------------------------------------------------------


class NotThePlant(SystemExit):
    """The model's sensors are not the synthetic plant's (uncaught: the benchmark exits saying so)."""


def plant_readings(
    sensor_names: Sequence[str], rows: int, seed: int = READINGS_SEED, anomaly_rate: float = ANOMALY_RATE
) -> np.ndarray:
    """float32 [rows, len(sensor_names)]: real readings of the synthetic plant the shipped model was trained
    on (plant seed PLANT_SEED), `anomaly_rate` of them in fault episodes. NotThePlant when the model's
    sensors are not that plant's."""
    plant = Plant(PlantConfig(n_sensors=len(sensor_names)), plant_seed=PLANT_SEED)
    if tuple(plant.sensor_names) != tuple(sensor_names):
        raise NotThePlant(
            f"the model's sensors are not the synthetic plant's (plant seed {PLANT_SEED}); this benchmark "
            "needs a model trained on the default plant (`make model`)"
        )
    values = plant.simulate(rows, seed=seed, anomaly_rate=anomaly_rate).values
    return np.ascontiguousarray(values, dtype=np.float32)


def json_reading(values: np.ndarray, **fields: Any) -> bytes:
    """`{"values": [...], **fields}`: float32 values written by orjson as the shortest text that round-trips,
    as the client sends them."""
    return orjson.dumps({"values": values, **fields}, option=orjson.OPT_SERIALIZE_NUMPY)


def json_batch(rows: np.ndarray) -> bytes:
    """`{"vectors": [[...], ...]}`, written as `json_reading` writes one reading."""
    return orjson.dumps({"vectors": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def binary_batch(rows: np.ndarray) -> bytes:
    """The binary batch body: the rows as little-endian float32, row after row."""
    return np.ascontiguousarray(rows, dtype="<f4").tobytes()


def v2_header(rows: int, n: int) -> bytes:
    """The JSON of a V2 infer request with Triton's binary tensor extension both ways: `rows` x `n`
    float32 after it, and every output answered in binary (what `tritonclient.http` sends by default)."""
    tensor = {
        "name": "readings",
        "datatype": "FP32",
        "shape": [rows, n],
        "parameters": {"binary_data_size": 4 * rows * n},
    }
    return orjson.dumps({"parameters": {"binary_data_output": True}, "inputs": [tensor]})


def v2_batch_binary(model_name: str, n: int) -> Route:
    """V2's infer with the binary batch's readings (its header length is fixed by the shape)."""
    header_length = str(len(v2_header(BATCH_ROWS, n)))
    path = f"/v2/models/{model_name}/infer"
    headers = (("Inference-Header-Content-Length", header_length),)
    label = f"ours V2 infer binary x{BATCH_ROWS} both ways"
    return Route("v2_batch_binary", label, path, OCTET, "v2_binary", BATCH_ROWS, headers=headers)


def write_bodies(values: np.ndarray, workdir: Path) -> dict[str, list[Path]]:
    """Request bodies on disk for wrk's Lua script, from the first BODY_ROWS rows of `values`:
    SINGLE_BODIES single readings ("single"), and BATCH_BODIES batches of BATCH_ROWS rows as JSON
    ("batch_json"), as binary ("batch_binary") and as V2's binary extension ("v2_binary")."""
    if len(values) < BODY_ROWS:
        raise ValueError(f"write_bodies needs {BODY_ROWS} rows, got {len(values)}")
    files: dict[str, list[Path]] = {"single": [], "batch_json": [], "batch_binary": [], "v2_binary": []}

    def write(kind: str, i: int, data: bytes) -> None:
        path = workdir / f"{kind}-{i}.body"
        path.write_bytes(data)
        files[kind].append(path)

    for i in range(SINGLE_BODIES):
        write("single", i, json_reading(values[i]))
    for i in range(BATCH_BODIES):
        rows = values[SINGLE_BODIES + i * BATCH_ROWS : SINGLE_BODIES + (i + 1) * BATCH_ROWS]
        write("batch_json", i, json_batch(rows))
        write("batch_binary", i, binary_batch(rows))
        write("v2_binary", i, v2_header(*rows.shape) + binary_batch(rows))
    return files


# --- wrk ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One kind of request: `key` names it in the JSON, `body` which of `write_bodies`' kinds it posts."""

    key: str
    label: str
    path: str
    content_type: str
    body: str  # "single" | "batch_json" | "batch_binary" | "v2_binary"
    rows: int  # readings per request
    assets: int = 0  # > 0: each request carries X-Asset, the assets in turn (the alarm path)
    headers: tuple[tuple[str, str], ...] = ()  # further headers every request carries (an API key)


SCORE = Route("score", "ours /v1/score JSON x1", "/v1/score", JSON, "single", 1)
BATCH_JSON = Route("batch_json", f"ours /v1/score/batch JSON x{BATCH_ROWS}", "/v1/score/batch", JSON,
                   "batch_json", BATCH_ROWS)  # fmt: skip
BATCH_BINARY = Route("batch_binary", f"ours /v1/score/batch binary x{BATCH_ROWS}", "/v1/score/batch", OCTET,
                     "batch_binary", BATCH_ROWS)  # fmt: skip
EXPLAIN = Route("explain", "ours /v1/explain JSON x1", "/v1/explain", JSON, "single", 1)
FLOOR = Route("floor", "floor POST /noop (x1 body)", "/noop", JSON, "single", 1)
# As a plant runs the service (issue 17): API keys set (`plant_env`), every request with an API key and
# an X-Asset; each body goes to each of ASSETS assets in turn (bench/wrk/post_bodies.lua), so every asset
# receives all the bodies in order.
ASSETS = 16
PLANT_KEY = "bench-plant-key"
PLANT_HEADERS = (("X-API-Key", PLANT_KEY),)


def plant_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the API key PLANT_HEADERS send."""
    return env | {"ANOMALY_API_KEYS": PLANT_KEY}


def require_wrk() -> str:
    """wrk's version line; exits saying how to install wrk when there is none."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (`make bench` installs Debian's; or apt-get install wrk)")
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0]


def wrk(
    url: str, route: Route, bodies: list[Path], connections: int, seconds: float, cpu: int | None
) -> dict[str, Any]:
    """One closed-loop run of wrk (one thread, `connections` keep-alive connections, `cpu` pins it) posting
    `bodies` round-robin: requests, seconds, errors by kind, requests_per_s, readings_per_s and p50, p90,
    p99, max and mean latency in ms. Any socket error or non-2xx answer raises RuntimeError."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={WRK_TIMEOUT}"]
    argv += ["-s", str(WRK_LUA), url, "--", route.path, route.content_type]
    argv += [f"--assets={route.assets}"] if route.assets else []
    argv += [f"--header={name}:{value}" for name, value in route.headers]
    argv += list(map(str, bodies))
    done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pinned_to(cpu), check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    summary = json.loads(lines[0].removeprefix("WRK_JSON "))
    if sum(summary["errors"].values()):
        raise RuntimeError(f"{route.label} at {connections} connections: errors {summary['errors']}")
    run_s = summary["duration_us"] / 1e6
    latency = {f"{key}_ms": value / 1e3 for key, value in summary["latency_us"].items()}
    return {
        "requests": summary["requests"],
        "seconds": run_s,
        "errors": summary["errors"],
        "requests_per_s": summary["requests"] / run_s,
        "readings_per_s": summary["requests"] * route.rows / run_s,
        **latency,
    }


# --- latencies, ratios, /metrics ----------------------------------------------------------------------------


def time_each_ms(call: Callable[[Any], object], inputs: Sequence[Any], n: int) -> np.ndarray:
    """Milliseconds of each of `n` calls, cycling through `inputs` (garbage collected first)."""
    gc.collect()
    out = np.empty(n)
    for i in range(n):
        x = inputs[i % len(inputs)]
        started = time.perf_counter()
        call(x)
        out[i] = time.perf_counter() - started
    return out * 1e3


def latency_ms(ms: Sequence[float] | np.ndarray, digits: int | None = None) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of latencies in ms (numpy's linear percentiles), rounded to `digits`
    when given; None for each figure when there are none."""
    a = np.asarray(ms, dtype=np.float64)
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")
    if a.size == 0:
        return {"n": 0} | dict.fromkeys(keys)
    values = [*np.percentile(a, [50, 90, 99]), a.max(), a.mean()]
    return {"n": int(a.size)} | {
        key: float(v) if digits is None else round(float(v), digits)
        for key, v in zip(keys, values, strict=True)
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0."""
    return None if a is None or not b else a / b


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (sample name, label set)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- output -------------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, "-" for None."""
    return "-" if value is None else format(value, spec)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], left: int = 1) -> str:
    """A Markdown table: the first `left` columns aligned left, the others (figures) right."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "".join("---|" if i < left else "---:|" for i in range(len(header))))
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def results_head(
    module: str,
    argv: list[str] | None,
    pinning: Pinning | None = None,
    manifest: Manifest | None = None,
    wrk_version: str | None = None,
    provider: str | None = None,
) -> dict[str, Any]:
    """What every benchmark's results start with: the command that produced them and the machine; where
    given, the pinning, the model, the load generator (closed loop: wrk has no coordinated-omission
    correction) and the onnxruntime provider with what it ran on (`accelerator`)."""
    head: dict[str, Any] = {"command": command(module, argv), "machine": machine()}
    if provider is not None:
        head["accelerator"] = accelerator(provider)
    if pinning is not None:
        head["pinning"] = pinning.as_json()
    if manifest is not None:
        head["model"] = {"name": manifest.name, "version": manifest.version, "n_sensors": manifest.n_sensors}
    if wrk_version is not None:
        head["load_generator"] = f"{wrk_version} -t1, closed loop (no coordinated-omission correction)"
    return head


def heading(results: dict[str, Any]) -> str:
    """The two lines every table is printed under: the command that produced it and the machine."""
    m = results["machine"]
    on = f"{m['host']}, {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['os']}"
    return f"# {results['command']}\n# {on}"


def write_results(results: dict[str, Any], out: Path) -> Path:
    """`results`, which carry the command that produced them, as JSON at `out` (folders made); says where."""
    if "command" not in results:
        raise ValueError("results must carry the command that produced them")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"# written to {out}")
    return out


# --- calibration drift, replayed day by day ----------------------------------------------------------------

DAY_S = 86_400.0
RAISE_ABOVE_RATIO = 3.0
"""Days whose normal rows were flagged at more than this multiple of the target must be raised (>= 90 %)."""
QUIET_AT_OR_BELOW_RATIO = 1.0
"""Days flagged at no more than the target must stay quiet (<= 10 % raised)."""


def drift_by_day(
    flags: np.ndarray,
    normal: np.ndarray,
    timestamps_s: np.ndarray,
    target_fpr: float,
    settings: DriftSettings | None = None,
) -> dict[str, Any]:
    """Replay `flags` through a fresh `DriftDetector(target_fpr, settings)` and judge it day by day.

    flags: bool [N], a reading flagged (score > threshold); normal: bool [N], the reading is labelled
    normal (the rate that matters is the false-alarm rate, so it is measured on these rows only; the
    detector sees every row, as the service would); timestamps_s: float [N] seconds (any origin; days are
    counted from the first reading's day, floor(t / 86 400)); settings: the service's defaults when None.

    Each bucket's readings are observed in one call at the bucket's first reading's time (as a batch), and
    the state is read at every bucket end: the detector evaluates only there, so this sees every state it
    takes. Returns {"settings", "target_fpr", "days": [{"day", "rows", "normal_rows", "normal_flags",
    "ratio" (normal rate / target, None without normal rows), "raised"}...], "summary": {"above_3x":
    {"days", "raised", "share"}, "within_1x": {...}, "between": {...}}}. Days with fewer than 1/target
    normal rows (the rate is not measurable at the target's scale) are listed but left out of the summary.
    """
    settings = settings or DriftSettings()
    flags, normal = np.asarray(flags, dtype=bool), np.asarray(normal, dtype=bool)
    t = np.asarray(timestamps_s, dtype=np.float64)
    if not (flags.shape == normal.shape == t.shape and flags.ndim == 1 and len(flags) > 0):
        raise ValueError(
            f"flags, normal, timestamps_s must be 1-D of one length: {flags.shape}, {normal.shape}, {t.shape}"
        )
    if not np.all(np.isfinite(t)):
        raise ValueError("timestamps_s must be finite")
    order = np.argsort(t, kind="stable")
    flags, normal, t = flags[order], normal[order], t[order]

    bucket_s = settings.bucket_s
    buckets = np.floor(t / bucket_s).astype(np.int64)
    first, last = int(buckets[0]), int(buckets[-1])
    readings_in = np.bincount(buckets - first, minlength=last - first + 1)
    flags_in = np.bincount(buckets - first, weights=flags, minlength=last - first + 1).astype(np.int64)
    first_time = np.full(last - first + 1, np.nan)
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    first_time[buckets[starts] - first] = t[starts]

    day_of = np.floor(t / DAY_S).astype(np.int64)
    day0 = int(day_of[0])
    n_days = int(day_of[-1]) - day0 + 1
    raised = np.zeros(n_days, dtype=bool)
    detector = DriftDetector(target_fpr, settings)
    for j in range(last - first + 1):
        if readings_in[j]:
            detector.observe(int(flags_in[j]), int(readings_in[j]), float(first_time[j]))
        end = (first + j + 1) * bucket_s
        if detector.status(end).state == DRIFT:
            day = int(np.floor(end / DAY_S)) - day0  # the state holds from `end` to the next bucket end
            if day < n_days:
                raised[day] = True

    days: list[dict[str, Any]] = []
    rel_day = day_of - day0
    for d in range(n_days):
        rows = rel_day == d
        normal_rows = int(np.count_nonzero(rows & normal))
        normal_flags = int(np.count_nonzero(rows & normal & flags))
        rate = normal_flags / normal_rows if normal_rows else None
        days.append(
            {
                "day": d,
                "rows": int(np.count_nonzero(rows)),
                "normal_rows": normal_rows,
                "normal_flags": normal_flags,
                "ratio": None if rate is None else round(rate / target_fpr, 4),
                "raised": bool(raised[d]),
            }
        )
    measurable = [d for d in days if d["normal_rows"] >= 1 / target_fpr - 1e-9]

    def share(chosen: list[dict[str, Any]]) -> dict[str, Any]:
        hit = sum(d["raised"] for d in chosen)
        return {"days": len(chosen), "raised": hit, "share": round(hit / len(chosen), 4) if chosen else None}

    return {
        "target_fpr": target_fpr,
        "settings": {
            "window_s": settings.window_s,
            "bucket_s": settings.bucket_s,
            "alpha": settings.alpha,
            "min_ratio": settings.min_ratio,
        },
        "days": days,
        "summary": {
            "above_3x": share([d for d in measurable if d["ratio"] > RAISE_ABOVE_RATIO]),
            "within_1x": share([d for d in measurable if d["ratio"] <= QUIET_AT_OR_BELOW_RATIO]),
            "between": share(
                [d for d in measurable if QUIET_AT_OR_BELOW_RATIO < d["ratio"] <= RAISE_ABOVE_RATIO]
            ),
        },
    }


# --- alarm episodes (`make quality`, issue 15 §3): judged by `factory_anomaly.training.episode_quality` ---


def rule_of(manifest: dict[str, Any]) -> tuple[EpisodeRule, float] | None:
    """The manifest's episode rule and reading period, or None for a version without one."""
    spec = manifest.get("alarms")
    if not spec:
        return None
    return EpisodeRule.of(spec), float(spec["reading_period_s"])
