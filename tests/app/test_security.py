"""The serving app's security promises (docs/reliability.md "Security"): secrets compared in constant time
and never logged, nothing deserialised but ONNX and JSON, checksums checked on the bytes onnxruntime gets,
and nothing written outside a temp directory (what a read-only root filesystem needs)."""

from __future__ import annotations

import ast
import hmac
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from factory_anomaly.app.config import Settings
from factory_anomaly.app.model import load_model, loader
from factory_anomaly.artifact import ArtifactError
from tests.app.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    API_KEY,
    AUTH,
    MODEL_NAME,
    ROOT,
    STARTUP_TIMEOUT_S,
    LiveServer,
    assert_stopped_cleanly,
    copy_store,
    free_port,
    publish_copy,
    server_env,
    serving,
    settings_for,
    start_server,
    stop_server,
    uvicorn_command,
)

APP = ROOT / "app"
WRONG_KEY = "wrong-key-7b3a"
WRONG_TOKEN = "wrong-token-51c0"
NEW = "20991231T000000Z-0000beef"


# --- constant-time comparison -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_keys_and_token_are_compared_with_compare_digest_against_every_key(
    store: Path, readings: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every configured key is compared (no early exit that would time which key matched), each with
    hmac.compare_digest; the spy delegates to the real function, so the answers are the real ones."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    keys = ("k-first-1111", "k-second-2222", "k-third-3333")
    settings = settings_for(store, api_keys=keys, admin_token=ADMIN_TOKEN)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = {"values": readings[0].tolist()}
    async with serving(settings) as client:
        for candidate, status in ((WRONG_KEY, 401), (keys[0], 200), (keys[2], 200)):
            compared.clear()
            response = await client.post("/v1/score", json=body, headers={"X-API-Key": candidate})
            assert response.status_code == status, response.text
            assert compared == [(candidate.encode(), key.encode()) for key in keys]
        for token, status in ((WRONG_TOKEN, 403), (ADMIN_TOKEN, 200)):
            compared.clear()
            response = await client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == status, response.text
            assert compared == [(token.encode(), ADMIN_TOKEN.encode())]


def test_no_secret_is_compared_with_an_ordinary_operator() -> None:
    """Static: no `==`, `!=` or `in` anywhere in app/ has a secret's value (`get_secret_value()`) or the
    settings' `api_keys` / `admin_token` as an operand, apart from the `is None` checks."""
    offending = []
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Compare):
                continue
            if all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
                continue
            for operand in (node.left, *node.comparators):
                text = ast.unparse(operand)
                if "get_secret_value" in text or re.search(r"\b(api_keys|admin_token)\b", text):
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert offending == []


# --- secrets never logged ---------------------------------------------------------------------------------


def test_neither_keys_nor_the_admin_token_are_ever_logged(
    store: Path, tmp_path: Path, trained_small: Path, readings: np.ndarray
) -> None:
    """A real uvicorn at DEBUG, every kind of request that carries a key or token (right, wrong, in the
    other header, as a query parameter, with an error in the body, a failed and a successful reload):
    no secret, and no wrong candidate (it may be someone's real key), appears anywhere in its output."""
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    publish_copy(model_dir, trained_small.name, NEW)
    server = start_server(tmp_path / "server.log", server_env(model_dir.parent, ANOMALY_LOG_LEVEL="DEBUG"))
    values = readings[0].tolist()
    try:
        with server.client() as client:
            for headers in (AUTH, {"X-API-Key": API_KEY}, {"X-API-Key": "other-key"}):
                assert client.post("/v1/score", json={"values": values}, headers=headers).status_code == 200
                assert client.post("/v1/score", json={"values": [1.0]}, headers=headers).status_code == 422
                assert client.post("/v1/explain", content=b"{", headers=headers).status_code in (400, 415)
                assert client.get("/v1/nope", headers=headers).status_code == 404
            for headers in ({"X-API-Key": WRONG_KEY}, {"Authorization": f"Bearer {WRONG_KEY}"}, ADMIN):
                assert client.post("/v1/score", json={"values": values}, headers=headers).status_code == 401
            assert client.get(f"/v1/model?api_key={API_KEY}").status_code == 401
            for headers, status in (
                (ADMIN, 200),
                ({"Authorization": f"Bearer {WRONG_TOKEN}"}, 403),
                (AUTH, 403),
                ({"X-API-Key": ADMIN_TOKEN}, 401),
            ):
                response = client.post("/v1/admin/reload", json={"version": NEW}, headers=headers)
                assert response.status_code == status, response.text
            assert client.post("/v1/admin/reload", json={"version": "nope"}, headers=ADMIN).status_code == 409
    finally:
        stop_server(server)
    assert_stopped_cleanly(server, errors_expected=True)  # the failed reload is logged as an error
    text = server.log_path.read_text(encoding="utf-8")
    for secret in (API_KEY, "other-key", ADMIN_TOKEN, WRONG_KEY, WRONG_TOKEN):
        assert secret not in text, secret
    [started] = [entry for entry in server.log_lines() if entry["message"] == "starting"]
    assert started["settings"]["admin_token"] == "**********"  # the settings line masks them
    assert started["settings"]["api_keys"] == ["**********"] * 2
    assert (
        started["settings"]["log_level"] == "DEBUG"
    )  # every logger, uvicorn's included, at its most verbose


# --- nothing but ONNX and JSON ----------------------------------------------------------------------------

UNSAFE_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}
)
UNSAFE_LOADERS = UNSAFE_MODULES | {"np", "numpy", "torch", "yaml"}


def unsafe_deserialisation(package_dir: Path) -> list[str]:
    """`file:line what` for every import of a module that unpickles, every `load`/`loads` called on one of
    UNSAFE_LOADERS (np.load, torch.load, yaml.load, ...), every `allow_pickle=` and every eval/exec."""
    hits: list[tuple[str, int, str]] = []
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            found = None
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.split(".")[0] in UNSAFE_MODULES]
                found = ", ".join(names) or None
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = node.module if node.module.split(".")[0] in UNSAFE_MODULES else None
            elif isinstance(node, ast.Call):
                func = node.func
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr in ("load", "loads", "unsafe_load")
                    and isinstance(func.value, ast.Name)
                    and func.value.id in UNSAFE_LOADERS
                ):
                    found = ast.unparse(func)
                elif isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                    found = func.id
                elif any(keyword.arg == "allow_pickle" for keyword in node.keywords):
                    found = "allow_pickle"
            if found:
                hits.append((path.name, getattr(node, "lineno", 0), found))
    return [f"{name}:{line} {found}" for name, line, found in sorted(hits)]


def test_serving_deserialises_nothing_but_onnx_and_json() -> None:
    """Static: app/ reads graphs with onnxruntime (from bytes it hashed) and manifests and bodies as JSON;
    no pickle-family module, np.load / torch.load / yaml.load, allow_pickle, eval or exec. That app/ never
    imports torch is tests/test_import_boundary.py's."""
    assert unsafe_deserialisation(APP) == []


def test_the_deserialisation_checker_finds_each_form(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import pickle\nfrom joblib import load\nimport numpy as np\nnp.load('x', allow_pickle=True)\n"
        "torch.load('m.pt')\nyaml.load(s)\neval('1')\nimport marshal, json\nf(allow_pickle=False)\n"
        "json.loads('1')\n"
    )
    assert unsafe_deserialisation(tmp_path) == [
        "bad.py:1 pickle",
        "bad.py:2 joblib",
        "bad.py:4 np.load",
        "bad.py:5 torch.load",
        "bad.py:6 yaml.load",
        "bad.py:7 eval",
        "bad.py:8 marshal",
        "bad.py:9 allow_pickle",
    ]


# --- checksums checked on the bytes that run --------------------------------------------------------------


def test_a_graph_swapped_after_verification_is_refused(
    trained_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph handed to onnxruntime is hashed again as bytes in memory: a file replaced between
    `verify_artifact` and the session (fault injected right after the real verification) is refused."""
    version = tmp_path / trained_small.name
    version.mkdir()
    for path in trained_small.iterdir():
        (version / path.name).write_bytes(path.read_bytes())
    real_verify = loader.verify_artifact

    def verify_then_swap(directory: Path) -> object:
        manifest = real_verify(directory)
        graph = directory / "model.onnx"
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
        return manifest

    monkeypatch.setattr(loader, "verify_artifact", verify_then_swap)
    with pytest.raises(ArtifactError) as caught:
        load_model(version, Settings())
    assert caught.value.code == "checksum_mismatch"
    assert "changed while the version was being loaded" in caught.value.message


# --- a read-only root filesystem --------------------------------------------------------------------------

_WRITE_SYSCALLS = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,link,linkat,symlink,"
    "symlinkat,truncate,chmod,fchmodat,chown,fchownat,lchown,utimensat,mknod,mknodat"
)
_WRITE_FLAGS = re.compile(r"\bO_(WRONLY|RDWR|CREAT|TRUNC|APPEND)\b")
_SYSCALL = re.compile(r"^\d+\s+(\w+)\((.*)$")  # "<pid> <name>(<args>) = <result>"; not "<... resumed>"
_PATH = re.compile(r'(?:^|, )(AT_FDCWD, |\d+, )?"((?:[^"\\]|\\.)*)"')
_ALLOWED_DEVICES = ("/dev/null",)


def writes_outside(trace: Path, allowed_dir: Path, cwd: Path = ROOT) -> list[str]:
    """Every traced call that creates or modifies a path outside `allowed_dir` (and /dev/null), whether it
    succeeded or not: on a read-only root, even a failed attempt would be a code path that breaks. Every
    path argument counts (both names of a rename); one relative to a directory descriptor is outside."""
    outside = []
    for line in trace.read_text(errors="replace").splitlines():
        match = _SYSCALL.match(line)
        if match is None:
            continue
        syscall, args = match.groups()
        if syscall in ("open", "openat") and not _WRITE_FLAGS.search(args):
            continue  # a read-only open
        for dirfd, path in _PATH.findall(args):
            if not path.startswith("/") and dirfd not in ("", "AT_FDCWD, "):
                outside.append(line)  # relative to a descriptor this parser cannot resolve
                break
            resolved = os.path.normpath(os.path.join(cwd, path))
            if resolved not in _ALLOWED_DEVICES and not resolved.startswith(str(allowed_dir) + os.sep):
                outside.append(line)
                break
    return outside


def test_the_service_writes_nothing_outside_tmp_and_connects_nowhere(
    store: Path, tmp_path: Path, trained_small: Path, readings: np.ndarray
) -> None:
    """What a read-only root filesystem needs, proven on the real process: uvicorn under `strace -f`,
    with the image's PYTHONDONTWRITEBYTECODE=1, TMPDIR a temp directory and HOME a writable directory
    outside it, serves every endpoint, reloads (a success and a failure), is scraped, and stops on
    SIGTERM; no syscall of any of its threads created, modified, renamed or removed a file outside TMPDIR
    (HOME included: onnxruntime's telemetry would write there, see app/__init__.py), and it opened no
    network connection (the telemetry would). ORT_DISABLE_TELEMETRY is left unset: the app sets it.
    Not proven here (no Docker engine on this machine): the image itself under `docker run --read-only
    --tmpfs /tmp`; tests/deploy/test_security.py checks statically that compose runs it so. The tests run
    as root, so file permissions cannot stand in for the read-only mount; the trace does."""
    if not Path("/usr/bin/strace").exists() and not any(
        (Path(d) / "strace").exists() for d in os.environ.get("PATH", "").split(os.pathsep)
    ):
        pytest.skip("strace is not installed (Debian's strace package)")
    writable, home = tmp_path / "tmp", tmp_path / "home"
    writable.mkdir()
    home.mkdir()
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    publish_copy(model_dir, trained_small.name, NEW)
    trace = tmp_path / "trace.txt"
    log_path = tmp_path / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANOMALY_", "PYTHON", "ORT_", "XDG_"))}
    env |= server_env(model_dir.parent) | {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(home),
        "TMPDIR": str(writable),
        # the alarm journal writes where its volume is mounted (/data in the image); here, inside TMPDIR
        "ANOMALY_ALARM_DB": str(writable / "journal" / "alarms.sqlite3"),
    }
    syscalls = f"trace={_WRITE_SYSCALLS},connect"
    command = ["strace", "-f", "-qq", "-e", syscalls, "-e", "signal=none", "-o", str(trace)]
    command += uvicorn_command(port)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_ready(server)
        values = readings[0].tolist()
        with server.client(headers=AUTH) as client:
            assert client.post("/v1/score", json={"values": values}).status_code == 200
            batch = np.ascontiguousarray(readings[:8], dtype="<f4").tobytes()
            octet = {"Content-Type": "application/octet-stream"}
            assert client.post("/v1/score/batch", content=batch, headers=octet).status_code == 200
            assert client.post("/v1/explain", json={"values": values}).status_code == 200
            assert client.post("/v1/score", json={"values": [1.0]}).status_code == 422
            assert client.get("/v1/model").status_code == 200
            assert client.post("/v1/admin/reload", json={"version": NEW}, headers=ADMIN).status_code == 200
            assert client.post("/v1/admin/reload", json={"version": "nope"}, headers=ADMIN).status_code == 409
            assert client.get("/metrics").status_code == 200
            assert client.get("/readyz").status_code == 200
    finally:
        # strace -o blocks fatal signals (its -I3 default): stop uvicorn itself, and strace follows it out.
        for pid in traced_children(process.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Application shutdown complete." in log_path.read_text()
    assert_stopped_cleanly(server, errors_expected=True)  # every line JSON; the failed reload is an error
    assert trace.stat().st_size > 0
    assert writes_outside(trace, writable) == []
    assert list(home.iterdir()) == []
    assert outbound_connections(trace) == []


def outbound_connections(trace: Path) -> list[str]:
    """Traced connect() calls to anything but a Unix socket or the loopback interface."""
    return [
        line
        for line in trace.read_text(errors="replace").splitlines()
        if re.match(r"^\d+\s+connect\(", line)
        and "AF_UNIX" not in line
        and not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', line)
    ]


def traced_children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with server.client() as client:
        while True:
            assert server.process.poll() is None, server.log_path.read_text()
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, server.log_path.read_text()
            time.sleep(0.05)


def test_the_write_checker_sees_writes_and_ignores_reads(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text(
        '7 openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3\n'
        f'7 openat(AT_FDCWD, "{tmp_path}/ok", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 4\n'
        '7 openat(AT_FDCWD, "/dev/null", O_WRONLY) = 5\n'
        '8 openat(AT_FDCWD, "/srv/x.pyc", O_WRONLY|O_CREAT|O_EXCL, 0644) = -1 EROFS (Read-only file system)\n'
        '8 mkdir("relative/__pycache__", 0777) = -1 EEXIST (File exists)\n'
        '9 unlinkat(AT_FDCWD, "/tmp/elsewhere", 0) = 0\n'
        "9 <... openat resumed>) = 3\n"
        f'10 rename("{tmp_path}/a", "/srv/b") = 0\n'
        '11 openat(5, "name", O_WRONLY|O_CREAT, 0600) = 6\n'
        '12 openat(5, "name", O_RDONLY) = 6\n'
    )
    found = [line.split()[0] for line in writes_outside(trace, tmp_path, cwd=tmp_path)]
    assert found == ["8", "9", "10", "11"]
