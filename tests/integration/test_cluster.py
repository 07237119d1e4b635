"""Scale-out: two real ``twistd wsfw`` nodes sharing a real ``redis-server``, behind a real
HAProxy in TCP mode sending the PROXY protocol, all on loopback and started by the test.

Clients either go through HAProxy (their address is then 127.0.0.1, as HAProxy
reports it) or straight to one node with a PROXY header of their own, which
is how these tests give each scenario its own client address.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests import fleet, support

pytestmark = [pytest.mark.slow, fleet.requires_fleet_programs]

ATTACK = '{"text": "<img src=x onerror=alert(document.cookie)>"}'
LIMITS = "[limits]\nban_after = 3\nban_window = 30s\nban_time = 4s\nmax_connections_per_ip = 3\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    demo, upstream = support.start_demo()
    redis = fleet.Redis(folder).start()
    nodes = [fleet.Node(folder, name, upstream, redis.port, extra=LIMITS) for name in ("a", "b")]
    balancer = None
    try:
        for node in nodes:
            node.start()
        balancer = fleet.HAProxy(folder, [node.port for node in nodes]).start()
        yield redis, nodes, balancer
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()
        redis.stop()
        demo.stop()


def as_client(port: int, address: str, path: str = "/ws/echo"):
    """A WebSocket connection to a node's PROXY-protocol listener, claiming to come from ``address``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"PROXY TCP4 {address} 127.0.0.1 40000 80\r\n".encode())
    return connect(f"ws://127.0.0.1:{port}{path}", sock=sock, open_timeout=5)


def refused_status(port: int, address: str) -> int | None:
    """The status a node refuses ``address``'s handshake with, or None when it is admitted (and echoes)."""
    try:
        with as_client(port, address) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            return None
    except InvalidStatus as e:
        return e.response.status_code


def attack(port: int, address: str) -> None:
    with as_client(port, address) as ws:
        ws.send(ATTACK)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1008


def poll(predicate, timeout: float, interval: float = 0.05):
    """The first truthy value of ``predicate()`` within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_the_balancer_spreads_clients_and_each_node_sees_them(cluster):
    redis, nodes, balancer = cluster
    for n in range(4):
        with connect(f"ws://127.0.0.1:{balancer.port}/ws/echo", open_timeout=5) as ws:
            ws.send(f"through haproxy {n}")
            assert ws.recv(timeout=5) == f"through haproxy {n}"
    for node in nodes:
        status, stats = node.admin("/api/stats")
        assert stats["totals"]["handshakes_ok"] >= 2, (node.name, stats["totals"])
        status, ready = node.admin("/readyz")
        assert status == 200 and ready["cluster"] == "up"


def test_a_ban_earned_on_one_node_is_enforced_by_the_other_and_expires(cluster):
    redis, (a, b), balancer = cluster
    address = "198.51.100.7"
    assert refused_status(b.port, address) is None
    for _ in range(3):
        attack(a.port, address)
    banned_at = time.monotonic()
    assert refused_status(a.port, address) == 403
    assert poll(lambda: refused_status(b.port, address) == 403, timeout=3.0)
    assert time.monotonic() - banned_at < 1.5, "node b took too long to learn node a's ban"
    assert redis.command("ZSCORE", "wsfw:bans", address) is not None
    # ban_time = 4 s: both nodes admit the address again once it expires.
    assert poll(lambda: refused_status(a.port, address) is None and refused_status(b.port, address) is None,
                timeout=8.0)
    assert time.monotonic() - banned_at > 3.0


def test_offences_on_both_nodes_add_up_to_one_fleet_ban(cluster):
    redis, (a, b), balancer = cluster
    address = "198.51.100.8"
    attack(a.port, address)
    attack(b.port, address)
    assert refused_status(a.port, address) is None  # two offences: not yet
    attack(b.port, address)
    assert poll(lambda: refused_status(a.port, address) == 403, timeout=3.0)


def test_the_per_address_cap_holds_across_both_nodes(cluster):
    redis, (a, b), balancer = cluster
    address = "203.0.113.50"
    with contextlib.ExitStack() as opened:
        for port in (a.port, b.port):
            opened.enter_context(as_client(port, address))
        with as_client(a.port, address):
            assert refused_status(a.port, address) == 429
            assert refused_status(b.port, address) == 429
            assert refused_status(b.port, "203.0.113.51") is None  # another address is not affected
        assert poll(lambda: refused_status(b.port, address) is None, timeout=3.0)  # one closed: a slot is free


def test_audit_events_of_both_nodes_land_in_one_stream(cluster):
    redis, (a, b), balancer = cluster
    attack(a.port, "192.0.2.61")
    attack(b.port, "192.0.2.62")

    def fleet_events():
        status, body = a.admin("/api/events?scope=fleet&limit=50")
        assert status == 200, body
        return {(e.get("node"), e.get("peer", "").rpartition(":")[0]) for e in body["events"]}

    seen = poll(lambda: {("a", "192.0.2.61"), ("b", "192.0.2.62")} <= fleet_events() and fleet_events(), timeout=5)
    assert seen, fleet_events()
    assert redis.command("XLEN", "wsfw:events") >= 2


def test_a_supervisor_shows_the_fleet_stream(cluster, tmp_path):
    """With workers, ``/api/events?scope=fleet`` on the supervisor is the fleet's stream (asked of a
    worker), not the supervisor's merge of its own workers' events."""
    redis, (a, b), balancer = cluster
    demo_port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", open(a.path).read()).group(1))
    supervised = fleet.Node(tmp_path, "d", demo_port, redis.port, workers=2).start()
    try:
        attack(b.port, "192.0.2.71")  # an event on another node only

        def seen():
            status, body = supervised.admin("/api/events?scope=fleet&limit=50")
            assert status == 200 and body["scope"] == "fleet", body
            return any(e.get("node") == "b" and e.get("peer", "").startswith("192.0.2.71:") for e in body["events"])

        assert poll(seen, timeout=5)
    finally:
        supervised.stop()


class Chatter(threading.Thread):
    """A benign client chatting through HAProxy: every line must come back, in order."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.sent, self.echoed, self.error = 0, [], None
        self.done = threading.Event()

    def run(self):
        try:
            with connect(f"ws://127.0.0.1:{self.port}/ws/echo", open_timeout=5) as ws:
                while not self.done.is_set():
                    ws.send(f"line {self.sent}")
                    self.sent += 1
                    self.echoed.append(ws.recv(timeout=10))
                    self.done.wait(0.01)
        except BaseException as e:
            self.error = e

    def progressed(self) -> None:
        target = len(self.echoed) + 3
        assert poll(lambda: len(self.echoed) >= target or self.error is not None, timeout=10) and self.error is None, \
            self.error


def test_redis_down_keeps_the_chat_going_then_the_fleet_converges(cluster):
    redis, (a, b), balancer = cluster
    chatter = Chatter(balancer.port)
    chatter.start()
    chatter.progressed()
    redis.stop()
    for node in (a, b):
        assert poll(lambda: node.admin("/readyz")[1].get("cluster") == "degraded", timeout=5)
        status, ready = node.admin("/readyz")
        assert status == 200 and ready["ready"] is True  # still serving
        assert re.search(r"^wsfw_cluster_up 0\.0$", node.metrics(), re.M)
    chatter.progressed()
    # While Redis is away node a bans on its own; node b cannot know yet.
    address = "198.51.100.99"
    for _ in range(3):
        attack(a.port, address)
    assert refused_status(a.port, address) == 403
    assert refused_status(b.port, address) is None
    held = contextlib.ExitStack()
    held.enter_context(as_client(a.port, "203.0.113.77"))  # a connection opened during the outage
    redis.start()
    try:
        for node in (a, b):
            assert poll(lambda: node.admin("/readyz")[1].get("cluster") == "up", timeout=10)
        # Node a republished its ban and its counts: node b now refuses the address too.
        assert poll(lambda: refused_status(b.port, address) == 403, timeout=3.0)
        fields = redis.command("HGETALL", "wsfw:conns:203.0.113.77")
        assert fields and sum(int(v) for v in fields[1::2]) == 1, fields
        chatter.progressed()
    finally:
        held.close()
        chatter.done.set()
        chatter.join(15)
    assert chatter.error is None, chatter.error
    assert chatter.echoed == [f"line {n}" for n in range(chatter.sent)], "a message was lost or reordered"


def test_a_killed_node_leaves_no_phantom_counts_beyond_the_ttl(cluster, tmp_path):
    redis, (a, b), balancer = cluster
    demo_port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", open(a.path).read()).group(1))
    doomed = fleet.Node(tmp_path, "c", demo_port, redis.port, extra=LIMITS).start()
    address = "203.0.113.90"
    opened = [as_client(doomed.port, address).__enter__() for _ in range(3)]
    try:
        assert refused_status(a.port, address) == 429  # the cap counts node c's connections
        os.kill(doomed.proc.proc.pid, signal.SIGKILL)
        doomed.proc.proc.wait(10)
        # Node c's heartbeat expires within 10 s; its counts no longer hold anyone back.
        assert poll(lambda: refused_status(a.port, address) is None, timeout=15.0, interval=0.5)
    finally:
        for ws in opened:
            ws.__exit__(None, None, None)
        doomed.stop()
