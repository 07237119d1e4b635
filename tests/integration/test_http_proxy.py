"""Plain HTTP on the same listener: streamed through to the upstream, with limits and deadlines."""

from __future__ import annotations

import hashlib
import json

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from io import BytesIO

from tests import support


class _Digest:
    """Consumes a response body incrementally, keeping only its size and hash."""

    def __init__(self, response):
        from twisted.internet.protocol import Protocol

        self.size, self.sha = 0, hashlib.sha256()
        self.done = defer.Deferred()
        outer = self

        class P(Protocol):
            def dataReceived(self, data):
                outer.size += len(data)
                outer.sha.update(data)

            def connectionLost(self, reason):
                outer.done.callback(None)
        response.deliverBody(P())


class HTTPProxyTests(unittest.TestCase):
    timeout = 60
    extra = "[limits]\nmax_http_body_bytes = 256KiB\n[timeouts]\nupstream_response = 1\nrequest_head = 0.5\n"

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw = yield support.start_stack(self, extra=self.extra)
        self.agent = Agent(reactor)

    def get(self, path, method=b"GET", headers=None, body=None):
        return self.agent.request(method, self.wsfw.url(path, "http").encode(), Headers(headers or {}),
                                  FileBodyProducer(BytesIO(body)) if body is not None else None)

    @defer.inlineCallbacks
    def test_large_streamed_response(self):
        """A 32 MiB response arrives complete and byte-exact."""
        response = yield self.get("/http/big?mib=32")
        self.assertEqual(response.code, 200)
        digest = _Digest(response)
        yield digest.done
        expected = hashlib.sha256((bytes(range(256)) * 4096) * 32).hexdigest()
        self.assertEqual((digest.size, digest.sha.hexdigest()), (32 << 20, expected))

    @defer.inlineCallbacks
    def test_post_body_relayed(self):
        """A POST body reaches the upstream intact and its answer comes back."""
        body = bytes(range(256)) * 800  # 200 KiB, under the cap
        response = yield self.get("/http/echo", b"POST", body=body)
        self.assertEqual(response.code, 200)
        self.assertEqual((yield readBody(response)), body)

    @defer.inlineCallbacks
    def test_headers_forwarded_and_hop_by_hop_stripped(self):
        """End-to-end headers pass, hop-by-hop ones do not, repeats are kept, X-Forwarded-* are set."""
        response = yield self.get("/http/headers?q=1", headers={
            b"Cookie": [b"sid=1"], b"X-Custom": [b"one", b"two"], b"Connection": [b"keep-alive, x-secret"],
            b"X-Secret": [b"hop only"], b"X-Forwarded-For": [b"1.2.3.4"]})
        seen = json.loads((yield readBody(response)))
        self.assertEqual(seen["uri"], "/http/headers?q=1")
        headers = seen["headers"]
        self.assertEqual(headers["cookie"], ["sid=1"])
        self.assertEqual(headers["x-custom"], ["one", "two"])
        self.assertNotIn("x-secret", headers)
        self.assertEqual(headers["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(headers["x-forwarded-proto"], ["http"])
        self.assertEqual(headers["host"], [f"127.0.0.1:{self.app.port_number}"])
        self.assertEqual(response.headers.getRawHeaders(b"set-cookie"), [b"a=1; Path=/", b"b=2; Path=/"])

    @defer.inlineCallbacks
    def test_body_over_cap_is_413(self):
        """A body over max_http_body_bytes is refused with 413 and never reaches the upstream."""
        client = yield support.raw(self.wsfw.port, b"POST /http/echo HTTP/1.1\r\nHost: x\r\n"
                                                   b"Content-Length: 300000\r\n\r\n" + b"a" * 1000)
        data = yield client.done.addTimeout(5, reactor)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:80])

    @defer.inlineCallbacks
    def test_chunked_body_over_cap_is_413(self):
        """A chunked body that grows past the cap is refused with 413 too."""
        chunk = b"%x\r\n%s\r\n" % (100000, b"b" * 100000)
        client = yield support.raw(self.wsfw.port, b"POST /http/echo HTTP/1.1\r\nHost: x\r\n"
                                                   b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3)
        data = yield client.done.addTimeout(5, reactor)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:80])

    @defer.inlineCallbacks
    def test_upstream_timeout_is_504(self):
        """An upstream that never answers gives 504 after upstream_response."""
        response = yield self.get("/http/never")
        self.assertEqual(response.code, 504)
        yield readBody(response)

    @defer.inlineCallbacks
    def test_unreachable_upstream_is_502(self):
        """An upstream that refuses connections gives 502."""
        yield self.app.port.stopListening()
        response = yield self.get("/http/headers")
        self.assertEqual(response.code, 502)
        yield readBody(response)

    @defer.inlineCallbacks
    def test_slowloris_head_deadline(self):
        """A client dribbling its request head is cut off at request_head, however active it looks."""
        client = yield support.raw(self.wsfw.port, b"GET / HTTP/1.1\r\n")
        drip = task.LoopingCall(lambda: client.transport.write(b"X-a: b\r\n"))
        drip.start(0.1)
        data = yield client.done.addTimeout(5, reactor)
        drip.stop()
        self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:80])

    @defer.inlineCallbacks
    def test_fake_upgrade_is_not_tunnelled(self):
        """A request that only claims to upgrade is refused by the WebSocket handshake, not tunnelled."""
        client = yield support.raw(self.wsfw.port, b"GET /http/headers HTTP/1.1\r\nHost: x\r\n"
                                                   b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        data = yield client.done.addTimeout(5, reactor)
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:80])
        self.assertEqual(self.app.ws.requests, [])
