"""Handshake hardening over real sockets: wsfw refuses malformed upgrades, cross-site and unlisted
handshakes and attacks in the handshake itself, and never dials the upstream for them.

Each test counts the TCP connections the upstream app accepts (its Site's buildProtocol) as well
as the WebSocket handshakes it saw, so "no dial" means no socket was even opened to it.
"""

from __future__ import annotations

import base64
import os
from urllib.parse import quote

from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import defer, endpoints, reactor, task, threads
from twisted.trial import unittest

from tests import support
from tests.integration.test_inspection import read_audit
from wsfw import logs

KEY = base64.b64encode(os.urandom(16)).decode()
SQLI = "1' UNION SELECT username, password FROM users--"
XSS = "<img src=x onerror=alert(document.cookie)>"


def upgrade_request(method="GET", version="HTTP/1.1", path="/ws/echo", drop=(), body=b"", **extra) -> bytes:
    """A raw handshake request: valid unless told otherwise (``drop`` leaves headers out; keywords add or
    replace them, ``x_team`` being ``X-Team``)."""
    headers = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": KEY,
               "Sec-WebSocket-Version": "13"}
    for name in drop:
        headers.pop(name)
    headers.update({k.replace("_", "-").title(): v for k, v in extra.items()})
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


class HandshakeBase(unittest.TestCase):
    timeout = 30
    route_extra = ""
    wsfw_extra = ""
    rules = ""

    @defer.inlineCallbacks
    def setUp(self):
        self.refusals = []
        observer = lambda e: self.refusals.append(e) if e.get("event") == "handshake_refused" else None  # noqa: E731
        logs.ROUTER.observers.append(observer)
        self.addCleanup(logs.ROUTER.observers.remove, observer)
        self.app, self.wsfw, self.audit_path = yield support.start_stack_with_rules(
            self, self.rules, route_extra=self.route_extra, wsfw_extra=self.wsfw_extra)
        self.dials = []
        accept = self.app.site.buildProtocol

        def counted(addr):
            self.dials.append(addr)
            return accept(addr)
        self.app.site.buildProtocol = counted

    def client(self, path="/ws/echo", **kwargs):
        return support.connect_for(self, self.wsfw.url(path), **kwargs)

    @defer.inlineCallbacks
    def assert_refused(self, status: int, path="/ws/echo", **kwargs):
        """An Autobahn client is refused with ``status`` and the upstream never sees a connection."""
        with self.assertRaises(support.ConnectionRefused) as e:
            yield self.client(path, **kwargs)
        self.assertIn(f" {status} ", e.exception.status_line)
        yield self.assert_not_dialled()

    @defer.inlineCallbacks
    def assert_not_dialled(self, dials: int = 0, handshakes: int = 0):
        yield task.deferLater(reactor, 0.1, lambda: None)  # time enough for a dial that was (wrongly) started
        self.assertEqual(len(self.dials), dials, "the upstream accepted a connection")
        self.assertEqual(len(self.app.ws.requests), handshakes, "the upstream saw a handshake")

    @defer.inlineCallbacks
    def assert_relays(self, proto, payload: bytes = b"hello through wsfw"):
        proto.sendMessage(payload)
        self.assertEqual((yield support.next_message(proto))[0], payload)

    @defer.inlineCallbacks
    def raw(self, request: bytes):
        """Send raw bytes; returns (status, headers, body) once wsfw has answered and closed the connection."""
        client = yield support.raw(self.wsfw.port, request)
        data = yield client.done.addTimeout(5, reactor)
        return parse_response(data)

    def audit(self) -> list[dict]:
        return read_audit(self.audit_path) if os.path.exists(self.audit_path) else []


class StrictUpgradeTests(HandshakeBase):
    """RFC 6455 validation, always on: a request that only claims to upgrade is refused by wsfw."""

    CASES = {
        "no key": (upgrade_request(drop=("Sec-WebSocket-Key",)), 400),
        "key of 15 bytes": (upgrade_request(sec_websocket_key=base64.b64encode(b"fifteen bytes!!").decode()), 400),
        "key not base64": (upgrade_request(sec_websocket_key="!" * 24), 400),
        "two keys": (upgrade_request().replace(b"\r\n\r\n", f"\r\nSec-WebSocket-Key: {KEY}\r\n\r\n".encode()), 400),
        "wrong version": (upgrade_request(sec_websocket_version="8"), 426),
        "no version": (upgrade_request(drop=("Sec-WebSocket-Version",)), 426),
        "POST with Upgrade": (upgrade_request(method="POST", content_length="0"), 405),
        "GET with a body": (upgrade_request(content_length="5", body=b"\x81\x05hello"[:5]), 400),
        "GET with a chunked body": (upgrade_request(transfer_encoding="chunked", body=b"2\r\nhi\r\n0\r\n\r\n"), 400),
        "HTTP/1.0": (upgrade_request(version="HTTP/1.0"), 400),
        "Connection without upgrade": (upgrade_request(connection="keep-alive"), 400),
        "Upgrade not only websocket": (upgrade_request(upgrade="websocket, h2c"), 400),
        "no Host": (upgrade_request(drop=("Host",)), 400),
    }

    @defer.inlineCallbacks
    def test_fake_upgrades_refused_without_dial(self):
        """Each malformed handshake gets its status (405 with Allow, 426 with Sec-WebSocket-Version: 13),
        a short plain-text reason and a closed connection; the upstream is never dialled."""
        for name, (request, status) in self.CASES.items():
            got, headers, body = yield self.raw(request)
            self.assertEqual(got, status, name)
            self.assertEqual(headers["content-type"], "text/plain; charset=utf-8", name)
            self.assertTrue(body.strip() and b"\n" not in body.strip(), (name, body))
            if status == 405:
                self.assertEqual(headers["allow"], "GET")
            if status == 426:
                self.assertEqual((headers["sec-websocket-version"], headers["upgrade"]), ("13", "websocket"))
        yield self.assert_not_dialled()
        self.assertEqual([(e["status"], e["route"]) for e in self.refusals],
                         [(status, "app") for _, status in self.CASES.values()])
        self.assertTrue(all(e["peer"] == "127.0.0.1" and e["reason"] for e in self.refusals))

    @defer.inlineCallbacks
    def test_request_behind_a_refused_upgrade_is_not_read(self):
        """A request pipelined behind a refused upgrade (request smuggling) is dropped with the connection."""
        smuggled = b"GET /http/headers HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        status, _, body = yield self.raw(upgrade_request(sec_websocket_version="8") + smuggled)
        self.assertEqual(status, 426)
        self.assertNotIn(b"HTTP/1.1", body, "a second response followed the refusal")
        yield self.assert_not_dialled()

    @defer.inlineCallbacks
    def test_valid_raw_handshake_still_upgrades(self):
        """The same raw request, valid, gets 101 from the upstream through wsfw."""
        client = yield support.raw(self.wsfw.port, upgrade_request())
        self.addCleanup(client.transport.loseConnection)
        for _ in range(100):
            if b"\r\n\r\n" in client.data:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 101 "), client.data[:80])
        self.assertEqual(len(self.app.ws.requests), 1)

    @defer.inlineCallbacks
    def test_websockets_library_client_unaffected(self):
        """A real client library's handshake (with its permessage-deflate offer) passes the strict checks."""
        url = self.wsfw.url()

        def run():
            from websockets.sync.client import connect
            with connect(url) as ws:
                ws.send("hello")
                return ws.recv()
        self.assertEqual((yield threads.deferToThread(run)), "hello")


class OriginTests(HandshakeBase):
    route_extra = "origins = https://chat.example.com https://*.example.org\n"

    @defer.inlineCallbacks
    def test_cross_origin_handshake_refused_without_dial(self):
        """Cross-site WebSocket hijacking: a page on another origin is refused with 403, nothing dialled."""
        for origin in ("https://evil.example", "https://example.org", "https://evilexample.org",
                       "http://chat.example.com", "https://chat.example.com:8443", "null"):
            yield self.assert_refused(403, origin=origin)
        self.assertEqual({e["status"] for e in self.refusals}, {403})
        self.assertIn("https://evil.example", self.refusals[0]["reason"])

    @defer.inlineCallbacks
    def test_allowed_origin_and_wildcard_subdomain_relay(self):
        """The listed origin (default port written or not), a wildcard subdomain, and a client
        without Origin (not a browser) open and relay."""
        for origin in ("https://chat.example.com", "https://chat.example.com:443", None):
            proto = yield self.client(origin=origin)
            yield self.assert_relays(proto)
        self.assertEqual(self.app.ws.requests[0].origin, "https://chat.example.com")
        url = self.wsfw.url()

        def run():
            from websockets.sync.client import connect
            with connect(url, origin="https://eu.rooms.example.org") as ws:
                ws.send("from a subdomain")
                return ws.recv()
        self.assertEqual((yield threads.deferToThread(run)), "from a subdomain")
        self.assertEqual(self.refusals, [])


class RequiredTests(HandshakeBase):
    route_extra = """\
        require_cookies = session
        require_headers = origin
        hosts = 127.0.0.1 *.example.com
    """

    @defer.inlineCallbacks
    def test_missing_required_cookie_refused_without_dial(self):
        yield self.assert_refused(403, origin="https://a.example", headers={"Cookie": "theme=dark"})
        yield self.assert_refused(403, origin="https://a.example", headers={"Cookie": "session="})
        proto = yield self.client(origin="https://a.example", headers={"Cookie": "theme=dark; session=s3cr3t"})
        yield self.assert_relays(proto)
        self.assertEqual(self.app.ws.requests[0].headers["cookie"], "theme=dark; session=s3cr3t")

    @defer.inlineCallbacks
    def test_missing_required_header_refused(self):
        """require_headers = origin refuses clients that send no Origin."""
        yield self.assert_refused(403, headers={"Cookie": "session=s3cr3t"})

    @defer.inlineCallbacks
    def test_host_allow_list(self):
        """A Host outside hosts is refused with 403 (the port is ignored)."""
        status, _, _ = yield self.raw(upgrade_request(host="evil.example", origin="https://a.example",
                                                      cookie="session=1"))
        self.assertEqual(status, 403)
        yield self.assert_not_dialled()
        client = yield support.raw(self.wsfw.port, upgrade_request(host="rooms.example.com:8080", origin="https://a",
                                                                   cookie="session=1"))
        self.addCleanup(client.transport.loseConnection)
        for _ in range(100):
            if b"\r\n\r\n" in client.data:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(client.data.startswith(b"HTTP/1.1 101 "), client.data[:80])


class SubprotocolTests(HandshakeBase):
    route_extra = "subprotocols = v12.stomp mqtt\n"

    @defer.inlineCallbacks
    def test_unlisted_subprotocols_removed_before_the_upstream(self):
        """The upstream only sees the listed offers, in the client's order, and picks among them."""
        self.app.ws.accept_protocols = ["evil.proto", "mqtt"]
        proto = yield self.client(protocols=["evil.proto", "mqtt", "v12.stomp"])
        self.assertEqual(self.app.ws.requests[0].protocols, ["mqtt", "v12.stomp"])
        self.assertEqual(proto.websocket_protocol_in_use, "mqtt")
        yield self.assert_relays(proto)

    @defer.inlineCallbacks
    def test_no_listed_subprotocol_left_refused(self):
        yield self.assert_refused(403, protocols=["evil.proto", "graphql-ws"])

    @defer.inlineCallbacks
    def test_no_offer_passes(self):
        proto = yield self.client()
        yield self.assert_relays(proto)


class ExtensionTests(HandshakeBase):
    route_extra = "extensions = permessage-deflate\n"
    wsfw_extra = "[limits]\ncompression = client\n"

    @defer.inlineCallbacks
    def test_listed_extension_offer_passes(self):
        factory = support.ClientFactory(self.wsfw.url())
        factory.setProtocolOptions(perMessageCompressionOffers=[PerMessageDeflateOffer()],
                                   perMessageCompressionAccept=lambda r: PerMessageDeflateResponseAccept(r)
                                   if isinstance(r, PerMessageDeflateResponse) else None)
        yield endpoints.HostnameEndpoint(reactor, "127.0.0.1", self.wsfw.port).connect(factory)
        proto = yield factory.opened
        self.addCleanup(support.abort, proto)
        self.assertIsNotNone(proto._perMessageCompress, "permessage-deflate was negotiated with wsfw")
        yield self.assert_relays(proto, b"abc" * 1000)

    @defer.inlineCallbacks
    def test_unlisted_extension_offer_refused(self):
        offer = "permessage-deflate, x-webkit-deflate-frame"
        yield self.assert_refused(403, headers={"Sec-WebSocket-Extensions": offer})


class DetectionTests(HandshakeBase):
    """The handshake's query arguments and cookies go through the detectors before any dial."""

    rules = """
        [rule:session-cookie-xss]
        route = app
        action = exclude
        detector = xss
        param = handshake.cookie.session
    """

    @defer.inlineCallbacks
    def test_sqli_in_query_argument_refused_and_audited(self):
        bystander = yield self.client()
        yield self.assert_refused(403, path="/ws/echo?room=" + quote(SQLI), dials=1, handshakes=1)
        [record] = self.audit()
        self.assertEqual((record["kind"], record["param"], record["route"], record["peer"], record["request_path"],
                          record["action"], record["enforced"]),
                         ("handshake", "handshake.query.room", "app", "127.0.0.1", "/ws/echo", "block", True))
        self.assertIn("sqli", record["classes"])
        self.assertEqual(self.refusals[0]["status"], 403)
        self.assertIn("sqli detected", self.refusals[0]["reason"])
        yield self.assert_relays(bystander)

    @defer.inlineCallbacks
    def test_xss_in_cookie_refused_and_audited(self):
        yield self.assert_refused(403, headers={"Cookie": f"theme={XSS}"})
        self.assertEqual([(r["param"], r["classes"][0]) for r in self.audit()], [("handshake.cookie.theme", "xss")])

    @defer.inlineCallbacks
    def test_exclusion_silences_that_detector_on_that_parameter_only(self):
        """The exclusion lets XSS through in handshake.cookie.session; the same XSS in another cookie,
        and SQL injection in that one, are still refused."""
        proto = yield self.client(headers={"Cookie": f"session={XSS}"})
        yield self.assert_relays(proto)
        self.assertEqual(self.audit(), [])
        self.assertEqual(self.app.ws.requests[0].headers["cookie"], f"session={XSS}")
        yield self.assert_refused(403, headers={"Cookie": f"other={XSS}"}, dials=1, handshakes=1)
        yield self.assert_refused(403, headers={"Cookie": f"session={quote(SQLI)}"}, dials=1, handshakes=1)
        self.assertEqual([r["param"].partition("<")[0] for r in self.audit()],
                         ["handshake.cookie.other", "handshake.cookie.session"])

    @defer.inlineCallbacks
    def test_attack_in_custom_header_refused(self):
        """Headers the application reads (custom x-* ones here) are inspected; structural ones are not."""
        yield self.assert_refused(403, headers={"X-Display-Name": XSS})
        self.assertEqual(self.audit()[0]["param"], "handshake.header.x-display-name")

    def assert_refused(self, status, path="/ws/echo", dials=0, handshakes=0, **kwargs):
        return self._refused(status, path, dials, handshakes, kwargs)

    @defer.inlineCallbacks
    def _refused(self, status, path, dials, handshakes, kwargs):
        with self.assertRaises(support.ConnectionRefused) as e:
            yield self.client(path, **kwargs)
        self.assertIn(f" {status} ", e.exception.status_line)
        yield self.assert_not_dialled(dials, handshakes)


class DetectModeTests(HandshakeBase):
    route_extra = "mode = detect\n"

    @defer.inlineCallbacks
    def test_detect_mode_forwards_but_audits(self):
        proto = yield self.client("/ws/echo?room=" + quote(SQLI))
        yield self.assert_relays(proto)
        self.assertEqual(self.app.ws.requests[0].params, {"room": [SQLI]})
        [record] = self.audit()
        self.assertEqual((record["kind"], record["param"], record["action"], record["enforced"]),
                         ("handshake", "handshake.query.room", "detect", False))
        self.assertEqual(self.refusals, [])


class InspectHandshakeOffTests(HandshakeBase):
    route_extra = "inspect_handshake = no\n"

    @defer.inlineCallbacks
    def test_off_skips_the_detectors_but_not_the_rfc_checks(self):
        proto = yield self.client("/ws/echo?room=" + quote(SQLI))
        yield self.assert_relays(proto)
        self.assertEqual(self.audit(), [])
        status, _, _ = yield self.raw(upgrade_request(drop=("Sec-WebSocket-Key",)))
        self.assertEqual(status, 400)


class TrustedProxyTests(HandshakeBase):
    wsfw_extra = "[wsfw]\ntrusted_proxies = 127.0.0.1\n"

    @defer.inlineCallbacks
    def test_audit_names_the_forwarded_client(self):
        """Behind a trusted proxy the audit record and the log name the address it forwarded."""
        with self.assertRaises(support.ConnectionRefused):
            yield self.client("/ws/echo?q=" + quote(SQLI), headers={"X-Forwarded-For": "203.0.113.9"})
        self.assertEqual(self.audit()[0]["peer"], "203.0.113.9")
        self.assertEqual((self.refusals[0]["client"], self.refusals[0]["peer"]), ("203.0.113.9", "127.0.0.1"))
