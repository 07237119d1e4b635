"""Handshake hardening as pure logic (wsfw.handshake): strict RFC 6455 validation, the route
allow-lists, the handshake's parameters, and Pipeline.inspect_handshake with the real detectors."""

from __future__ import annotations

import base64
import textwrap
from urllib.parse import quote

import pytest

from wsfw import config_ini, decoders, handshake
from wsfw.config import OriginPattern
from wsfw.hook import FORWARD
from wsfw.inspection.audit import Audit
from wsfw.inspection.pipeline import build_pipelines
from wsfw.policy.runtime import compile_expr, handshake_only

KEY = base64.b64encode(b"0123456789abcdef").decode()
SQLI = "1' UNION SELECT username, password FROM users--"
XSS = "<img src=x onerror=alert(document.cookie)>"
BASE = "[listen:a]\nendpoint = tcp:1\n[route:app]\nupstream = ws://127.0.0.1:1\n"


def head(method="GET", version="HTTP/1.1", path="/ws", query="", drop=(), **extra) -> handshake.Head:
    """A valid handshake head; ``drop`` removes default headers, keywords add (``x_team`` is ``x-team``;
    a list value repeats the header)."""
    headers = {"host": "chat.example.com", "upgrade": "websocket", "connection": "Upgrade",
               "sec-websocket-key": KEY, "sec-websocket-version": "13"}
    for name in drop:
        headers.pop(name)
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    pairs = []
    for name, value in headers.items():
        pairs.extend((name, v) for v in (value if isinstance(value, list) else [value]))
    return handshake.Head(method, version, path, query, tuple(pairs))


def route(text: str = ""):
    return config_ini.load("t.ini", BASE + textwrap.dedent(text)).routes[0]


# -- what is a handshake attempt -------------------------------------------------------------


@pytest.mark.parametrize("values,attempt", [
    ([b"websocket"], True), ([b"WebSocket"], True), ([b"h2c, websocket"], True), ([b"xwebsocketx"], True),
    (["websocket"], True), ([b"h2c"], False), ([], False),
])
def test_any_upgrade_naming_websocket_is_an_attempt(values, attempt):
    """Whatever the method or the other tokens, an Upgrade naming websocket must be a valid handshake."""
    assert handshake.is_attempt(values) is attempt


# -- strict RFC 6455 validation ----------------------------------------------------------------


def test_valid_handshakes_pass():
    """The minimal handshake, and the forms browsers and libraries send, are valid."""
    assert handshake.validate(head()) is None
    assert handshake.validate(head(connection="keep-alive, Upgrade", upgrade="WebSocket")) is None
    assert handshake.validate(head(content_length="0", origin="https://a.example")) is None


@pytest.mark.parametrize("h,status", [
    (head(method="POST"), 405),
    (head(method="PUT", drop=("sec-websocket-key",)), 405),
    (head(version="HTTP/1.0"), 400),
    (head(upgrade="websocket, h2c"), 400),
    (head(upgrade="xwebsocket"), 400),
    (head(connection="keep-alive"), 400),
    (head(drop=("connection",)), 400),
    (head(drop=("host",)), 400),
    (head(host=["a.example", "b.example"]), 400),
    (head(content_length="5"), 400),
    (head(transfer_encoding="chunked"), 400),
    (head(drop=("sec-websocket-key",)), 400),
    (head(sec_websocket_key=[KEY, KEY]), 400),
    (head(sec_websocket_key=base64.b64encode(b"15 bytes only!!").decode()), 400),
    (head(sec_websocket_key=base64.b64encode(b"seventeen bytes!!").decode()), 400),
    (head(sec_websocket_key="not base64 at all, 24 ch"), 400),
    (head(sec_websocket_key=base64.urlsafe_b64encode(b"\xfb" * 16).decode()), 400),
    (head(sec_websocket_version="8"), 426),
    (head(drop=("sec-websocket-version",)), 426),
    (head(sec_websocket_version="13, 8"), 426),
])
def test_invalid_handshakes_refused(h, status):
    """Each RFC 6455 requirement, broken alone, refuses the handshake with its status."""
    refusal = handshake.validate(h)
    assert refusal is not None and refusal.status == status, refusal
    assert refusal.reason and "\n" not in refusal.reason


def test_refusal_headers():
    """405 names the method allowed; 426 names the version wsfw speaks, with Upgrade (RFC 9110 15.5.22)."""
    assert handshake.validate(head(method="POST")).headers == (("Allow", "GET"),)
    assert dict(handshake.validate(head(sec_websocket_version="8")).headers) == {
        "Sec-WebSocket-Version": "13", "Upgrade": "websocket"}


def test_key_checked_before_version():
    """A request with neither key nor version is malformed (400), not merely an old draft (426)."""
    assert handshake.validate(head(drop=("sec-websocket-key", "sec-websocket-version"))).status == 400


def test_from_raw_reads_twisted_headers():
    """Head.from_raw lower-cases names, keeps one entry per header line, and reads UTF-8 (else Latin-1)."""
    h = handshake.Head.from_raw(b"GET", b"HTTP/1.1", b"/ws", b"a=1",
                                [(b"Host", [b"x"]), (b"Cookie", [b"a=1", "b=\u00e9".encode()]), (b"X-Raw", [b"\xe9"])])
    assert h.headers == (("host", "x"), ("cookie", "a=1"), ("cookie", "b=\u00e9"), ("x-raw", "\u00e9"))
    assert (h.method, h.version, h.path, h.query) == ("GET", "HTTP/1.1", "/ws", "a=1")


# -- origins and hosts -----------------------------------------------------------------------------


@pytest.mark.parametrize("origin,allowed", [
    ("https://chat.example.com", True),
    ("https://chat.example.com:443", True),
    ("HTTPS://Chat.Example.COM", True),
    ("https://chat.example.com:8443", False),
    ("http://chat.example.com", False),
    ("https://a.example.org", True),
    ("https://a.b.example.org", True),
    ("https://example.org", False),
    ("https://evilexample.org", False),
    ("https://example.org.evil.com", False),
    ("https://.example.org", False),
    ("https://a.example.org:8443", False),
    ("http://localhost:3000", True),
    ("http://localhost", False),
    ("null", False),
    ("https://chat.example.com/", False),
    ("https://user@chat.example.com", False),
    ("https://chat.example.com https://evil.com", False),
    ("", False),
])
def test_origin_allow_list(origin, allowed):
    """Exact origins (default ports normalised, other ports significant) and wildcard subdomains."""
    patterns = route("origins = https://chat.example.com, https://*.example.org http://localhost:3000\n").origins
    assert handshake.origin_allowed(patterns, origin) is allowed


def test_origin_patterns_parsed():
    """Entries are normalised at load: lower case, the default port filled in, the wildcard kept apart."""
    assert handshake.parse_origin_pattern("HTTPS://*.Example.com") == OriginPattern("https", "example.com", 443, True)
    assert handshake.parse_origin_pattern("http://[::1]:8080") == OriginPattern("http", "::1", 8080, False)
    assert str(handshake.parse_origin_pattern("https://a.example:443")) == "https://a.example"
    assert str(handshake.parse_origin_pattern("https://*.example.com:8443")) == "https://*.example.com:8443"
    for bad in ("chat.example.com", "https://chat.example.com/app", "https://*", "https://a.*.example.com",
                "https://*.127.0.0.1", "https://b\u00fccher.example", "https://x:99999"):
        with pytest.raises(ValueError):
            handshake.parse_origin_pattern(bad)


@pytest.mark.parametrize("host,allowed", [
    ("chat.example.com", True), ("CHAT.example.com:8080", True), ("a.b.example.org", True), ("example.org", False),
    ("evilexample.org", False), ("other.example.com", False), ("[::1]:80", True),
])
def test_host_allow_list(host, allowed):
    """Exact names and *.domain wildcards; the port is ignored."""
    assert handshake.host_allowed(route("hosts = chat.example.com *.example.org [::1]\n").hosts, host) is allowed


# -- the route's allow-lists together -------------------------------------------------------------


def test_screen_admits_when_no_list_is_set():
    assert handshake.screen(route(), head(origin="https://evil.example")) == handshake.Screening()


def test_screen_refuses_with_403():
    """Each list refuses what it does not admit with 403; the log detail names what failed."""
    r = route("""
        origins = https://chat.example.com
        hosts = chat.example.com
        require_headers = origin x-client
        require_cookies = session
        extensions = permessage-deflate
        subprotocols = v12.stomp mqtt
    """)
    good = dict(origin="https://chat.example.com", x_client="web", cookie="theme=dark; session=s3cr3t",
                sec_websocket_extensions="permessage-deflate; client_max_window_bits",
                sec_websocket_protocol="v12.stomp")
    assert handshake.screen(r, head(**good)) == handshake.Screening()
    cases = {
        "host": dict(host="evil.example"),
        "Origin 'https://evil.example'": dict(origin="https://evil.example"),
        "2 Origin headers": dict(origin=["https://chat.example.com", "https://evil.example"]),
        "header x-client": dict(x_client=" "),
        "cookie session": dict(cookie="theme=dark"),
        "extension 'x-webkit-deflate-frame'": dict(
            sec_websocket_extensions="permessage-deflate, x-webkit-deflate-frame"),
        "none is in subprotocols": dict(sec_websocket_protocol="evil, graphql-ws"),
    }
    for detail, change in cases.items():
        refusal = handshake.screen(r, head(**{**good, **change})).refusal
        assert refusal is not None and refusal.status == 403, detail
        assert detail in refusal.detail, (detail, refusal)
        assert "session" not in refusal.reason and "x-client" not in refusal.reason  # the client is not told
    no_origin = {k: v for k, v in good.items() if k != "origin"}
    assert "header origin" in handshake.screen(r, head(**no_origin)).refusal.detail


def test_missing_origin_passes_unless_required():
    """Non-browser clients send no Origin: admitted unless require_headers lists origin."""
    assert handshake.screen(route("origins = https://chat.example.com\n"), head()).refusal is None
    r = route("origins = https://chat.example.com\nrequire_headers = origin\n")
    assert handshake.screen(r, head()).refusal.status == 403


def test_subprotocol_offer_filtered():
    """Unlisted subprotocols are removed in the client's order; none offered is fine; exact names only."""
    r = route("subprotocols = v12.stomp mqtt\n")
    filtered = handshake.screen(r, head(sec_websocket_protocol="evil, mqtt, v12.stomp"))
    assert filtered == handshake.Screening(None, ("mqtt", "v12.stomp"))
    assert handshake.screen(r, head(sec_websocket_protocol=["mqtt", "v12.stomp"])).subprotocols is None  # unchanged
    assert handshake.screen(r, head()) == handshake.Screening()
    assert handshake.screen(r, head(sec_websocket_protocol="MQTT")).refusal.status == 403


def test_extensions_are_case_insensitive_names():
    r = route("extensions = permessage-deflate\n")
    assert handshake.screen(r, head(sec_websocket_extensions="Permessage-Deflate; server_no_context_takeover")) \
        == handshake.Screening()


# -- the handshake as parameters ------------------------------------------------------------------


def test_decode_names_parameters():
    """Path, each query argument, each cookie and the headers apps read; nested encodings followed."""
    prefs = quote(base64.b64encode(b'{"theme":"dark"}').decode())
    decoded = handshake.decode(head(path="/ws/room%201", query="room=lobby&a.b=1&%3Cscript%3E=x&empty=",
                                    cookie=f"session=abc; prefs={prefs}", user_agent="test-agent/1.0",
                                    referer="https://chat.example.com/", x_team="blue",
                                    authorization="Bearer t0k3n", accept_language="en", cache_control="no-cache",
                                    sec_websocket_protocol="mqtt", sec_fetch_mode="websocket"),
                               decoders.Limits())
    params = dict(decoded.params)
    assert decoded.format == "handshake" and decoded.truncated is None and decoded.error is None
    assert params["handshake.path"] == "/ws/room%201" and params["handshake.path<url>"] == "/ws/room 1"
    assert params["handshake.query.room"] == "lobby"
    assert params['handshake.query["a.b"]'] == "1" and params['handshake.query["a.b"]<key>'] == "a.b"
    assert params['handshake.query["<script>"]<key>'] == "<script>"
    assert "handshake.query.empty" not in params
    assert params["handshake.cookie.session"] == "abc"
    assert params["handshake.cookie.prefs<url><b64><json>.theme"] == "dark"
    assert (params["handshake.header.user-agent"], params["handshake.header.referer"],
            params["handshake.header.x-team"]) == ("test-agent/1.0", "/", "blue")
    assert not [p for p in params if p.startswith("handshake.header.") and p.split(".", 2)[2] in (
        "host", "connection", "upgrade", "cookie", "authorization", "accept-language", "cache-control",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-fetch-mode")]


@pytest.mark.parametrize("name,inspected", [
    ("user-agent", True), ("referer", True), ("origin", True), ("x-forwarded-for", True), ("x-api-version", True),
    ("host", False), ("connection", False), ("upgrade", False), ("sec-websocket-key", False),
    ("sec-websocket-extensions", False), ("accept", False), ("accept-encoding", False), ("cache-control", False),
    ("pragma", False), ("content-length", False), ("cookie", False), ("authorization", False),
])
def test_inspected_headers(name, inspected):
    assert handshake.inspected_header(name) is inspected


@pytest.mark.parametrize("name,value,inspected", [
    ("origin", "http://127.0.0.1:8080", None),
    ("origin", "https://chat.example.com", None),
    ("origin", "null", None),
    ("origin", "http://<script>alert(1)</script>", "http://<script>alert(1)</script>"),
    ("referer", "http://10.0.0.5/rooms?id=1", "/rooms?id=1"),
    ("referer", "https://a.example/?q=1' OR 1=1--", "/?q=1' OR 1=1--"),
    ("referer", "http://<svg onload=x>/", "http://<svg onload=x>/"),
    ("x-forwarded-for", "203.0.113.9, 10.0.0.2, [::1]:80, unknown", None),
    ("x-forwarded-for", "1' OR '1'='1", "1' OR '1'='1"),
    ("x-real-ip", "10.1.2.3", None),
    ("x-forwarded-host", "127.0.0.1:8080", None),
    ("x-forwarded-proto", "https", None),
    ("forwarded", 'for=192.0.2.60;proto=http;by="[2001:db8::17]"', None),
    ("forwarded", "for=<script>", "for=<script>"),
    ("user-agent", "curl/8.0", "curl/8.0"),
])
def test_address_headers_inspected_only_when_malformed(name, value, inspected):
    """A well-formed Origin, Referer authority or forwarding address cannot carry an injection, and
    the detectors would take its private address for SSRF: only what does not fit is inspected."""
    assert handshake.header_value(name, value) == inspected


def test_intranet_browser_handshake_not_blocked():
    """A browser on an intranet page (private addresses in Origin, Referer, X-Forwarded-For) passes."""
    stack = Stack()
    assert stack.inspect(origin="http://10.0.0.5:8080", referer="http://10.0.0.5:8080/chat", host="10.0.0.5:8080",
                         x_forwarded_for="127.0.0.1, 10.0.0.2") is FORWARD
    assert stack.events == []


def test_decode_is_bounded():
    """The decoders' limits bound a handshake as they bound a message."""
    query = "&".join(f"a{i}={'x' * 10}" for i in range(50))
    decoded = handshake.decode(head(query=query), decoders.Limits(max_params=10))
    assert len(decoded.params) == 10 and decoded.truncated == "params"


# -- which rules judge a handshake ---------------------------------------------------------------------


@pytest.mark.parametrize("when,applies", [
    ('client in [10.0.0.0/8]', True),
    ('not cookie:session exists and origin != "https://a.example"', True),
    ('header:x-team == "red" or query:debug exists or path prefix "/admin"', True),
    ('param:"handshake.query.*" contains "admin"', True),
    ('score >= 3', True),
    ('not param:"json.type" exists', False),
    ('subprotocol != "mqtt"', False),
    ('event == "chat message" and client in [10.0.0.0/8]', False),
    ('size > 100', False),
    ('framing == "json"', False),
])
def test_handshake_rules(when, applies):
    """Only conditions that mean something before any message exists judge a handshake."""
    assert handshake_only(compile_expr(when).tree) is applies


# -- Pipeline.inspect_handshake with the real detectors ----------------------------------------------------


class Stack:
    def __init__(self, extra: str = ""):
        self.config = config_ini.load("t.ini", BASE + textwrap.dedent(extra))
        self.audit = Audit(None)
        self.events = []
        self.audit.publisher.addObserver(self.events.append)
        self.pipeline = build_pipelines(self.config, self.audit)["app"]

    def inspect(self, **kw):
        return self.pipeline.inspect_handshake(peer="10.0.0.1:4321", client="203.0.113.9", head=head(**kw))


def test_attack_in_query_blocked_and_audited():
    """An SQL injection in a query argument blocks (1008 verdict: Dispatch answers 403), audited as a handshake."""
    stack = Stack()
    verdict = stack.inspect(path="/ws/chat", query="room=" + quote(SQLI))
    assert verdict.action == "close"
    [event] = stack.events
    assert (event["kind"], event["param"], event["peer"], event["route"], event["request_path"], event["framing"],
            event["enforced"], event["action"]) == ("handshake", "handshake.query.room", "203.0.113.9", "app",
                                                    "/ws/chat", "handshake", True, "block")
    assert "sqli" in event["classes"]


def test_benign_handshake_forwarded():
    stack = Stack()
    assert stack.inspect(query="room=lobby&token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                         cookie="session=8f14e45fceea167a5a36dedd4bea2543; theme=dark",
                         user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                    "Chrome/120.0.0.0 Safari/537.36",
                         origin="https://chat.example.com", referer="https://chat.example.com/rooms/1?x=1") is FORWARD
    assert stack.events == []


@pytest.mark.parametrize("mode,action", [("detect", "detect"), ("off", None)])
def test_modes(mode, action):
    """detect audits (enforced=false) and forwards; off skips the handshake as it skips messages."""
    stack = Stack(f"mode = {mode}\n")
    assert stack.inspect(cookie="session=" + XSS) is FORWARD
    assert [(e["action"], e["enforced"]) for e in stack.events] == ([(action, False)] if action else [])


def test_exclusion_silences_one_detector_on_one_handshake_parameter():
    """An exclude rule for handshake.cookie.session lets XSS through there, and only there, and only XSS."""
    stack = Stack("""
        [rule:session-cookie-xss]
        route = app
        action = exclude
        detector = xss
        param = handshake.cookie.session
    """)
    assert stack.inspect(cookie="session=" + XSS) is FORWARD
    assert stack.events == []
    assert stack.inspect(cookie="other=" + XSS).action == "close"
    assert stack.inspect(cookie="session=" + quote(SQLI)).action == "close"
    params = [e["param"].partition("<")[0] for e in stack.events]
    assert params == ["handshake.cookie.other", "handshake.cookie.session"]


def test_rules_and_model_at_the_handshake():
    """Handshake-only rules refuse the upgrade itself; message rules and the positive model do not run."""
    stack = Stack("""
        [rule:no-debug]
        route = app
        when = query:debug exists
        action = block
        [rule:typed-messages-only]
        route = app
        when = not param:"json.type" exists
        action = block
        [model:app]
        unknown = block
    """)
    assert stack.inspect(query="room=1") is FORWARD
    verdict = stack.inspect(query="debug=1")
    assert verdict.action == "close" and verdict.rule == "no-debug"
    assert [(e["kind"], e["rule_ids"]) for e in stack.events] == [("handshake", ["no-debug"])]
