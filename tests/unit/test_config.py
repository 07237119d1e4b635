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
