"""``haproxy:`` listeners: the PROXY protocol (v1 text, v2 binary) header from an L4 load
balancer gives wsfw the real client address, for the upstream's ``X-Forwarded-For``, the
connection log and every per-address decision; a connection without the header is dropped.
(tests/integration/test_cluster.py puts a real HAProxy in front.)"""

from __future__ import annotations

import json
import socket
import struct

from twisted.internet import defer
from twisted.trial import unittest

from tests import support

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 80\r\n".encode()


def proxy_v2(source: str, port: int = 40000) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 80)
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def get_headers() -> bytes:
    return b"GET /http/headers HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"


def upgrade() -> bytes:
    return (b"GET /ws/echo HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class ProxyProtocolTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw = yield support.start_stack(self, listen="haproxy:tcp:0:interface=127.0.0.1")

    @defer.inlineCallbacks
    def forwarded_for(self, header: bytes) -> str:
        proto = yield support.raw(self.wsfw.port, header + get_headers())
        data = yield proto.done
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        if b"chunked" in head.lower():
            body = b"".join(body.split(b"\r\n")[1:-1:2])  # size line, data, size line, data..., 0
        return json.loads(body)["headers"]["x-forwarded-for"][0]

    @defer.inlineCallbacks
    def test_v1_and_v2_headers_give_the_client_address(self):
        self.assertEqual((yield self.forwarded_for(proxy_v1("203.0.113.9"))), "203.0.113.9")
        self.assertEqual((yield self.forwarded_for(proxy_v2("198.51.100.23"))), "198.51.100.23")

    @defer.inlineCallbacks
    def test_websocket_behind_the_balancer_sees_the_client_address(self):
        proto = yield support.raw(self.wsfw.port, proxy_v1("203.0.113.77") + upgrade())
        for _ in range(100):
            if b"\r\n\r\n" in proto.data:
                break
            yield support.settle()
        self.assertTrue(proto.data.startswith(b"HTTP/1.1 101 "), proto.data)
        self.assertEqual(self.app.ws.requests[-1].headers["x-forwarded-for"], "203.0.113.77")
        proto.transport.abortConnection()
        yield self.wsfw.drained()

    @defer.inlineCallbacks
    def test_a_connection_without_the_header_is_dropped(self):
        proto = yield support.raw(self.wsfw.port, get_headers())
        data = yield proto.done
        self.assertEqual(data, b"")
        self.assertEqual(self.app.http_bodies, [])
