"""`[wsfw] workers = 2` through real processes: a real `twistd wsfw` supervisor, its workers and the
bundled demo app, on loopback with port 0 everywhere.

Which worker served a connection is read from the supervisor's merged metrics
(``worker`` label); which processes exist, from the supervisor's log lines.
Nothing here asserts timing beyond liveness deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import support

pytestmark = pytest.mark.slow

ATTACK = '{"text": "<img src=x onerror=alert(document.cookie)>"}'
DRAIN = 2


@pytest.fixture(scope="module")
def demo():
    proc, port = support.start_demo()
    yield port
    proc.stop()


def start(folder, upstream: int, **config):
    path = os.path.join(str(folder), "wsfw.ini")
    with open(path, "w") as f:
        f.write(support.config_text(f"ws://127.0.0.1:{upstream}", workers=2, log="connections = no",
                                    extra=f"[timeouts]\nshutdown_drain = {DRAIN}\n", **config))
    daemon, ports = support.start_twistd(path)
    return daemon, ports


@pytest.fixture(scope="module")
def fleet(demo, tmp_path_factory):
    """A supervisor with two workers in front of the demo app: (daemon, public port, admin port)."""
    daemon, ports = start(tmp_path_factory.mktemp("fleet"), demo)
    yield daemon, ports["listen:public"], ports["admin"]
    daemon.stop()


def admin_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(admin: int) -> dict:
    code, body = admin_get(admin, "/metrics")
    assert code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(parsed: dict, name: str, **labels) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def worker_pids(daemon) -> dict[str, int]:
    """The newest pid the supervisor logged for each worker slot."""
    return {slot: int(pid) for slot, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", daemon.output)}


def echo(port: int, text: str, open_timeout: float = 10) -> None:
    with connect(f"ws://127.0.0.1:{port}/ws/echo", open_timeout=open_timeout) as ws:
        ws.send(text)
        assert ws.recv(timeout=10) == text


def blocked(port: int) -> int:
    with connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
        ws.send(ATTACK)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        return ws.close_code


def test_connections_spread_over_both_workers_and_attacks_are_blocked(fleet):
    """40 connections are served and both workers carry some (the kernel spreads them over the
    workers' SO_REUSEPORT sockets); an attack is still closed with 1008; the supervisor's admin
    listener shows both workers' metrics, their merged stats and events, and the dashboard page."""
    daemon, public, admin = fleet
    with contextlib.ExitStack() as held:
        clients = [held.enter_context(connect(f"ws://127.0.0.1:{public}/ws/echo")) for _ in range(40)]
        for n, ws in enumerate(clients):
            ws.send(f"hello {n}")
            assert ws.recv(timeout=5) == f"hello {n}"
        during = metrics(admin)
        open_by_worker = [value(during, "wsfw_connections_open", worker=w) for w in ("1", "2")]
        assert sum(open_by_worker) == 40 and min(open_by_worker) > 0, open_by_worker
    assert blocked(public) == 1008

    after = metrics(admin)
    assert [value(after, "wsfw_handshakes_total", result="ok", worker=w) > 0 for w in ("1", "2")] == [True, True]
    assert sum(value(after, "wsfw_handshakes_total", result="ok", worker=w) for w in ("1", "2")) == 41
    assert sum(v for (name, _), v in after.items() if name == "wsfw_blocks_total") == 1
    assert value(after, "wsfw_workers") == 2 and value(after, "wsfw_worker_restarts_total") == 0
    assert value(after, "wsfw_worker_up", worker="1") == value(after, "wsfw_worker_up", worker="2") == 1
    assert value(after, "process_resident_memory_bytes", worker="supervisor") > 0
    assert value(after, "process_resident_memory_bytes", worker="1") > 0

    code, body = admin_get(admin, "/readyz")
    assert code == 200 and json.loads(body)["workers"] == {"1": True, "2": True}
    assert admin_get(admin, "/healthz") == (200, b"ok\n")
    stats = json.loads(admin_get(admin, "/api/stats")[1])
    assert stats["ready"] is True and stats["totals"]["handshakes_ok"] == 41 and stats["totals"]["blocked"] == 1
    assert stats["totals"]["messages"]["client"] == 41
    assert [w["worker"] for w in stats["workers"]] == ["1", "2"]
    events = json.loads(admin_get(admin, "/api/events?blocked=1")[1])
    assert [(e["id"], e["action"], e["param"]) for e in events["events"]] == [(1, "block", "json.text")]
    assert events["events"][0]["worker"] in ("1", "2") and events["last_id"] == 1
    assert json.loads(admin_get(admin, "/api/events?since=1")[1])["events"] == []
    code, page = admin_get(admin, "/")
    assert code == 200 and b"dashboard.js" in page


def test_a_killed_worker_is_replaced_while_new_connections_keep_working(fleet):
    """SIGKILL one worker: the supervisor logs how it died and starts a replacement; clients that keep
    connecting meanwhile are all served (those the kernel hashes to the dead worker's socket wait in
    its queue for the replacement); wsfw_worker_restarts_total counts the restart."""
    daemon, public, admin = fleet
    old = worker_pids(daemon)["1"]
    outcomes: list[str] = []
    stop = threading.Event()

    def keep_connecting():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                echo(public, f"during {n}", open_timeout=20)
                outcomes.append("ok")
            except Exception as e:  # recorded, asserted below
                outcomes.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)

    client = threading.Thread(target=keep_connecting)
    client.start()
    try:
        support.wait_until(lambda: len(outcomes) >= 5, timeout=10)
        os.kill(old, signal.SIGKILL)
        daemon.wait_for(rf"worker 1 \(pid {old}\) was killed by signal 9 \(SIGKILL\) after [\d.]+s; "
                        r"starting a replacement in 0\.5s", timeout=10)
        new = int(daemon.wait_for(r"worker 1 started \(pid (\d+)\), restart 1", timeout=10).group(1))
        daemon.wait_for(rf"worker 1 \(pid {new}\) is serving", timeout=30)
        served = len(outcomes)
        support.wait_until(lambda: len(outcomes) >= served + 5, timeout=20)
    finally:
        stop.set()
        client.join(30)
    assert new != old and not os.path.exists(f"/proc/{old}")
    assert outcomes and set(outcomes) == {"ok"}, [o for o in outcomes if o != "ok"][:5]
    after = metrics(admin)
    assert value(after, "wsfw_worker_restarts_total") == 1 and value(after, "wsfw_workers") == 2
    assert value(after, "wsfw_worker_up", worker="1") == 1
    for n in range(20):
        echo(public, f"after {n}")
    assert blocked(public) == 1008


def test_sigterm_stops_every_process_within_the_drain_bound(demo, tmp_path):
    """SIGTERM: the supervisor passes it on, each worker closes its connections with 1001 and exits 0,
    and the supervisor exits by the signal (a clean stop for systemd), well within the drain bound."""
    daemon, ports = start(tmp_path, demo)
    pids = worker_pids(daemon)
    with connect(f"ws://127.0.0.1:{ports['listen:public']}/ws/echo") as ws:
        ws.send("held")
        assert ws.recv(timeout=5) == "held"
        daemon.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
    try:
        daemon.proc.wait(DRAIN + 5 + 10)
    finally:
        daemon.stop()
    assert daemon.proc.returncode == -signal.SIGTERM, daemon.output
    for slot, pid in pids.items():
        assert re.search(rf"worker {slot} \(pid {pid}\) exited with status 0", daemon.output), daemon.output
        assert not os.path.exists(f"/proc/{pid}")
    assert "Server Shut Down." in daemon.output


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain holder", "SO_REUSEPORT holder"])
def test_a_port_in_use_fails_before_any_worker_starts(demo, tmp_path, reuse_port):
    """A public listener whose port is taken stops twistd with the section and the reason, and no worker
    is ever started, whether or not the holder allows SO_REUSEPORT sharing."""
    holder = socket.socket()
    if reuse_port:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    path = tmp_path / "wsfw.ini"
    path.write_text(support.config_text(f"ws://127.0.0.1:{demo}", listen=f"tcp:{taken}:interface=127.0.0.1",
                                        workers=2))
    try:
        done = subprocess.run([support.venv_tool("twistd"), "-n", "--pidfile=", "wsfw", "--config", str(path)],
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"[listen:public] cannot listen on tcp:{taken}:interface=127.0.0.1" in output, output
    assert "Address already in use" in output
    assert "worker 1 started" not in output and "wsfw.worker" not in output
