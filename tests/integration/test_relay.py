"""The WebSocket relay over real loopback sockets: wsfw between real clients and a real upstream."""

from __future__ import annotations

import os
import socket

from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponse, PerMessageDeflateResponseAccept
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest
from zope.interface import implementer

from tests import support
from wsfw.hook import FORWARD, Verdict
from wsfw.interfaces import IMessageHook


class RelayTestBase(unittest.TestCase):
    timeout = 30
    config_extra = ""
    route_extra = ""
    hook = None

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw = yield support.start_stack(self, hook=self.hook, extra=self.config_extra,
                                                        route_extra=self.route_extra)

    def client(self, path="/ws/echo", **kwargs):
        return support.connect_for(self, self.wsfw.url(path), **kwargs)


class MessagesTests(RelayTestBase):
    @defer.inlineCallbacks
    def test_text_binary_and_utf8_arrive_identical(self):
        """Text (including multi-byte UTF-8) and binary messages come back byte-exact with their type."""
        proto = yield self.client()
        samples = [("héllo wörld ✓ 🚀 中文".encode(), False), (bytes(range(256)) * 3, True), (b"", False),
                   (b"", True), (b"\x00\xff" * 100, True), (b'{"json": [1, 2, "\\u00e9"]}', False)]
        for payload, is_binary in samples:
            proto.sendMessage(payload, is_binary)
            got = yield support.next_message(proto)
            self.assertEqual(got, (payload, is_binary))
        self.assertEqual(self.app.ws.received, samples)

    @defer.inlineCallbacks
    def test_fragmented_and_large_messages(self):
        """A message sent in many frames and a 6 MiB message are reassembled and relayed intact."""
        proto = yield self.client()
        big = os.urandom(6 * 1024 * 1024)
        proto.beginMessage(isBinary=True)
        for i in range(0, 10000, 100):
            proto.sendMessageFrame(big[i:i + 100])
        proto.endMessage()
        got = yield support.next_message(proto)
        self.assertEqual(got, (big[:10000], True))
        proto.sendMessage(big, True)
        got = yield support.next_message(proto, timeout=20)
        self.assertEqual(got[0], big)

    @defer.inlineCallbacks
    def test_upstream_first_message_and_order(self):
        """A message the upstream sends right after its 101 reaches the client, then replies in order."""
        proto = yield self.client("/ws/greet")
        first = yield support.next_message(proto)
        self.assertEqual(first, (b"hello from upstream", False))
        for i in range(200):
            proto.sendMessage(f"m{i}".encode())
        got = []
        for _ in range(200):
            got.append((yield support.next_message(proto))[0])
        self.assertEqual(got, [f"m{i}".encode() for i in range(200)])

    def test_websockets_library_client(self):
        """The `websockets` library as client: text, binary, 1 MiB and a close code with reason."""
        url = self.wsfw.url()

        def run():
            from websockets.sync.client import connect
            out = []
            with connect(url, max_size=None) as ws:
                for payload in ["plain", "ünïcödé", b"\x01\x02", os.urandom(1 << 20)]:
                    ws.send(payload)
                    out.append(ws.recv() == payload)
                ws.close(4321, "client done")
            return out
        d = threads.deferToThread(run)

        @d.addCallback
        def check(out):
            self.assertEqual(out, [True] * 4)
            return task.deferLater(reactor, 0.2, lambda: None)

        @d.addCallback
        def upstream_saw_close(_):
            self.assertIn((True, 4321, "client done"), self.app.ws.closes)
        return d

    @defer.inlineCallbacks
    def test_other_connections_unaffected_by_a_failure(self):
        """One client breaking the protocol is closed; another keeps relaying."""
        good = yield self.client()
        bad = yield self.client()
        bad.transport.write(b"\x81\x82abcd" + bytes([0xff ^ ord("a"), 0xfe ^ ord("b")]))  # masked invalid UTF-8
        was_clean, code, _ = yield support.closed(bad)
        self.assertEqual(code, 1007)
        good.sendMessage(b"still here")
        self.assertEqual((yield support.next_message(good)), (b"still here", False))


class CloseTests(RelayTestBase):
    @defer.inlineCallbacks
    def check_client_close(self, code, reason):
        proto = yield self.client()
        upstream_closed = self.app.ws.next_close()
        proto.sendClose(code, reason)
        got = yield upstream_closed
        self.assertEqual(got, (True, code, reason))
        was_clean, reply_code, _ = yield support.closed(proto)
        self.assertTrue(was_clean)
        self.assertEqual(reply_code, 1000, "the upstream's reply (Autobahn answers 1000) reaches the client")
        yield self.wsfw.drained()

    @defer.inlineCallbacks
    def test_client_close_codes_reach_upstream(self):
        """Close codes 1000, 3000 and 4999 with reasons go upstream unchanged."""
        for code, reason in ((1000, "bye"), (3000, "app"), (4999, "über")):
            yield self.check_client_close(code, reason)

    @defer.inlineCallbacks
    def test_client_going_away_reaches_upstream(self):
        """1001 from a client (which Autobahn's sendClose refuses to send) reaches the upstream."""
        proto = yield self.client()
        upstream_closed = self.app.ws.next_close()
        proto.sendCloseFrame(code=1001, reasonUtf8=b"tab closed")
        self.assertEqual((yield upstream_closed), (True, 1001, "tab closed"))

    @defer.inlineCallbacks
    def test_upstream_close_codes_reach_client(self):
        """Codes the upstream app closes with (1000, 1001, 3000, 4999) and reasons reach the client."""
        for code, reason in ((1000, "done"), (1001, "restarting"), (3000, "app-defined"), (4999, "private use ✓")):
            proto = yield self.client()
            proto.sendMessage(f"CLOSE {code} {reason}".encode())
            was_clean, got_code, got_reason = yield support.closed(proto)
            self.assertEqual((was_clean, got_code, got_reason), (True, code, reason))

    @defer.inlineCallbacks
    def test_upstream_crash_gives_1011(self):
        """When the upstream's TCP vanishes, the client gets 1011, not a silent drop."""
        proto = yield self.client()
        proto.sendMessage(b"x")
        yield support.next_message(proto)
        self.app.ws.opened[-1].transport.abortConnection()
        was_clean, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1011)

    @defer.inlineCallbacks
    def test_client_vanishing_gives_upstream_1001(self):
        """When the client's TCP vanishes, the upstream gets 1001 going away."""
        proto = yield self.client()
        proto.sendMessage(b"x")
        yield support.next_message(proto)
        upstream_closed = self.app.ws.next_close()
        proto.transport.abortConnection()
        _, code, _ = yield upstream_closed
        self.assertEqual(code, 1001)

    @defer.inlineCallbacks
    def test_graceful_shutdown_sends_1001(self):
        """Stopping the service closes open connections with 1001 on both hops and drains."""
        proto = yield self.client()
        proto.sendMessage(b"x")
        yield support.next_message(proto)
        upstream_closed = self.app.ws.next_close()
        stopping = self.wsfw.stop()
        _, code, reason = yield support.closed(proto)
        self.assertEqual((code, reason), (1001, "server shutting down"))
        self.assertEqual((yield upstream_closed)[1], 1001)
        yield stopping
        self.assertEqual(len(self.wsfw.service.tracker), 0)


class HandshakeTests(RelayTestBase):
    @defer.inlineCallbacks
    def test_subprotocol_chosen_by_upstream(self):
        """The client gets the subprotocol the upstream picked from the client's offers."""
        self.app.ws.accept_protocols = ["graphql-transport-ws"]
        proto = yield self.client(protocols=["graphql-ws", "graphql-transport-ws"])
        self.assertEqual(proto.websocket_protocol_in_use, "graphql-transport-ws")
        self.assertEqual(self.app.ws.requests[-1].protocols, ["graphql-ws", "graphql-transport-ws"])

    @defer.inlineCallbacks
    def test_no_subprotocol_when_upstream_picks_none(self):
        """When the upstream accepts none of the offers, neither does wsfw."""
        proto = yield self.client(protocols=["mqtt"])
        self.assertIsNone(proto.websocket_protocol_in_use)

    @defer.inlineCallbacks
    def test_path_query_and_headers_forwarded(self):
        """Path, query, Cookie, Authorization, Origin, User-Agent and X-Forwarded-* reach the upstream."""
        yield self.client("/ws/echo/room?token=abc&x=1", origin="https://app.example",
                          useragent="test-agent/1.0",
                          headers={"Cookie": "sid=42", "Authorization": "Bearer t0k", "X-Forwarded-For": "6.6.6.6"})
        req = self.app.ws.requests[-1]
        self.assertEqual(req.path, "/ws/echo/room")
        self.assertEqual(req.params, {"token": ["abc"], "x": ["1"]})
        self.assertEqual(req.headers["cookie"], "sid=42")
        self.assertEqual(req.headers["authorization"], "Bearer t0k")
        self.assertEqual(req.origin, "https://app.example")
        self.assertEqual(req.headers["user-agent"], "test-agent/1.0")
        self.assertEqual(req.headers["x-forwarded-for"], "127.0.0.1", "a client cannot forge its address")
        self.assertEqual(req.headers["x-forwarded-proto"], "http")
        self.assertEqual(req.headers["x-forwarded-host"], f"127.0.0.1:{self.wsfw.port}")

    @defer.inlineCallbacks
    def test_upstream_refusal_passed_back(self):
        """An upstream that refuses the upgrade with 401 gives the client 401."""
        with self.assertRaises(support.ConnectionRefused) as e:
            yield self.client("/ws/refuse")
        self.assertIn(" 401 ", e.exception.status_line)
        yield self.wsfw.drained()

    @defer.inlineCallbacks
    def test_unreachable_upstream_is_502(self):
        """An upstream that refuses TCP gives 502."""
        yield self.app.port.stopListening()
        with self.assertRaises(support.ConnectionRefused) as e:
            yield self.client()
        self.assertIn(" 502 ", e.exception.status_line)


class TimeoutTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_silent_upstream_is_504(self):
        """An upstream that accepts TCP but never answers the handshake gives 504 after `connect`."""
        self.addCleanup(support.settle)
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        wsfw = support.Wsfw(support.config_text(f"ws://127.0.0.1:{silent.getsockname()[1]}",
                                                extra="[timeouts]\nconnect = 0.5\nopen_handshake = 3\n"))
        yield wsfw.start()
        self.addCleanup(wsfw.stop)
        with self.assertRaises(support.ConnectionRefused) as e:
            yield support.connect(wsfw.url())
        self.assertIn(" 504 ", e.exception.status_line)


class CapsTests(RelayTestBase):
    config_extra = "[limits]\nmax_message_bytes = 64KiB\nmax_frames_per_message = 50\n"

    @defer.inlineCallbacks
    def test_oversized_message_closes_1009(self):
        """A message over max_message_bytes closes the client with 1009 and the upstream with 1001."""
        proto = yield self.client()
        upstream_closed = self.app.ws.next_close()
        proto.sendMessage(b"x" * (64 * 1024 + 1), True)
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1009)
        self.assertEqual((yield upstream_closed)[1], 1001)
        self.assertEqual(self.app.ws.received, [])
        yield self.wsfw.drained()

    @defer.inlineCallbacks
    def test_too_many_frames_closes_1008(self):
        """A message split into more frames than allowed is refused with 1008."""
        proto = yield self.client()
        proto.beginMessage(isBinary=True)
        for _ in range(60):
            proto.sendMessageFrame(b"ab")
        proto.endMessage()
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1008)
        self.assertEqual(self.app.ws.received, [])


class ConnectionCapTests(RelayTestBase):
    config_extra = "[limits]\nmax_connections = 2\n"

    @defer.inlineCallbacks
    def test_connections_over_the_cap_get_503(self):
        """With max_connections = 2 the third concurrent client gets 503; a slot frees when one leaves."""
        first = yield self.client()
        second = yield self.client()
        with self.assertRaises(support.ConnectionRefused) as e:
            yield self.client()
        self.assertIn(" 503 ", e.exception.status_line)
        first.sendClose(1000)
        yield support.closed(first)
        third = yield self.client()
        third.sendMessage(b"still relaying")
        self.assertEqual((yield support.next_message(third))[0], b"still relaying")
        second.sendMessage(b"and here")
        self.assertEqual((yield support.next_message(second))[0], b"and here")


class DeflateTests(RelayTestBase):
    config_extra = "[limits]\nmax_message_bytes = 1MiB\ncompression = both\n"

    def _offer(self):
        return dict(perMessageCompressionOffers=[PerMessageDeflateOffer()],
                    perMessageCompressionAccept=lambda r: PerMessageDeflateResponseAccept(r)
                    if isinstance(r, PerMessageDeflateResponse) else None)

    @defer.inlineCallbacks
    def test_compressed_messages_relayed(self):
        """With compression on, a deflate client's messages are relayed intact."""
        compressed = yield self._deflate_client()
        self.assertIsNotNone(compressed._perMessageCompress, "deflate was negotiated with wsfw")
        compressed.sendMessage(b"abc" * 10000)
        self.assertEqual((yield support.next_message(compressed))[0], b"abc" * 10000)

    @defer.inlineCallbacks
    def _deflate_client(self):
        factory = support.ClientFactory(self.wsfw.url())
        factory.setProtocolOptions(**self._offer())
        from twisted.internet import endpoints
        yield endpoints.HostnameEndpoint(reactor, "127.0.0.1", self.wsfw.port).connect(factory)
        proto = yield factory.opened
        self.addCleanup(support.abort, proto)
        return proto

    @defer.inlineCallbacks
    def test_decompression_bomb_closes_1009(self):
        """A small compressed message that inflates past the cap is refused with 1009."""
        proto = yield self._deflate_client()
        proto.sendMessage(b"\0" * (8 * 1024 * 1024), True)  # ~8 KiB on the wire, 8 MiB inflated
        _, code, _ = yield support.closed(proto, timeout=10)
        self.assertEqual(code, 1009)
        self.assertEqual(self.app.ws.received, [])


@implementer(IMessageHook)
class Judge:
    """A hook that drops messages containing 'drop-me' and closes on 'attack'."""

    def __init__(self):
        self.seen = []
        self.views = []

    def inspect_message(self, view):
        self.seen.append((view.direction, view.payload))
        self.views.append(view)
        if b"drop-me" in view.payload:
            return Verdict.drop("test drop")
        if b"attack" in view.payload:
            return Verdict.close(1008, "test attack", rule="t1")
        if b"slow" in view.payload:
            return task.deferLater(reactor, 0.2, lambda: FORWARD)
        if b"boom" in view.payload:
            raise RuntimeError("inspector bug")
        return FORWARD


class HookTests(RelayTestBase):
    def setUp(self):
        self.hook = Judge()
        return super().setUp()

    @defer.inlineCallbacks
    def test_drop_keeps_connection(self):
        """A dropped message never reaches the upstream and the connection stays up."""
        proto = yield self.client()
        proto.sendMessage(b"please drop-me")
        proto.sendMessage(b"fine")
        self.assertEqual((yield support.next_message(proto)), (b"fine", False))
        self.assertEqual(self.app.ws.received, [(b"fine", False)])

    @defer.inlineCallbacks
    def test_close_verdict_gives_1008_and_spares_others(self):
        """A close verdict closes the sender with 1008, the upstream with 1001; a bystander carries on."""
        bystander = yield self.client()
        attacker = yield self.client()
        upstream_closed = self.app.ws.next_close()
        attacker.sendMessage(b"<script>attack</script>")
        _, code, reason = yield support.closed(attacker)
        self.assertEqual((code, reason), (1008, "policy violation"))
        self.assertEqual((yield upstream_closed)[1], 1001)
        bystander.sendMessage(b"hello")
        self.assertEqual((yield support.next_message(bystander)), (b"hello", False))
        self.assertNotIn((b"<script>attack</script>", False), self.app.ws.received)

    @defer.inlineCallbacks
    def test_deferred_verdicts_keep_order(self):
        """A slow (Deferred) verdict holds later messages back so order is kept."""
        proto = yield self.client()
        proto.sendMessage(b"slow one")
        proto.sendMessage(b"second")
        got = [(yield support.next_message(proto))[0], (yield support.next_message(proto))[0]]
        self.assertEqual(got, [b"slow one", b"second"])

    @defer.inlineCallbacks
    def test_inspector_error_fails_closed(self):
        """An inspector that raises closes the client with 1011 (on_inspection_error = close)."""
        proto = yield self.client()
        proto.sendMessage(b"boom")
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1011)
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_both_directions_inspected(self):
        """The hook sees client->upstream and upstream->client messages, with the handshake's headers."""
        proto = yield self.client("/ws/echo?room=1", headers={"X-Team": "blue"})
        proto.sendMessage(b"ping")
        yield support.next_message(proto)
        self.assertEqual(self.hook.seen, [("client", b"ping"), ("upstream", b"ping")])
        self.assertEqual((self.hook.views[0].header("x-team"), self.hook.views[0].query), ("blue", "room=1"))


class ConnectionLogTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_summary_event_in_json_file(self):
        """Each connection leaves an open and a close event (counts, duration, close code) in [log] json_file."""
        import tempfile

        from twisted.logger import eventsFromJSONLogFile

        folder = tempfile.mkdtemp(prefix="wsfw-log-")
        path = os.path.join(folder, "events.json")
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(folder)))
        _, wsfw = yield support.start_stack(self, log=f"connections = yes\njson_file = {path}")
        proto = yield support.connect(wsfw.url())
        proto.sendMessage(b"12345")
        yield support.next_message(proto)
        proto.sendClose(4000, "done")
        yield support.closed(proto)
        yield task.deferLater(reactor, 0.1, lambda: None)
        yield wsfw.stop()
        with open(path) as f:
            events = [e for e in eventsFromJSONLogFile(f) if e.get("event") in ("open", "close")]
        self.assertEqual([e["event"] for e in events], ["open", "close"])
        close = events[1]
        self.assertEqual((close["c_msgs"], close["c_bytes"], close["u_msgs"], close["u_bytes"]), (1, 5, 1, 5))
        self.assertEqual((close["code"], close["closed_by"], close["route"]), (4000, "client", "app"))
        self.assertGreater(close["duration"], 0)
