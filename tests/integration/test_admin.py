"""The admin listener over real sockets: probes, metrics that move with real traffic, events, headers.

wsfw runs in front of the loopback upstream app; traffic goes through its
public listener, and every assertion reads the admin listener over HTTP.
"""

from __future__ import annotations

import json
import os

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests import support

XSS = '{"type": "chat", "text": "<img src=x onerror=alert(document.cookie)>"}'
SQLI = '42["chat message","1\' UNION SELECT username, password FROM users--"]'


@defer.inlineCallbacks
def http(url: str, method: bytes = b"GET", headers: dict | None = None):
    """One request with a fresh connection: ``(code, headers, body)``."""
    response = yield Agent(reactor).request(method, url.encode(), Headers(headers or {}))
    body = yield readBody(response)
    return response.code, response.headers, body


def samples(text: str) -> dict:
    """Every sample of a Prometheus exposition: ``{(name, frozenset(labels)): value}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


class AdminBase(unittest.TestCase):
    timeout = 30
    extra = ""

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw = yield support.start_stack(self, extra=self.extra)

    @defer.inlineCallbacks
    def metrics(self) -> dict:
        code, headers, body = yield http(self.wsfw.admin_url("/metrics"))
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()])
        return samples(body.decode())

    @defer.inlineCallbacks
    def get_json(self, path: str):
        code, headers, body = yield http(self.wsfw.admin_url(path))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        return code, json.loads(body)

    @defer.inlineCallbacks
    def attack(self, payload: str = XSS, path: str = "/ws/echo"):
        proto = yield support.connect_for(self, self.wsfw.url(path))
        proto.sendMessage(payload.encode())
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1008)


class ProbeTests(AdminBase):
    @defer.inlineCallbacks
    def test_healthz_and_readyz(self):
        """/healthz answers 200; /readyz is 200 with every public listener bound and the config named."""
        code, _, body = yield http(self.wsfw.admin_url("/healthz"))
        self.assertEqual((code, body), (200, b"ok\n"))
        code, ready = yield self.get_json("/readyz")
        self.assertEqual(code, 200)
        self.assertEqual(ready, {"ready": True, "config": self.wsfw.path, "listeners": {"public": True},
                                 "accepting": True})

    @defer.inlineCallbacks
    def test_readyz_503_while_draining(self):
        """During shutdown the public listener is gone and connections drain: /readyz says 503, the admin
        listener still answers, and then it stops too."""
        proto = yield support.connect_for(self, self.wsfw.url("/ws/echo"))
        proto.transport.pauseProducing()  # the client stops reading: its close handshake takes a while
        self.wsfw.stopped = True
        stopping = self.wsfw.service.stopService()
        code, ready = yield self.get_json("/readyz")
        self.assertEqual(code, 503)
        self.assertEqual((ready["ready"], ready["accepting"], ready["listeners"]), (False, False, {"public": False}))
        proto.transport.resumeProducing()
        yield stopping
        os.unlink(self.wsfw.path)
        with self.assertRaises(Exception):
            yield http(self.wsfw.admin_url("/healthz"))


class MetricsTests(AdminBase):
    @defer.inlineCallbacks
    def test_message_and_connection_metrics_follow_traffic(self):
        """Messages, bytes, open connections, handshakes, inspection timings and upstream connect
        latency all move with real traffic through the public listener."""
        before = yield self.metrics()
        self.assertEqual(value(before, "wsfw_connections_open"), 0)
        proto = yield support.connect_for(self, self.wsfw.url("/ws/echo"))
        for i in range(5):
            proto.sendMessage(f"message {i}".encode())
            yield support.next_message(proto)
        during = yield self.metrics()
        self.assertEqual(value(during, "wsfw_connections_open"), 1)
        self.assertEqual(value(during, "wsfw_messages_total", direction="client", verdict="forward"), 5)
        self.assertEqual(value(during, "wsfw_messages_total", direction="upstream", verdict="forward"), 5)
        self.assertEqual(value(during, "wsfw_message_bytes_total", direction="client"), 5 * len(b"message 0"))
        self.assertEqual(value(during, "wsfw_handshakes_total", result="ok"), 1)
        self.assertEqual(value(during, "wsfw_inspection_seconds_count", route="app"), 10)
        self.assertGreater(value(during, "wsfw_inspection_seconds_sum", route="app"), 0)
        self.assertEqual(value(during, "wsfw_upstream_connect_seconds_count", route="app"), 1)
        proto.sendClose(1000)
        yield support.closed(proto)
        yield self.wsfw.drained()
        after = yield self.metrics()
        self.assertEqual(value(after, "wsfw_connections_open"), 0)
        # the ended connection's counts carry over into the totals
        self.assertEqual(value(after, "wsfw_messages_total", direction="client", verdict="forward"), 5)
        self.assertEqual(value(after, "wsfw_message_bytes_total", direction="upstream"), 5 * len(b"message 0"))

    @defer.inlineCallbacks
    def test_blocks_counted_by_class_rule_and_route(self):
        """A blocked attack counts once in wsfw_blocks_total with its class, deciding rule and route,
        and as a withheld client message; its rules show in wsfw_rule_matches_total."""
        yield self.attack(XSS)
        yield self.attack(SQLI, "/ws/socket.io/?EIO=4&transport=websocket")
        parsed = yield self.metrics()
        blocks = {dict(labels)["class"]: v for (name, labels), v in parsed.items() if name == "wsfw_blocks_total"}
        self.assertEqual(blocks, {"xss": 1, "sqli": 1})
        routes = {dict(labels)["route"] for (name, labels), v in parsed.items() if name == "wsfw_blocks_total"}
        self.assertEqual(routes, {"app"})
        rules = {dict(labels)["rule"] for (name, labels), v in parsed.items() if name == "wsfw_blocks_total"}
        self.assertTrue(all(r.startswith(("xss-", "sqli-")) for r in rules), rules)
        self.assertEqual(value(parsed, "wsfw_messages_total", direction="client", verdict="block"), 2)
        self.assertGreaterEqual(value(parsed, "wsfw_rule_matches_total", rule="xss-libinjection", **{"class": "xss"}), 1)
        self.assertEqual(self.app.ws.received, [])

    @defer.inlineCallbacks
    def test_refused_and_unreachable_upstreams(self):
        """An upstream refusal (401) and an unreachable upstream count as handshakes by status and as
        upstream connect failures by reason."""
        with self.assertRaises(support.ConnectionRefused):
            yield support.connect(self.wsfw.url("/ws/refuse"))
        yield self.wsfw.drained()
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_handshakes_total", result="401"), 1)
        self.assertEqual(value(parsed, "wsfw_upstream_connect_failures_total", reason="refused"), 1)
        yield self.app.stop()
        with self.assertRaises(support.ConnectionRefused):
            yield support.connect(self.wsfw.url("/ws/echo"))
        yield self.wsfw.drained()
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_handshakes_total", result="502"), 1)
        self.assertEqual(value(parsed, "wsfw_upstream_connect_failures_total", reason="unreachable"), 1)

    @defer.inlineCallbacks
    def test_http_responses_by_code(self):
        """Plain HTTP through the public listener counts by status: proxied 200s and wsfw's own 502."""
        code, _, _ = yield http(self.wsfw.url("/http/headers", "http"))
        self.assertEqual(code, 200)
        parsed = yield self.metrics()
        self.assertEqual(value(parsed, "wsfw_http_requests_total", code="200"), 1)

    @defer.inlineCallbacks
    def test_backpressure_pauses_counted(self):
        """A stalled upstream makes wsfw pause the sender: wsfw_backpressure_pauses_total{side="upstream"} rises."""
        proto = yield support.connect_for(self, self.wsfw.url("/ws/stall"))
        chunk = os.urandom(1 << 20)
        for _ in range(12):
            proto.sendMessage(chunk, True)
        for _ in range(100):
            yield task.deferLater(reactor, 0.05, lambda: None)
            parsed = yield self.metrics()
            if value(parsed, "wsfw_backpressure_pauses_total", side="upstream") >= 1:
                break
        self.assertGreaterEqual(value(parsed, "wsfw_backpressure_pauses_total", side="upstream"), 1)

    @defer.inlineCallbacks
    def test_private_registry_with_process_and_build_info(self):
        """The registry carries process and platform collectors and wsfw_build_info, and nothing of the
        global registry (which other code in this process may fill)."""
        from prometheus_client import REGISTRY, Counter

        stray = Counter("stray_global_total", "must never appear in wsfw's /metrics", registry=REGISTRY)
        self.addCleanup(REGISTRY.unregister, stray)
        parsed = yield self.metrics()
        names = {name for name, _ in parsed}
        self.assertIn("process_resident_memory_bytes", names)
        self.assertIn("python_info", names)
        self.assertNotIn("stray_global_total", names)
        build = [dict(labels) for (name, labels) in parsed if name == "wsfw_build_info"]
        self.assertEqual(build[0]["version"], __import__("wsfw").__version__)
        self.assertEqual(value(parsed, "wsfw_config_reloads_total"), 0)


class EventsTests(AdminBase):
    extra = "[wsfw]\nmode = block\n"

    @defer.inlineCallbacks
    def test_events_and_stats_after_a_block(self):
        """/api/events lists the block with its decoded parameter, rules, class and client; /api/stats
        totals and top lists reflect it; ?limit and ?since filter."""
        yield self.attack(XSS)
        yield self.attack(SQLI, "/ws/socket.io/?EIO=4&transport=websocket")
        code, body = yield self.get_json("/api/events")
        self.assertEqual(code, 200)
        newest, older = body["events"]
        self.assertEqual((newest["param"], newest["action"], newest["enforced"], newest["route"]),
                         ("socketio.args[0]", "block", True, "app"))
        self.assertIn("sqli", newest["classes"])
        self.assertTrue(newest["peer"].startswith("127.0.0.1:"))
        self.assertEqual((older["param"], older["framing"]), ("json.text", "json"))
        self.assertIn("<img src=x onerror", older["excerpt"])
        self.assertEqual(body["last_id"], newest["id"])
        _, limited = yield self.get_json("/api/events?limit=1")
        self.assertEqual([e["id"] for e in limited["events"]], [newest["id"]])
        _, since = yield self.get_json(f"/api/events?since={newest['id']}")
        self.assertEqual(since["events"], [])
        code, _, _ = yield http(self.wsfw.admin_url("/api/events?limit=many"))
        self.assertEqual(code, 400)
        _, stats = yield self.get_json("/api/stats")
        self.assertEqual(stats["totals"]["blocked"], 2)
        self.assertEqual(stats["totals"]["blocked_window"], 2)
        self.assertEqual(stats["top_clients"], [{"client": "127.0.0.1", "count": 2}])
        self.assertEqual(sorted(r["class"] for r in stats["top_rules"]), ["sqli", "xss"])
        self.assertEqual(stats["totals"]["handshakes_ok"], 2)
        self.assertEqual(stats["routes"], [{"name": "app", "path": "/", "host": None, "mode": "block"}])


class SmallRingTests(AdminBase):
    extra = "[wsfw]\nmode = detect\n"

    def setUp(self):
        return self._setup_small()

    @defer.inlineCallbacks
    def _setup_small(self):
        self.app, self.wsfw = yield support.start_stack(
            self, extra=self.extra, admin="endpoint = tcp:0:interface=127.0.0.1\nevents = 3")

    @defer.inlineCallbacks
    def test_ring_is_bounded_and_detect_mode_counts_detections(self):
        """With events = 3 only the newest three decisions are kept; detect mode counts detections,
        not blocks, and forwards the messages."""
        proto = yield support.connect_for(self, self.wsfw.url("/ws/echo"))
        for i in range(5):
            proto.sendMessage(f'{{"q": "{i}\' OR 1=1 -- "}}'.encode())
            yield support.next_message(proto)
        _, body = yield self.get_json("/api/events?limit=100")
        self.assertEqual(body["size"], 3)
        self.assertEqual([e["id"] for e in body["events"]], [5, 4, 3])
        self.assertTrue(all(e["action"] == "detect" and not e["enforced"] for e in body["events"]))
        parsed = yield self.metrics()
        self.assertFalse([1 for (name, _), v in parsed.items() if name == "wsfw_blocks_total" and v])
        detections = sum(v for (name, _), v in parsed.items() if name == "wsfw_detections_total")
        self.assertEqual(detections, 5)


class HeaderTests(AdminBase):
    @defer.inlineCallbacks
    def test_dashboard_assets_headers(self):
        """Dashboard, script, style sheet and icon have exact content types, a strict CSP and nosniff;
        the page loads its script and style from files (nothing inline)."""
        expected = {"/": b"text/html; charset=utf-8", "/static/dashboard.js": b"text/javascript; charset=utf-8",
                    "/static/dashboard.css": b"text/css; charset=utf-8", "/static/favicon.svg": b"image/svg+xml",
                    "/api/stats": b"application/json", "/healthz": b"text/plain; charset=utf-8"}
        for path, ctype in expected.items():
            code, headers, body = yield http(self.wsfw.admin_url(path))
            self.assertEqual(code, 200, path)
            self.assertEqual(headers.getRawHeaders(b"content-type"), [ctype], path)
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"], path)
            csp = headers.getRawHeaders(b"content-security-policy")[0]
            self.assertTrue(csp.startswith(b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                           b"img-src 'self'; connect-src 'self'"), csp)
            if path == "/":
                self.assertIn(b'<script src="/static/dashboard.js" defer></script>', body)
                self.assertNotIn(b"<script>", body)
                self.assertNotIn(b"style=", body)

    @defer.inlineCallbacks
    def test_read_only_and_rebinding_guard(self):
        """Anything but GET/HEAD is 405; a Host that is a DNS name (DNS rebinding) is 421; unknown paths 404;
        the admin paths are not on the public listener."""
        code, headers, _ = yield http(self.wsfw.admin_url("/metrics"), method=b"POST")
        self.assertEqual((code, headers.getRawHeaders(b"allow")), (405, [b"GET, HEAD"]))
        code, _, _ = yield http(self.wsfw.admin_url("/api/events"), headers={b"host": [b"attacker.example"]})
        self.assertEqual(code, 421)
        code, _, _ = yield http(self.wsfw.admin_url("/nope"))
        self.assertEqual(code, 404)
        code, _, body = yield http(self.wsfw.admin_url("/healthz"), method=b"HEAD")
        self.assertEqual((code, body), (200, b""))
        code, _, body = yield http(self.wsfw.url("/metrics", "http"))
        self.assertNotIn(b"wsfw_", body)  # proxied to the app (404 there), never wsfw's metrics
