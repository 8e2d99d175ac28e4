"""A uvicorn under test for the benchmarks: spawned on a free port, pinned to its own core, timed to ready,
its memory read from /proc, stopped with SIGTERM. One place, so every benchmark measures a server the same
way (`bench.load`, `bench.serve_latency`, `bench.explain_latency`, `bench.microbatch`, `bench.http_stack`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU, CLIENT_CPU = 0, 1
STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 15.0
POLL_S = 0.005
MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_python() -> Path:
    """The project's virtual environment when there is one (it has the serving dependencies)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def can_pin() -> tuple[bool, str]:
    """Whether the server can have CPU 0 and the client CPU 1 to themselves: (possible, what was done)."""
    if not hasattr(os, "sched_setaffinity"):
        return False, "not applied: os.sched_setaffinity is not available on this platform"
    allowed = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= allowed:
        wanted = f"CPUs {SERVER_CPU} and {CLIENT_CPU}"
        return False, f"not applied: {wanted} are not both available ({sorted(allowed)})"
    return True, f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}"


def pinned_to(cpu: int | None) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child to `cpu` between fork and exec, so every thread the server
    starts later inherits the mask (safe: the benchmarks start no threads before spawning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


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
