"""Asset routing across processes, for real: Debian's nginx, run unprivileged in the foreground from a
temporary prefix with deploy/nginx/anomaly.conf.template rendered into it, in front of two uvicorn
processes of the service sharing one alarm journal file; a third, lone process with its own journal gets
the same readings as the reference.

The readings: eight machines, each a stream of normal readings of the test plant with two fault episodes
(readings far out of range), the first closed by quiet readings, the second still open; one reading a
second in reading time, with ids. The module's tests run in order on one stack:

1. every machine's episodes through nginx equal the lone process's, ids aside (opened, since, closed, by
   what, readings, peak, evidence, top sensors), whichever process answers the listing; so do its
   `GET /v1/assets/{asset}` states;
2. each machine's readings all reached one process (its `anomaly_asset_readings_total` on one only, the
   whole stream), and the nginx access log routed its scoring and asset requests to one address; requests
   about no machine reach both;
3. acknowledgements through nginx (whichever process nginx picks, and one sent straight to the process not
   holding the machine) are seen by the holder: the asset's state, and its `anomaly_alarms_open` series;
4. one process stops (SIGTERM): a client's retry of a batch it had answered is answered by the other and
   not counted again; the machines it held move to the other, whose open episodes continue (same ids, no
   duplicate, still acknowledged); it restarts on its port and, once nginx tries it again, its machines
   come back with their episodes; in the end every machine's episodes still equal the lone process's
   (acknowledgements aside: only the pair's were acknowledged).
nginx's own refusals (a body over the limit, no process reachable) are the service's JSON errors.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from factory_anomaly.artifact import Manifest
from tests.app.conftest import (
    AUTH,
    STARTUP_TIMEOUT_S,
    LiveServer,
    anomalous,
    free_port,
    server_env,
    stop_server,
    uvicorn_command,
)
from tests.deploy.conftest import DEPLOY, ROOT, require_tool

TEMPLATE = DEPLOY / "nginx" / "anomaly.conf.template"
HEALTH = "max_fails=3 fail_timeout=10s"  # each server's passive health check, as docker-compose.yml's
FAIL_TIMEOUT_S = 10.0
SYNC_S = 0.2  # ANOMALY_JOURNAL_SYNC_S of the service processes (1 s by default)
ASSETS = [f"line-{i % 2 + 1}/press-{i}" for i in range(8)]
T0 = 1_795_000_000.0  # reading time of each stream's first reading
BATCH = 60
N_BEFORE, N_FAULT, N_TAIL = 20, 6, 5
ACKED = {"acknowledged", "closing"}  # an acknowledged episode, or one n quiet readings from closing


def render(template: str, values: dict[str, str]) -> str:
    """envsubst restricted to the NGINX_* placeholders, as the nginx image renders a template."""
    missing = set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", template)) - set(values)
    assert not missing, missing
    return re.sub(r"\$\{(NGINX_[A-Z_]+)\}", lambda m: values[m.group(1)], template)


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]
    access_log: Path

    def entries(self) -> list[dict[str, Any]]:
        lines = self.access_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def nginx_config(prefix: Path, values: dict[str, str]) -> list[str]:
    """The template rendered with `values` into a main configuration whose paths all lie under `prefix`
    (no root needed); checked with `nginx -t`. Returns the command that runs it in the foreground."""
    binary = require_tool("nginx", "nginx")
    (prefix / "anomaly.conf").write_text(render(TEMPLATE.read_text(), values))
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                        "uwsgi", "scgi"))  # fmt: skip
    (prefix / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 2;\npid {prefix / 'nginx.pid'};\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n{temp}\n    include {prefix / 'anomaly.conf'};\n}}\n"
    )
    args = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return args


def start_nginx(prefix: Path, upstream_ports: list[int], max_body_bytes: int) -> Nginx:
    port = free_port()
    servers = " ".join(f"server 127.0.0.1:{p} {HEALTH};" for p in upstream_ports)
    values = {"NGINX_LISTEN": f"127.0.0.1:{port}", "NGINX_API_SERVERS": servers,
              "NGINX_MAX_BODY": str(max_body_bytes)}  # fmt: skip
    args = nginx_config(prefix, values)
    access_log = prefix / "access.log"
    with open(access_log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(f"http://127.0.0.1:{port}", process, access_log)
    deadline = time.monotonic() + 10.0
    while True:
        assert process.poll() is None, (prefix / "error.log").read_text()
        try:
            httpx.get(f"{nginx.url}/healthz", timeout=2.0)
            return nginx
        except httpx.TransportError:
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)


def start_on(port: int, log_path: Path, env: dict[str, str]) -> LiveServer:
    """The service on a given port (a restart must come back where nginx expects it); returns at once."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")} | env
    with open(log_path, "ab") as log:
        process = subprocess.Popen(uvicorn_command(port), cwd=ROOT, env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    return LiveServer(f"http://127.0.0.1:{port}", process, log_path)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        assert server.process.poll() is None, server.log_path.read_text()
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, server.log_path.read_text()
        time.sleep(0.05)


def samples(server: LiveServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """One metric's samples on one process, by their sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}  # fmt: skip


def readings_of(server: LiveServer) -> dict[str, float]:
    return {dict(k)["asset"]: v for k, v in samples(server, "anomaly_asset_readings_total").items()}


def open_alarms(server: LiveServer) -> dict[str, str]:
    """asset -> state of its open episode, as the process's anomaly_alarms_open says."""
    return {dict(k)["asset"]: dict(k)["state"]
            for k, v in samples(server, "anomaly_alarms_open").items() if v > 0}  # fmt: skip


@dataclass
class Stream:
    """One machine's readings: values [N, n_sensors], reading times, ids; `sent` how many went out."""

    asset: str
    x: np.ndarray
    sent: int = 0

    def body(self, start: int, end: int) -> dict[str, Any]:
        return {"vectors": self.x[start:end].tolist(), "ts": [T0 + i for i in range(start, end)],
                "ids": [f"{self.asset}#{i}" for i in range(start, end)]}  # fmt: skip


def post(client: httpx.Client, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
    """A client that retries what no process could take (nginx's 502, a dropped connection) as is."""
    for _ in range(20):
        try:
            answer = client.post(path, **kwargs)
        except httpx.TransportError:
            if not retry:
                raise
        else:
            if answer.status_code != 502 or not retry:
                return answer
        time.sleep(0.25)
    raise AssertionError(f"{path}: no process answered")


@dataclass
class Stack:
    nginx: Nginx
    servers: list[LiveServer]  # the pair behind nginx
    lone: LiveServer
    streams: dict[str, Stream]
    env: dict[str, str]  # the pair's settings (one journal file)
    via_nginx: httpx.Client
    to_lone: httpx.Client

    def send(self, asset: str, count: int) -> None:
        """The next `count` readings of a machine, in batches, to nginx and to the lone process alike."""
        stream = self.streams[asset]
        for start in range(stream.sent, stream.sent + count, BATCH):
            end = min(start + BATCH, stream.sent + count)
            self.send_batch(asset, start, end)
        stream.sent += count

    def send_batch(self, asset: str, start: int, end: int) -> tuple[dict[str, Any], dict[str, Any]]:
        body, headers = self.streams[asset].body(start, end), {"X-Asset": asset}
        pair = post(self.via_nginx, "/v1/score/batch", json=body, headers=headers)
        lone = post(self.to_lone, "/v1/score/batch", json=body, headers=headers)
        assert pair.status_code == lone.status_code == 200, (pair.text, lone.text)
        return pair.json(), lone.json()

    def holder(self, asset: str) -> int:
        """Which of the pair counted the machine's readings (exactly one)."""
        counted = [i for i, server in enumerate(self.servers) if readings_of(server).get(asset)]
        assert len(counted) == 1, (asset, counted)
        return counted[0]


def episodes(client: httpx.Client, asset: str) -> list[dict[str, Any]]:
    answer = client.get("/v1/alarms", params={"state": "all", "asset": asset})
    assert answer.status_code == 200, answer.text
    return answer.json()["alarms"]


def without_ids(found: list[dict[str, Any]], acks: bool = True) -> list[dict[str, Any]]:
    drop = {"id"} | (set() if acks else {"acknowledgements"})
    return [{k: v for k, v in e.items() if k not in drop} for e in found]


def eventually(check: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """`check()` until it returns something truthy (it may assert); the last failure if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
            if found:
                return found
            failure: Exception = AssertionError(f"{what}: {found!r}")
        except AssertionError as exc:
            failure = exc
        if time.monotonic() > deadline:
            raise failure
        time.sleep(interval_s)


@pytest.fixture(scope="module")
def stack(store: Path, manifest: Manifest, small_plant: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:  # fmt: skip
    assert manifest.alarms is not None
    home = tmp_path_factory.mktemp("routing")
    env = server_env(store, ANOMALY_ALARM_DB=str(home / "shared" / "alarms.sqlite3"),
                     ANOMALY_JOURNAL_SYNC_S=str(SYNC_S))  # fmt: skip
    servers = [start_on(free_port(), home / f"server-{i}.log", env) for i in range(2)]
    lone_env = server_env(store, ANOMALY_ALARM_DB=str(home / "lone" / "alarms.sqlite3"))
    lone = start_on(free_port(), home / "lone.log", lone_env)
    nginx: Nginx | None = None
    try:
        for server in [*servers, lone]:
            wait_ready(server)
        (home / "nginx").mkdir()
        max_body = int(env["ANOMALY_MAX_BODY_BYTES"])  # nginx takes what the service takes
        nginx = start_nginx(home / "nginx", [port_of(server.url) for server in servers], max_body)
        bad = anomalous(manifest)
        close_after = manifest.alarms.close_after
        streams = {}
        for i, asset in enumerate(ASSETS):
            normal = small_plant.simulate(N_BEFORE + close_after + 2 * N_TAIL + 100, seed=100 + i,
                                          anomaly_rate=0.0).values.astype(np.float32)  # fmt: skip
            fault = np.repeat(bad[None, :], N_FAULT, axis=0)
            quiet = close_after + N_TAIL
            x = np.concatenate([normal[:N_BEFORE], fault, normal[N_BEFORE:N_BEFORE + quiet], fault,
                                normal[N_BEFORE + quiet:]])  # fmt: skip
            streams[asset] = Stream(asset, x)
        with httpx.Client(base_url=nginx.url, headers=AUTH, timeout=30.0) as via_nginx, \
                httpx.Client(base_url=lone.url, headers=AUTH, timeout=30.0) as to_lone:  # fmt: skip
            yield Stack(nginx, servers, lone, streams, env, via_nginx, to_lone)
    finally:
        if nginx is not None:
            nginx.process.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                nginx.process.wait(10)
            except subprocess.TimeoutExpired:
                nginx.process.kill()
        for server in [*servers, lone]:
            stop_server(server)


def test_every_machine_s_episodes_equal_a_lone_process_s(stack: Stack, manifest: Manifest) -> None:
    assert manifest.alarms is not None
    n = N_BEFORE + N_FAULT + manifest.alarms.close_after + N_TAIL + N_FAULT + N_TAIL
    for asset in ASSETS:
        stack.send(asset, n)
    for asset in ASSETS:
        reference = episodes(stack.to_lone, asset)
        assert [e["closed_by"] for e in reference] == [None, "quiet"], reference  # one open, one closed

        def same(asset: str = asset, reference: list[dict[str, Any]] = reference) -> bool:
            # the listing reaches either process: the holder's own, or the other's from the journal
            found = [without_ids(episodes(stack.via_nginx, asset)) for _ in range(4)]
            assert all(f == without_ids(reference) for f in found), (found, reference)
            return True

        eventually(same, 10 * SYNC_S + 5.0, f"{asset}'s episodes")
        state = stack.via_nginx.get(f"/v1/assets/{asset}").json()  # routed by the path to the holder
        alone = stack.to_lone.get(f"/v1/assets/{asset}").json()
        assert {**state, "alarm_id": None} == {**alone, "alarm_id": None}
        assert state["state"] == "open" and state["readings"] == n
    listed = {a["asset"] for a in stack.via_nginx.get("/v1/assets").json()["assets"]}
    assert listed == set(ASSETS)  # whichever process answers: its own and the other's


def test_each_machine_s_readings_reached_one_process(stack: Stack) -> None:
    counts = [readings_of(server) for server in stack.servers]
    holders = {asset: stack.holder(asset) for asset in ASSETS}
    for asset in ASSETS:
        assert counts[holders[asset]][asset] == stack.streams[asset].sent
    assert set(holders.values()) == {0, 1}, holders  # both processes hold machines
    routed = collections.defaultdict(set)
    for entry in stack.nginx.entries():
        if entry["asset_key"]:
            routed[entry["asset_key"]].add(entry["upstream"])
    assert set(routed) == set(ASSETS) and all(len(u) == 1 for u in routed.values()), routed
    before = len(stack.nginx.entries())
    for _ in range(30):
        assert stack.via_nginx.get("/v1/model").status_code == 200
    spread = {e["upstream"] for e in stack.nginx.entries()[before:]}
    assert len(spread) == 2, spread  # requests about no machine reach both


def test_acknowledgements_through_nginx_reach_the_holder(stack: Stack) -> None:
    for asset in ASSETS:
        (opened,) = stack.via_nginx.get("/v1/alarms", params={"asset": asset}).json()["alarms"]
        ack = post(stack.via_nginx, f"/v1/alarms/{opened['id']}/ack", json={"note": "on it", "by": "ana"})
        assert ack.status_code == 200 and ack.json()["acknowledgements"][0]["note"] == "on it", ack.text
    # and one sent straight to the process that does not hold the machine
    asset = ASSETS[0]
    other = stack.servers[1 - stack.holder(asset)]
    (opened,) = stack.via_nginx.get("/v1/alarms", params={"asset": asset}).json()["alarms"]
    with other.client(headers=AUTH) as client:
        assert client.post(f"/v1/alarms/{opened['id']}/ack", json={"note": "second"}).status_code == 200

    holders = {asset: stack.holder(asset) for asset in ASSETS}

    def seen() -> bool:
        alarms = [open_alarms(server) for server in stack.servers]
        for asset in ASSETS:
            assert stack.via_nginx.get(f"/v1/assets/{asset}").json()["state"] in ACKED, asset
            assert alarms[holders[asset]].get(asset) in ACKED and asset not in alarms[1 - holders[asset]], (
                asset
            )
        acks = stack.via_nginx.get(f"/v1/alarms/{opened['id']}").json()["acknowledgements"]
        assert [a["note"] for a in acks] == ["on it", "second"], acks
        return True

    eventually(seen, 10 * SYNC_S + 5.0, "acknowledgements")


def test_a_restart_moves_machines_and_their_alarms_continue(stack: Stack) -> None:
    holders = {asset: stack.holder(asset) for asset in ASSETS}
    gone = collections.Counter(holders.values()).most_common(1)[0][0]  # the process holding more machines
    stays = 1 - gone
    moved = [asset for asset in ASSETS if holders[asset] == gone]
    open_ids = {asset: stack.via_nginx.get("/v1/alarms", params={"asset": asset}).json()["alarms"][0]["id"]
                for asset in ASSETS}  # fmt: skip
    # a batch the leaving process answers; its client will retry it after the stop
    asset = moved[0]
    stream = stack.streams[asset]
    retried = (stream.sent, stream.sent + 3)
    first, _ = stack.send_batch(asset, *retried)
    stream.sent += 3
    assert not any(r.get("late") for r in first["results"])

    assert stop_server(stack.servers[gone]) in (0, -signal.SIGTERM)
    counted_before = readings_of(stack.servers[stays]).get(asset, 0.0)
    episode_before = stack.via_nginx.get(f"/v1/alarms/{open_ids[asset]}").json()
    lone_before = stack.to_lone.get(f"/v1/assets/{asset}").json()["readings"]
    again, _ = stack.send_batch(asset, *retried)  # the client's retry, same ids and times
    # answered and not counted: older than the latest counted reading (late), or that reading itself
    assert [r.get("late", False) for r in again["results"]] == [True, True, False]
    assert [r["alarm"]["id"] for r in again["results"]] == [open_ids[asset]] * 3
    assert readings_of(stack.servers[stays]).get(asset, 0.0) == counted_before
    assert stack.to_lone.get(f"/v1/assets/{asset}").json()["readings"] == lone_before  # a repeat there
    assert (
        stack.via_nginx.get(f"/v1/alarms/{open_ids[asset]}").json()["readings"] == episode_before["readings"]
    )

    for name in ASSETS:  # readings go on: the leaving process's machines to the other
        stack.send(name, 10)
    counts = readings_of(stack.servers[stays])
    assert all(counts.get(name, 0.0) >= 10 for name in ASSETS), counts
    alarms = open_alarms(stack.servers[stays])  # its own and the adopted machines' (acknowledged, or
    assert set(alarms) == set(ASSETS) and set(alarms.values()) <= ACKED, alarms  # closing by now)
    for name in ASSETS:  # the open episode continued there: the same id, no duplicate
        listed = episodes(stack.via_nginx, name)
        assert [e["id"] for e in listed if e["closed"] is None] == [open_ids[name]], listed
        assert len(listed) == 2

    # it comes back on its port; once nginx tries it again (fail_timeout), its machines return to it
    stopped = stack.servers[gone]
    stack.servers[gone] = start_on(port_of(stopped.url), stopped.log_path, stack.env)
    wait_ready(stack.servers[gone])

    def back() -> bool:
        for name in moved:
            stack.send(name, 1)
        return all(readings_of(stack.servers[gone]).get(name) for name in moved)

    # one reading a second: the other process writes what it counted (each SYNC_S) before the hand-back
    eventually(back, FAIL_TIMEOUT_S + 10.0, "the machines' return", interval_s=1.0)
    time.sleep(3 * SYNC_S)

    def settled() -> bool:
        back_alarms, other_alarms = open_alarms(stack.servers[gone]), open_alarms(stack.servers[stays])
        for name in moved:
            assert back_alarms.get(name) in ACKED and name not in other_alarms, name
        for name in ASSETS:
            listed = episodes(stack.via_nginx, name)
            assert [e["id"] for e in listed if e["closed"] is None] == [open_ids[name]], listed
            assert without_ids(listed, acks=False) == without_ids(episodes(stack.to_lone, name), acks=False)
        return True

    eventually(settled, 10 * SYNC_S + 5.0, "the alarms after the return")


def test_nginx_s_own_refusals_are_json_errors(stack: Stack) -> None:
    body = b"0" * (int(stack.env["ANOMALY_MAX_BODY_BYTES"]) + 1)
    too_large = stack.via_nginx.post("/v1/score", content=body, headers={"Content-Type": "application/json"})
    assert too_large.status_code == 413
    error = too_large.json()["error"]
    assert error["code"] == "body_too_large" and error["request_id"] == too_large.headers["X-Request-ID"]
    big_header = b"GET /v1/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 40_000
    for request, status, code in ((b"GARBAGE\r\n\r\n", 400, "bad_request"),
                                  (big_header + b"\r\n\r\n", 431, "headers_too_large")):  # fmt: skip
        with socket.create_connection(("127.0.0.1", port_of(stack.nginx.url)), timeout=10.0) as raw:
            raw.sendall(request)
            answer = raw.makefile("rb").read().decode()
        head, _, text = answer.partition("\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status}") and json.loads(text)["error"]["code"] == code, answer
    mine = stack.via_nginx.get("/v1/model", headers={"X-Request-ID": "client-id-7"})
    assert mine.headers["X-Request-ID"] == "client-id-7"  # the client's id reaches the service
    for server in stack.servers:
        stop_server(server)
    down = stack.via_nginx.post("/v1/score/batch", json={"vectors": [[0.0]]}, headers={"X-Asset": "press-0"})
    assert down.status_code == 502 and down.json()["error"]["code"] == "upstream_unavailable"
