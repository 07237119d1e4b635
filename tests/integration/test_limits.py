"""Abuse limits and auto-ban over real loopback sockets: a real wsfw, real clients, a real upstream.

Covered elsewhere and not repeated here: a message over max_message_bytes closes 1009, a
fragmented message over max_frames_per_message closes 1008, a small deflated message
inflating past the cap closes 1009 (tests/integration/test_relay.py CapsTests and
DeflateTests), and one slowloris client cut at request_head (test_http_proxy.py). Here the
fragment flood and the decompression bomb are sent to a ``twistd wsfw`` process, whose
resident memory is read before and after.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import zlib

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from tests import support
from tests.integration.test_admin import http, samples, value
from wsfw import logs

XSS = b"<img src=x onerror=alert(document.cookie)>"


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


def upgrade_request(path: str = "/ws/echo", xff: str | None = None, version: int = 13) -> bytes:
    forwarded = f"X-Forwarded-For: {xff}\r\n" if xff else ""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n{forwarded}\r\n"
            ).encode()


def status_of(refused: support.ConnectionRefused) -> int:
    return int(refused.status_line.split()[1])


class LimitsBase(unittest.TestCase):
    timeout = 30
    extra = ""

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw = yield support.start_stack(self, extra=self.extra)

    @property
    def guard(self):
        return self.wsfw.service.guard

    def client(self, xff: str | None = None, path: str = "/ws/echo"):
        return support.connect_for(self, self.wsfw.url(path), headers={"X-Forwarded-For": xff} if xff else None)

    @defer.inlineCallbacks
    def refused_status(self, xff: str | None = None, path: str = "/ws/echo"):
        """The HTTP status a WebSocket handshake gets (fails the test if it is admitted)."""
        try:
            proto = yield self.client(xff, path)
        except support.ConnectionRefused as e:
            return status_of(e)
        support.abort(proto)
        self.fail(f"the handshake from {xff} was admitted")

    @defer.inlineCallbacks
    def admitted_again(self, xff: str | None = None, within: float = 10.0):
        """Poll handshakes until one is admitted (a slot freed, a ban expired); returns the open client."""
        deadline = reactor.seconds() + within
        while True:
            try:
                proto = yield self.client(xff)
                return proto
            except support.ConnectionRefused:
                if reactor.seconds() > deadline:
                    raise
            yield sleep(0.1)

    @defer.inlineCallbacks
    def released(self, within: float = 5.0):
        """Wait until the guard holds no connection slot; fail with what it still holds."""
        deadline = reactor.seconds() + within
        while (self.guard.total or self.guard.connections) and reactor.seconds() < deadline:
            yield sleep(0.02)
        self.assertEqual((self.guard.total, self.guard.connections, self.guard._conns), (0, {}, {}))

    @defer.inlineCallbacks
    def metrics(self) -> dict:
        code, _, body = yield http(self.wsfw.admin_url("/metrics"))
        self.assertEqual(code, 200)
        return samples(body.decode())

    @defer.inlineCallbacks
    def echoed(self, proto, payload: bytes = b"hello"):
        proto.sendMessage(payload)
        self.assertEqual((yield support.next_message(proto))[0], payload)

    def log_events(self) -> list[dict]:
        events: list[dict] = []
        logs.ROUTER.observers.append(events.append)
        self.addCleanup(logs.ROUTER.observers.remove, events.append)
        return events


# -- per-connection token buckets ----------------------------------------------------------


class RateCloseTests(LimitsBase):
    extra = "[limits]\nmessage_rate = 3/m\nbyte_rate = 64KiB/m\n"

    @defer.inlineCallbacks
    def test_message_rate_overflow_closes_1008(self):
        """``3/m``: three messages are relayed; the fourth closes the client with 1008 and the
        upstream with 1001, and never reaches the upstream."""
        proto = yield self.client()
        for i in range(3):
            yield self.echoed(proto, b"m%d" % i)
        upstream_closed = self.app.ws.next_close()
        proto.sendMessage(b"one too many")
        _, code, reason = yield support.closed(proto)
        self.assertEqual((code, reason), (1008, "policy violation"))
        self.assertEqual((yield upstream_closed)[1], 1001)
        self.assertEqual([p for p, _ in self.app.ws.received], [b"m0", b"m1", b"m2"])
        yield self.released()
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_rate_limited_messages_total", action="close"), 1)
        self.assertEqual(value(parsed, "wsfw_rate_limited_messages_total", action="drop"), 0)

    @defer.inlineCallbacks
    def test_byte_rate_overflow_closes_1008(self):
        """``64KiB/m``: 60 KiB pass, the next 8 KiB close the connection."""
        proto = yield self.client()
        yield self.echoed(proto, b"a" * (60 * 1024))
        proto.sendMessage(b"b" * (8 * 1024), isBinary=True)
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1008)
        self.assertEqual(len(self.app.ws.received), 1)


class RateDropTests(LimitsBase):
    extra = "[limits]\nmessage_rate = 2/m\non_rate_exceeded = drop\n"

    @defer.inlineCallbacks
    def test_drop_mode_keeps_the_connection(self):
        """on_rate_exceeded = drop: messages over the rate are withheld, and the connection keeps
        relaying (the upstream's messages still arrive; upstream -> client is never limited)."""
        proto = yield self.client()
        for i in range(5):
            proto.sendMessage(b"m%d" % i)
        self.assertEqual((yield support.next_message(proto))[0], b"m0")
        self.assertEqual((yield support.next_message(proto))[0], b"m1")
        upstream = self.app.ws.opened[-1]
        for _ in range(5):
            upstream.sendMessage(b"news from upstream")
            self.assertEqual((yield support.next_message(proto))[0], b"news from upstream")
        self.assertEqual([p for p, _ in self.app.ws.received], [b"m0", b"m1"])
        self.assertEqual(proto.state, proto.STATE_OPEN)
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_rate_limited_messages_total", action="drop"), 3)
        self.assertEqual(value(parsed, "wsfw_messages_total", direction="client", verdict="block"), 3)


# -- connection caps --------------------------------------------------------------------------


class PerIpCapTests(LimitsBase):
    extra = "[wsfw]\ntrusted_proxies = 127.0.0.1\n[limits]\nmax_connections_per_ip = 2\n"

    @defer.inlineCallbacks
    def test_per_ip_cap_429_and_another_client_gets_in(self):
        """Behind the trusted proxy (127.0.0.1) each X-Forwarded-For address has its own 2 slots: the
        third connection of 198.51.100.1 gets 429, 198.51.100.2 still gets in, and a slot freed by
        a close is admitted again."""
        first = yield self.client("198.51.100.1")
        second = yield self.client("198.51.100.1")
        self.assertEqual((yield self.refused_status("198.51.100.1")), 429)
        other = yield self.client("198.51.100.2")
        yield self.echoed(other)
        yield self.echoed(second)
        first.sendClose(1000)
        yield support.closed(first)
        again = yield self.admitted_again("198.51.100.1")
        yield self.echoed(again)
        self.assertEqual(self.guard.connections, {"198.51.100.1": 2, "198.51.100.2": 1})
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_admission_refusals_total", reason="per_ip"), 1)

    @defer.inlineCallbacks
    def test_handshake_refusal_has_no_upstream_dial(self):
        """A refused handshake never reaches the upstream."""
        yield self.client("198.51.100.1")
        yield self.client("198.51.100.1")
        before = len(self.app.ws.requests)
        client = yield support.raw(self.wsfw.port, upgrade_request(xff="198.51.100.1"))
        data = yield client.done.addTimeout(5, reactor)
        self.assertTrue(data.startswith(b"HTTP/1.1 429 "), data[:80])
        self.assertNotIn(b"retry-after", data.lower())  # when a slot frees is unknown
        self.assertEqual(len(self.app.ws.requests), before)


class ForgedForwardedForTests(LimitsBase):
    """The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is the client's own claim."""

    extra = "[wsfw]\ntrusted_proxies = 192.0.2.1\n[limits]\nmax_connections_per_ip = 2\n"

    @defer.inlineCallbacks
    def test_forged_forwarded_for_is_ignored(self):
        yield self.client("198.51.100.1")
        yield self.client("198.51.100.2")
        self.assertEqual((yield self.refused_status("198.51.100.3")), 429)
        self.assertEqual(self.guard.connections, {"127.0.0.1": 2})


class GlobalCapTests(LimitsBase):
    extra = "[wsfw]\ntrusted_proxies = 127.0.0.1\n[limits]\nmax_connections_total = 2\n"

    @defer.inlineCallbacks
    def test_global_cap_503(self):
        """Past max_connections_total every new WebSocket gets 503, whoever asks; plain HTTP still works."""
        first = yield self.client("198.51.100.1")
        yield self.client("198.51.100.2")
        self.assertEqual((yield self.refused_status("198.51.100.3")), 503)
        code, _, _ = yield http(self.wsfw.url("/http/headers", "http"))
        self.assertEqual(code, 200)
        first.sendClose(1000)
        yield support.closed(first)
        yield self.admitted_again("198.51.100.3")
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_admission_refusals_total", reason="total"), 1)


class HandshakeRateTests(LimitsBase):
    extra = "[limits]\nhandshake_rate_per_ip = 3/m\n"

    @defer.inlineCallbacks
    def test_handshake_rate_429_with_retry_after(self):
        for _ in range(3):
            proto = yield self.client()
            proto.sendClose(1000)
        client = yield support.raw(self.wsfw.port, upgrade_request())
        data = yield client.done.addTimeout(5, reactor)
        head = data.split(b"\r\n\r\n")[0].lower()
        self.assertTrue(head.startswith(b"http/1.1 429 "), head)
        self.assertIn(b"\r\nretry-after: 20", head)  # a token every 20 s
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_admission_refusals_total", reason="handshake_rate"), 1)


# -- every admitted connection's slot comes back, whatever ends it --------------------------------


class Silent(Protocol):
    """Accepts and never answers (an upstream that hangs mid-handshake)."""


class ReleaseTests(LimitsBase):
    """With one slot in all, any leak would refuse the next client: after each way a connection
    can end, the guard holds nothing and a new client is admitted."""

    @defer.inlineCallbacks
    def setUp(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
        probe.close()  # nothing listens there now: connection refused, 502
        self.silent = yield reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(self.silent.stopListening)
        self.extra = (f"[limits]\nmax_connections_total = 1\nmax_connections_per_ip = 1\n"
                      f"[timeouts]\nconnect = 0.5\nopen_handshake = 3\n"
                      f"[route:dead]\npath = /dead\nupstream = ws://127.0.0.1:{dead_port}\n"
                      f"[route:silent]\npath = /silent\nupstream = ws://127.0.0.1:{self.silent.getHost().port}\n")
        yield super().setUp()

    @defer.inlineCallbacks
    def assert_slot_free(self):
        yield self.released()
        proto = yield self.client()
        yield self.echoed(proto)
        support.abort(proto)
        yield self.released()

    @defer.inlineCallbacks
    def test_normal_close_and_abort(self):
        proto = yield self.client()
        self.assertEqual(self.guard.total, 1)
        proto.sendClose(1000)
        yield support.closed(proto)
        yield self.assert_slot_free()
        proto = yield self.client()
        proto.transport.abortConnection()
        yield self.assert_slot_free()

    @defer.inlineCallbacks
    def test_upstream_refusal_502_and_504(self):
        self.assertEqual((yield self.refused_status(path="/ws/refuse")), 401)
        yield self.assert_slot_free()
        self.assertEqual((yield self.refused_status(path="/dead/x")), 502)
        yield self.assert_slot_free()
        self.assertEqual((yield self.refused_status(path="/silent/x")), 504)
        yield self.assert_slot_free()

    @defer.inlineCallbacks
    def test_client_gone_mid_handshake(self):
        """The client leaves while wsfw waits for the upstream."""
        client = yield support.raw(self.wsfw.port, upgrade_request("/silent/x"))
        deadline = reactor.seconds() + 5
        while not self.guard.total and reactor.seconds() < deadline:
            yield sleep(0.02)
        self.assertEqual(self.guard.total, 1)
        client.transport.abortConnection()
        yield self.assert_slot_free()

    @defer.inlineCallbacks
    def test_handshake_refused_before_a_protocol_exists(self):
        """A handshake wsfw refuses itself (bad version, not GET) took a ticket no protocol claimed."""
        for request in (upgrade_request(version=8), b"POST" + upgrade_request()[3:]):
            client = yield support.raw(self.wsfw.port, request)
            data = yield client.done.addTimeout(5, reactor)
            self.assertTrue(data.startswith(b"HTTP/1.1 4"), data[:80])
            yield self.assert_slot_free()

    @defer.inlineCallbacks
    def test_shutdown_drain(self):
        proto = yield self.client()
        yield self.echoed(proto)
        closed = support.closed(proto)
        yield self.wsfw.stop()
        self.assertEqual((yield closed)[1], 1001)
        yield self.released()


# -- auto-ban -----------------------------------------------------------------------------------


class BanTests(LimitsBase):
    """Behind a trusted proxy: two blocks within 30 s ban the client for 1 s."""

    extra = ("[wsfw]\ntrusted_proxies = 127.0.0.1\n[limits]\nban_after = 2\nban_window = 30s\nban_time = 1s\n")

    @defer.inlineCallbacks
    def blocked(self, xff: str):
        proto = yield self.client(xff)
        proto.sendMessage(XSS)
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1008)

    @defer.inlineCallbacks
    def test_ban_after_n_blocks_and_expiry(self):
        """The X-Forwarded-For address is banned (every request, WebSocket or HTTP, gets 403), not
        the proxy: another client behind it carries on. Once ban_time has passed it is admitted
        again. Every step is logged."""
        events = self.log_events()
        yield self.blocked("198.51.100.1")
        yield self.echoed((yield self.client("198.51.100.1")))  # one block is not a ban
        yield self.blocked("198.51.100.1")
        self.assertEqual((yield self.refused_status("198.51.100.1")), 403)
        client = yield support.raw(self.wsfw.port, b"GET /http/headers HTTP/1.1\r\nHost: x\r\n"
                                                   b"X-Forwarded-For: 198.51.100.1\r\n\r\n")
        data = yield client.done.addTimeout(5, reactor)
        self.assertTrue(data.startswith(b"HTTP/1.1 403 "), data[:80])
        yield self.echoed((yield self.client("198.51.100.2")))
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_banned_addresses"), 1)
        self.assertEqual(value(parsed, "wsfw_bans_total"), 1)
        self.assertGreaterEqual(value(parsed, "wsfw_admission_refusals_total", reason="banned"), 2)
        proto = yield self.admitted_again("198.51.100.1")
        yield self.echoed(proto)
        kinds = [(e.get("event"), e.get("address")) for e in events if e.get("log_namespace") == "wsfw.guard"]
        self.assertIn(("ban", "198.51.100.1"), kinds)
        self.assertIn(("refused", "198.51.100.1"), kinds)
        self.assertIn(("unban", "198.51.100.1"), kinds)


class AbuseCloseBanTests(LimitsBase):
    """wsfw's own closes for abuse count like blocks."""

    extra = ("[wsfw]\ntrusted_proxies = 127.0.0.1\n[limits]\nmax_message_bytes = 4KiB\nmax_frames_per_message = 10\n"
             "message_rate = 1/m\nban_after = 3\nban_time = 1m\n")

    @defer.inlineCallbacks
    def test_oversize_frame_flood_and_rate_closes_ban(self):
        proto = yield self.client("198.51.100.3")
        proto.sendMessage(b"x" * 5000, isBinary=True)
        self.assertEqual((yield support.closed(proto))[1], 1009)
        proto = yield self.client("198.51.100.3")
        proto.beginMessage(isBinary=True)
        for _ in range(11):
            proto.sendMessageFrame(b"x")
        proto.endMessage()
        self.assertEqual((yield support.closed(proto))[1], 1008)
        proto = yield self.client("198.51.100.3")
        yield self.echoed(proto)
        proto.sendMessage(b"over the rate")
        self.assertEqual((yield support.closed(proto))[1], 1008)
        self.assertEqual((yield self.refused_status("198.51.100.3")), 403)
        yield self.echoed((yield self.client("198.51.100.4")))


class DetectModeTests(LimitsBase):
    """Detect-mode matches are not enforced, so they never ban."""

    extra = "[wsfw]\nmode = detect\n[limits]\nban_after = 1\nban_time = 1m\n"

    @defer.inlineCallbacks
    def test_detect_mode_matches_never_ban(self):
        proto = yield self.client()
        for _ in range(3):
            yield self.echoed(proto, XSS)
        yield self.echoed((yield self.client()))
        self.assertEqual(self.guard.banned_count(), 0)


class UntrustedBanTests(LimitsBase):
    """The peer is not a trusted proxy: the ban hits the peer, whatever X-Forwarded-For it forges."""

    extra = "[wsfw]\ntrusted_proxies = 192.0.2.1\n[limits]\nban_after = 1\nban_time = 1m\n"

    @defer.inlineCallbacks
    def test_forged_forwarded_for_does_not_dodge_a_ban(self):
        proto = yield self.client("198.51.100.1")
        proto.sendMessage(XSS)
        yield support.closed(proto)
        self.assertEqual((yield self.refused_status("198.51.100.99")), 403)
        self.assertTrue(self.guard.is_banned("127.0.0.1"))
        self.assertFalse(self.guard.is_banned("198.51.100.1"))


# -- max_lifetime -----------------------------------------------------------------------------


class LifetimeTests(LimitsBase):
    extra = "[timeouts]\nmax_lifetime = 0.5\n"

    @defer.inlineCallbacks
    def test_max_lifetime_closes_both_hops_1001(self):
        proto = yield self.client()
        upstream_closed = self.app.ws.next_close()
        yield self.echoed(proto)
        _, code, reason = yield support.closed(proto)
        self.assertEqual((code, reason), (1001, "max lifetime reached"))
        self.assertEqual((yield upstream_closed)[1], 1001)
        yield self.wsfw.drained()


# -- slowloris ------------------------------------------------------------------------------------


class SlowlorisTests(LimitsBase):
    extra = "[timeouts]\nrequest_head = 1\n[limits]\nmax_connections_per_ip = 5\nhandshake_rate_per_ip = 10/s\n"

    @defer.inlineCallbacks
    def test_many_dribbling_handshakes_cut_while_a_client_connects(self):
        """50 connections dribble an upgrade request one header line at a time: each gets 408 and
        is closed at the head deadline, however active it looks; meanwhile a normal client
        connects and relays. The dribblers never reach admission, so they hold no slot."""
        dribblers = []
        for _ in range(50):
            client = yield support.raw(self.wsfw.port, b"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            dribblers.append(client)
        lines = iter(range(10**6))

        def drip():
            n = next(lines)
            for client in dribblers:
                if client.transport.connected:
                    client.transport.write(b"X-Slow-%d: 1\r\n" % n)
        dripping = task.LoopingCall(drip)
        dripping.start(0.1)
        self.addCleanup(lambda: dripping.running and dripping.stop())
        proto = yield self.client()
        yield self.echoed(proto, b"not starved")
        self.assertEqual(self.guard.total, 1)
        results = yield defer.gatherResults([c.done.addTimeout(10, reactor) for c in dribblers])
        dripping.stop()
        for data in results:
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:80])
        yield self.echoed(proto, b"still relaying")


# -- memory under a fragment flood and a decompression bomb (a real twistd process) -------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def ws_open(port: int, deflate: bool = False) -> tuple[socket.socket, bytes]:
    """A raw client: the opening handshake, nothing else. Returns the socket and what followed the head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    extension = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" if deflate else ""
    sock.sendall(f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed during the handshake: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert not deflate or b"permessage-deflate" in head.lower(), head
    return sock, rest


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
    return header + mask + masked


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def close_code(sock: socket.socket, buffered: bytes) -> int | None:
    """Read server frames until a close frame; its code (None if the connection just ended)."""
    data = buffered
    while True:
        while len(data) >= 2:
            opcode, n = data[0] & 0x0F, data[1] & 0x7F
            offset = 2
            if n == 126:
                if len(data) < 4:
                    break
                n, offset = struct.unpack("!H", data[2:4])[0], 4
            elif n == 127:
                if len(data) < 10:
                    break
                n, offset = struct.unpack("!Q", data[2:10])[0], 10
            if len(data) < offset + n:
                break
            payload, data = data[offset:offset + n], data[offset + n:]
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return None
        if not chunk:
            return None
        data += chunk


def send_until_refused(sock: socket.socket, chunks) -> bytes:
    """Write ``chunks`` until they are all sent, wsfw answers (its close frame: it is read at once,
    before wsfw drops a connection that keeps sending), or it stops reading; returns its answer."""
    data = b"".join(chunks)
    view, sent, answer = memoryview(data), 0, b""
    sock.setblocking(False)
    try:
        while sent < len(data):
            readable, writable, _ = select.select([sock], [sock], [], 2)
            if readable:
                answer = sock.recv(65536)
                break
            if not writable:
                break  # wsfw stopped reading (it is failing the connection)
            sent += sock.send(view[sent:sent + 65536])
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.settimeout(10)
    return answer


def _wsfw_process(tmp_path, limits: str):
    demo, demo_port = support.start_demo()
    try:
        # close_handshake (joining the [timeouts] section start_wsfw_in_front opens): ample time for
        # the client to read wsfw's close before wsfw drops a connection that never answered it
        daemon, port, _ = support.start_wsfw_in_front(tmp_path, demo_port, extra="close_handshake = 5\n" + limits)
    except BaseException:
        demo.stop()
        raise
    return demo, daemon, port


def _warm(port: int) -> None:
    """One relayed message, so the baseline already holds every code path and buffer a connection uses."""
    sock, rest = ws_open(port)
    sock.sendall(frame(2, b"warm"))
    sock.sendall(frame(8, struct.pack("!H", 1000)))
    close_code(sock, rest)
    sock.close()


#: How much wsfw's resident memory may grow over a whole attack: far less than what one
#: unbounded fragment flood (tens of MiB of Python objects) or one inflated bomb (64 MiB) costs.
RSS_GROWTH_MAX_KIB = 16 * 1024


def test_fragment_flood_closed_without_memory_growth(tmp_path):
    """5 connections each send 200,000 one-byte continuation frames of one message (1.4 MB on the
    wire, past max_frames_per_message = 1000): each is closed with 1008, and wsfw's resident
    memory does not grow by anything like the data thrown at it (without the frame cap, each
    such connection costs wsfw about 7 MiB here)."""
    demo, daemon, port = _wsfw_process(tmp_path, "[limits]\nmax_message_bytes = 64KiB\nmax_frames_per_message = 1000\n")
    try:
        _warm(port)
        before = rss_kib(daemon.proc.pid)
        tiny = frame(0, b"a", fin=False)
        for _ in range(5):
            sock, rest = ws_open(port)
            chunks = [frame(2, b"a", fin=False)] + [tiny * 10_000] * 20
            assert close_code(sock, rest + send_until_refused(sock, chunks)) == 1008
            sock.close()
        _warm(port)  # still relaying
        grown = rss_kib(daemon.proc.pid) - before
        assert grown < RSS_GROWTH_MAX_KIB, f"wsfw grew by {grown} KiB"
        assert "more than 1000 frames in one message" in daemon.output
    finally:
        daemon.stop()
        demo.stop()


def test_decompression_bomb_closed_without_memory_growth(tmp_path):
    """With compression = client: a 1 KiB permessage-deflate message inflating to 1 MiB (past
    max_message_bytes = 64 KiB) is closed with 1009; so are 20 bombs of 64 KiB inflating to
    64 MiB each, and wsfw's resident memory stays far below one inflated bomb."""
    demo, daemon, port = _wsfw_process(tmp_path, "[limits]\nmax_message_bytes = 64KiB\ncompression = client\n")

    def bomb(size: int) -> bytes:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = deflate.compress(b"\0" * size) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        return data[:-4]

    try:
        _warm(port)
        small = bomb(1 << 20)
        assert len(small) <= 1100, len(small)
        sock, rest = ws_open(port, deflate=True)
        sock.sendall(frame(2, small, rsv1=True))
        assert close_code(sock, rest) == 1009
        sock.close()
        before = rss_kib(daemon.proc.pid)
        big = frame(2, bomb(64 << 20), rsv1=True)
        for _ in range(20):
            sock, rest = ws_open(port, deflate=True)
            assert close_code(sock, rest + send_until_refused(sock, [big])) == 1009
            sock.close()
        _warm(port)
        grown = rss_kib(daemon.proc.pid) - before
        assert grown < RSS_GROWTH_MAX_KIB, f"wsfw grew by {grown} KiB"
    finally:
        daemon.stop()
        demo.stop()


class ReloadTests(LimitsBase):
    """The guard is built once and survives reloads: counts and bans carry over, new limits apply
    to new connections."""

    extra = "[wsfw]\ntrusted_proxies = 127.0.0.1\n[limits]\nmax_connections_per_ip = 3\nban_after = 1\nban_time = 1m\n"

    @defer.inlineCallbacks
    def test_reload_keeps_counts_and_bans_and_applies_new_caps(self):
        guard = self.guard
        first = yield self.client("198.51.100.1")
        yield self.client("198.51.100.1")
        proto = yield self.client("198.51.100.2")
        proto.sendMessage(XSS)
        yield support.closed(proto)
        text = support.config_text(f"ws://127.0.0.1:{self.app.port_number}",
                                   extra=self.extra.replace("max_connections_per_ip = 3", "max_connections_per_ip = 1"))
        with open(self.wsfw.path, "w") as f:
            f.write(text)
        self.assertTrue(self.wsfw.service.reloader.reload())
        self.assertIs(self.wsfw.service.guard, guard)
        self.assertEqual(guard.limits.max_connections_per_ip, 1)
        self.assertEqual((yield self.refused_status("198.51.100.1")), 429)  # its 2 open connections count
        self.assertEqual((yield self.refused_status("198.51.100.2")), 403)  # still banned
        yield self.echoed(first)  # open connections are not touched
        yield self.echoed((yield self.client("198.51.100.3")))
