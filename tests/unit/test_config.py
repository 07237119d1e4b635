"""Loading the ini file: valid configs, every error reported at once, route matching."""

from __future__ import annotations

import pytest

from wsfw import config_ini
from wsfw.errors import ConfigError

GOOD = """
[wsfw]
trusted_proxies = 10.0.0.0/8, 192.168.1.1
[listen:public]
endpoint = tcp:8080:interface=127.0.0.1
[route:chat]
host = chat.example.com
path = /socket.io/
upstream = ws://10.1.1.1:3000
[route:any]
upstream = wss://backend.internal/base/
[route:wild]
host = *.example.org
path = /
upstream = ws://127.0.0.1:9
[limits]
max_message_bytes = 1MiB
max_frame_bytes = 64KiB
compression = both
[timeouts]
connect = 250ms
open_handshake = 2s
idle = 5m
"""


def load(text: str):
    return config_ini.load("test.ini", text)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(text)
    return [str(p) for p in e.value.problems]


def test_good_config_values():
    """A valid file becomes typed, frozen values with units converted."""
    c = load(GOOD)
    assert [r.name for r in c.routes] == ["chat", "any", "wild"]
    assert c.limits.max_message_bytes == 1 << 20 and c.limits.max_frame_bytes == 64 << 10
    assert c.limits.compress_client and c.limits.compress_upstream
    assert (c.timeouts.connect, c.timeouts.open_handshake, c.timeouts.idle) == (0.25, 2.0, 300.0)
    any_route = c.routes[1]
    assert (any_route.ws.secure, any_route.ws.port, any_route.ws.path) == (True, 443, "/base/")
    assert any_route.http == any_route.ws
    assert c.settings.is_trusted_proxy("10.2.3.4") and not c.settings.is_trusted_proxy("11.0.0.1")
    with pytest.raises(AttributeError):
        c.limits.max_message_bytes = 5


def test_shipped_config_is_valid():
    """etc/wsfw.ini, as shipped, loads."""
    c = config_ini.load("etc/wsfw.ini")
    assert c.routes[0].ws.port == 8081


@pytest.mark.parametrize("host,path,expected", [
    ("chat.example.com", "/socket.io/?EIO=4", "chat"),
    ("CHAT.example.com:443", "/socket.io/x", "chat"),
    ("chat.example.com", "/other", "any"),
    ("a.example.org", "/x", "wild"),
    ("example.org", "/x", "any"),
    (None, "/", "any"),
])
def test_route_matching(host, path, expected):
    """Host-specific routes win, then the longest path prefix, as in nginx."""
    assert load(GOOD).match_route(host, path).name == expected


def test_upstream_path_mapping():
    """With a base path on the upstream the matched prefix is replaced; without, paths pass unchanged."""
    c = load(GOOD)
    chat, any_route = c.routes[0], c.routes[1]
    assert chat.upstream_path("/socket.io/x", chat.ws) == "/socket.io/x"
    assert any_route.upstream_path("/ws/chat", any_route.ws) == "/base/ws/chat"


def test_many_mistakes_reported_at_once():
    """Several mistakes across sections come back together, each with file, section and key."""
    found = problems("""
[wsfw]
on_inspection_eror = close
[listen:public]
endpoint = tcp:notaport
[route:a]
upstream = http://x
path = nope
[limits]
max_message_bytes = lots
max_frame_bytes = 2MiB
compression = maybe
[timeouts]
connect = 10
open_handshake = 5
[bogus]
x = 1
""")
    text = "\n".join(found)
    assert "test.ini: [wsfw] on_inspection_eror: unknown key (did you mean 'on_inspection_error'?)" in text
    assert "[listen:public] endpoint: invalid endpoint 'tcp:notaport'" in text
    assert "[route:a] upstream: 'http://x' must start with ws:// or wss://" in text
    assert "[route:a] path: 'nope' must start with '/'" in text
    assert "[limits] max_message_bytes: 'lots' is not a size" in text
    assert "[limits] compression: 'maybe' is not one of off, client, upstream, both" in text
    assert "[timeouts] open_handshake: (5s) must exceed connect (10s)" in text
    assert "test.ini: [bogus]: unknown section" in text
    assert len(found) >= 8


def test_missing_sections_and_required_keys():
    """No listener, no route, or a route without upstream are errors."""
    assert any("no [listen:NAME] section" in p for p in problems("[route:a]\nupstream = ws://x\n"))
    assert any("no [route:NAME] section" in p for p in problems("[listen:a]\nendpoint = tcp:1\n"))
    assert any("[route:a] upstream: is required" in p
               for p in problems("[listen:a]\nendpoint = tcp:1\n[route:a]\npath = /\n"))


def test_syntax_errors_are_problems():
    """Duplicate keys and keys outside a section are reported with the line, not a traceback."""
    assert any("line 3: [listen:a] endpoint is set twice" in p
               for p in problems("[listen:a]\nendpoint = tcp:1\nendpoint = tcp:2\n"))
    assert any("a key before any [section]" in p for p in problems("endpoint = tcp:1\n"))
    assert any("cannot read" in p for p in problems_for_path("/nonexistent/wsfw.ini"))


def problems_for_path(path):
    with pytest.raises(ConfigError) as e:
        config_ini.load(path)
    return [str(p) for p in e.value.problems]


def test_ssl_listener_checks(tmp_path):
    """ssl: endpoints read their PEM files at load and refuse sslmethod=."""
    base = "[route:a]\nupstream = ws://x\n[listen:tls]\nendpoint = "
    missing = problems(base + f"ssl:8443:privateKey={tmp_path}/nokey.pem\n")
    assert any("cannot read privateKey" in p for p in missing)
    method = problems(base + "ssl:8443:privateKey=k.pem:sslmethod=TLSv1_METHOD\n")
    assert any("sslmethod= is not allowed" in p for p in method)


def test_duplicate_routes_and_bad_names():
    """Two routes with the same host and path, or a section with no name, are errors."""
    found = problems("[listen:a]\nendpoint = tcp:1\n[route:a]\nupstream = ws://x\n[route:b]\nupstream = ws://y\n"
                     "[route:]\nupstream = ws://z\n")
    assert any("same host and path as [route:a]" in p for p in found)
    assert any("[route:]: needs a name" in p for p in found)


def test_wss_route_with_unreadable_ca_file():
    """A secure upstream's CA file is read at load."""
    found = problems("[listen:a]\nendpoint = tcp:1\n[route:a]\nupstream = wss://x\nca_file = /nonexistent.pem\n")
    assert any("[route:a] upstream: TLS settings unusable: cannot read ca_file" in p for p in found)


HANDSHAKE_BASE = "[listen:a]\nendpoint = tcp:1\n[route:a]\nupstream = ws://x\n"


def test_route_handshake_keys():
    """The handshake allow-lists load as normalised tuples; every one is off when empty."""
    from wsfw.config import OriginPattern

    route = load(HANDSHAKE_BASE + """origins = https://Chat.Example.com:443, https://*.example.org:8443
hosts = Chat.Example.com *.example.org [::1]
require_headers = Origin, X-Client
require_cookies = session
subprotocols = v12.stomp mqtt v12.stomp
extensions = Permessage-Deflate
inspect_handshake = no
""").routes[0]
    assert route.origins == (OriginPattern("https", "chat.example.com", 443), OriginPattern("https", "example.org", 8443, True))
    assert route.hosts == ("chat.example.com", "*.example.org", "::1")
    assert (route.require_headers, route.require_cookies) == (("origin", "x-client"), ("session",))
    assert (route.subprotocols, route.extensions) == (("v12.stomp", "mqtt"), ("permessage-deflate",))
    assert route.inspect_handshake is False
    default = load(HANDSHAKE_BASE).routes[0]
    assert (default.origins, default.hosts, default.require_headers, default.require_cookies, default.subprotocols,
            default.extensions, default.inspect_handshake) == ((), (), (), (), (), (), True)
    shipped = config_ini.load("etc/wsfw.ini").routes[0]
    assert (shipped.origins, shipped.subprotocols, shipped.inspect_handshake) == ((), (), True)


def test_route_handshake_key_errors():
    """Each bad entry is reported with file, section and key, all at once."""
    found = problems(HANDSHAKE_BASE + """origins = chat.example.com https://ok.example * null https://a.example/app
hosts = chat.example.com:443 bad_host!
require_headers = x-ok bad:header
require_cookies = a;b
subprotocols = v12.stomp "quoted"
extensions = x(y)
inspect_handshake = maybe
""")
    text = "\n".join(found)
    assert "test.ini: [route:a] origins: 'chat.example.com' is not an origin" in text
    assert "[route:a] origins: '*' is not an origin: leave origins empty" in text
    assert "[route:a] origins: 'null' is the Origin of sandboxed frames" in text
    assert "[route:a] origins: 'https://a.example/app' is not an origin" in text
    assert "[route:a] hosts: 'chat.example.com:443': give host names without a port" in text
    assert "[route:a] hosts: 'bad_host!' is not a host name" in text
    assert "[route:a] require_headers: 'bad:header' is not a header name" in text
    assert "[route:a] require_cookies: 'a;b' is not a cookie name" in text
    assert "[route:a] subprotocols: '\"quoted\"' is not a subprotocol name" in text
    assert "[route:a] extensions: 'x(y)' is not an extension name" in text
    assert "[route:a] inspect_handshake: 'maybe' is not yes or no" in text
    assert len(found) == 11


ABUSE_BASE = "[listen:a]\nendpoint = tcp:1\n[route:a]\nupstream = ws://x\n"


def test_abuse_limit_keys():
    """[limits] abuse limits and [timeouts] max_lifetime: typed, units converted; a rate's count is also its burst."""
    c = load(ABUSE_BASE + """[limits]
max_connections_total = 10000
max_connections_per_ip = 20
handshake_rate_per_ip = 600/m
message_rate = 100/s
byte_rate = 1MiB/s
on_rate_exceeded = drop
ban_after = 5
ban_window = 2m
ban_time = 1h
[timeouts]
max_lifetime = 12h
""")
    limits = c.limits
    assert (limits.max_connections_total, limits.max_connections_per_ip) == (10000, 20)
    assert (limits.handshake_rate_per_ip.count, limits.handshake_rate_per_ip.period) == (600, 60)
    assert limits.handshake_rate_per_ip.per_second == 10 and limits.handshake_rate_per_ip.burst == 600
    assert (limits.message_rate.per_second, limits.message_rate.text) == (100, "100/s")
    assert limits.byte_rate.per_second == limits.byte_rate.burst == 1 << 20
    assert (limits.on_rate_exceeded, limits.ban_after, limits.ban_window, limits.ban_time) == ("drop", 5, 120, 3600)
    assert c.timeouts.max_lifetime == 12 * 3600


@pytest.mark.parametrize("value", ["", "0", "off", "0/s"])
def test_abuse_limits_off(value):
    """Every abuse limit is off by default, and a rate is off when empty or 0."""
    default = load(ABUSE_BASE).limits
    assert (default.max_connections_total, default.max_connections_per_ip, default.handshake_rate_per_ip,
            default.message_rate, default.byte_rate, default.on_rate_exceeded, default.ban_after) == (
        0, 0, None, None, None, "close", 0)
    assert load(ABUSE_BASE).timeouts.max_lifetime == 0
    limits = load(ABUSE_BASE + f"[limits]\nhandshake_rate_per_ip = {value}\nmessage_rate = {value}\n"
                  f"byte_rate = {value}\n").limits
    assert (limits.handshake_rate_per_ip, limits.message_rate, limits.byte_rate) == (None, None, None)


def test_abuse_limit_errors():
    """Each bad value is reported with file, section and key, all at once."""
    found = problems(ABUSE_BASE + """[limits]
max_connections_total = -1
max_connections_per_ip = many
handshake_rate_per_ip = fast
message_rate = 10KiB/s
byte_rate = 1MiB per second
on_rate_exceeded = explode
ban_after = 3
ban_window = 0
ban_time = forever
[timeouts]
max_lifetime = 1 day
""")
    text = "\n".join(found)
    assert "test.ini: [limits] max_connections_total: must not be negative" in text
    assert "test.ini: [limits] max_connections_per_ip: 'many' is not a whole number" in text
    assert "test.ini: [limits] handshake_rate_per_ip: 'fast' is not a rate (e.g. 100/s, 600/m, 1000/h" in text
    assert "test.ini: [limits] message_rate: '10KiB/s' is not a rate (e.g. 100/s" in text
    assert "test.ini: [limits] byte_rate: '1MiB per second' is not a rate (e.g. 1MiB/s" in text
    assert "test.ini: [limits] on_rate_exceeded: 'explode' is not one of close, drop" in text
    assert "test.ini: [limits] ban_window: must be greater than 0 when ban_after is set" in text
    assert "test.ini: [limits] ban_time: 'forever' is not a duration" in text
    assert "test.ini: [timeouts] max_lifetime: '1 day' is not a duration" in text
    assert len(found) == 9


def test_cluster_section():
    """[cluster]: absent is a single node; redis takes a client endpoint string; the node name
    defaults to the host name; every other key needs redis (a typo there would fail silently)."""
    assert load(GOOD).cluster.enabled is False
    cluster = load(GOOD + "[cluster]\nredis = tcp:127.0.0.1:6379\nnode = edge-1\nprefix = shop:\ndb = 2\n").cluster
    assert (cluster.enabled, cluster.redis, cluster.node, cluster.prefix, cluster.db) == (
        True, "tcp:127.0.0.1:6379", "edge-1", "shop:", 2)
    assert load(GOOD + "[cluster]\nredis = unix:/run/redis/redis.sock\n").cluster.node
    found = problems(GOOD + "[cluster]\nredis = foo:1\nnode = a b\nevents_maxlen = 5\n")
    assert any("[cluster] redis: 'foo:1' is not a client endpoint" in p for p in found)
    assert any("[cluster] node: 'a b' must be" in p for p in found)
    assert any("[cluster] events_maxlen: must be at least 100" in p for p in found)
    assert any("[cluster] node: has no effect without redis" in p
               for p in problems(GOOD + "[cluster]\nnode = edge-1\n"))


def test_proxy_protocol_listener():
    """``haproxy:`` before a listener's endpoint: the socket is the rest, the PROXY header is expected."""
    config = load(GOOD.replace("endpoint = tcp:8080", "endpoint = haproxy:tcp:8080"))
    (listener,) = config.listeners
    assert (listener.endpoint, listener.proxy_protocol) == ("tcp:8080:interface=127.0.0.1", True)
    assert any("haproxy: wraps a tcp:" in p for p in problems(GOOD.replace("endpoint = tcp:8080",
                                                                           "endpoint = haproxy:pipe:8080")))
