"""Handshake hardening: strict RFC 6455 upgrade validation and each route's allow-lists.

A request that names ``websocket`` in an ``Upgrade`` header is a WebSocket
handshake attempt whatever its method, and it is either a valid RFC 6455 opening
handshake or refused by wsfw itself. Anything in between is how requests get
smuggled: a proxy that forwards a half-valid "upgrade" as plain HTTP, or that
switches to tunnelling on a status it never checked, carries whatever follows
blind. Autobahn validates the handshake too, but only after the request has
been re-serialised for it (with any body appended as if it were frame data),
and its refusals are not wsfw's to log or shape.

Then each route's allow-lists, checked before an upstream is dialled: Origin
(against cross-site WebSocket hijacking), Host, required headers and cookies,
subprotocols (unlisted offers are removed) and extensions.

Everything here is pure logic over a :class:`Head` (lower-cased header names,
one entry per header line), so it is tested without sockets;
``wsfw.http.site.Dispatch`` turns a refusal into the response, and
``Pipeline.inspect_handshake`` runs :func:`decode`'s parameters through the
detectors.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple
from urllib.parse import parse_qsl

from wsfw.config import OriginPattern, host_matches, is_ip_address, normalise_host
from wsfw.decoders import Decoded
from wsfw.decoders._walk import Ctx, Stop, key_path, may_nest, nested
from wsfw.forwarding import cookie_jar

__all__ = ["Head", "Refusal", "Screening", "TOKEN", "cookies", "decode", "header_value", "host_allowed",
           "inspected_header", "is_attempt", "origin_allowed", "parse_origin", "parse_origin_pattern", "screen",
           "validate"]

#: An RFC 9110 token: header names, subprotocols, extension names, cookie names.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: ``scheme://host[:port]``: an Origin as browsers send it (RFC 6454), or an allow-list entry.
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(\[[0-9A-Fa-f:.]+\]|[^/:\[\]?#@\s]+)(?::([0-9]{1,5}))?\Z")
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\Z")
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
#: What a valid Sec-WebSocket-Key decodes to (RFC 6455 4.1, item 7).
KEY_BYTES = 16


class Head(NamedTuple):
    """The parts of a request head the handshake checks read."""

    method: str  # "GET"
    version: str  # "HTTP/1.1"
    path: str  # the request path, still percent-encoded
    query: str  # the query string, without "?"
    headers: tuple[tuple[str, str], ...]  # (lower-cased name, value), one per header line, in order

    @classmethod
    def from_raw(cls, method: bytes, version: bytes, path: bytes, query: bytes, raw_headers) -> "Head":
        """From bytes as twisted.web holds them; ``raw_headers`` is ``Headers.getAllRawHeaders()``.
        Values are read as UTF-8 (what browsers send in cookies and query strings), else Latin-1."""
        headers = tuple((_text(name).lower(), _text(value)) for name, values in raw_headers for value in values)
        return cls(_text(method), _text(version), _text(path), _text(query), headers)

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower case), one per header line."""
        return [v for k, v in self.headers if k == name]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated elements of every ``name`` header, stripped, empty ones left out."""
        return [t.strip() for v in self.values(name) for t in v.split(",") if t.strip()]


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class Refusal(NamedTuple):
    """Why a handshake is refused: the status and short answer the client gets, what the log
    says (``detail`` may name the header, cookie or value; the client is not told), and any
    headers the status calls for (``Allow`` with 405, ``Sec-WebSocket-Version`` with 426)."""

    status: int
    reason: str
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = ()


# -- RFC 6455 -------------------------------------------------------------------


def is_attempt(upgrade_values) -> bool:
    """Whether a request is a WebSocket handshake attempt: an ``Upgrade`` header that names
    ``websocket`` anywhere, in any case. Deliberately broader than a valid handshake
    (``Upgrade: WebSocket/13, h2c``, ``xwebsocket``): everything that could be taken for one
    must then pass :func:`validate`, never go to the plain HTTP proxy."""
    return any("websocket" in (v.decode("latin-1") if isinstance(v, bytes) else v).lower() for v in upgrade_values)


def validate(head: Head) -> Refusal | None:
    """None for a valid RFC 6455 (section 4.2.1) opening handshake, else the first problem.

    The order decides which status a request with several problems gets: the method (405),
    the protocol version, the Upgrade and Connection tokens, Host, a body (400), the key
    (400), then the WebSocket version (426, so a client with an older draft learns which
    one to speak).
    """
    if head.method != "GET":
        return Refusal(405, "a WebSocket handshake must use GET", f"method {head.method}", (("Allow", "GET"),))
    if head.version != "HTTP/1.1":
        return Refusal(400, "a WebSocket handshake must use HTTP/1.1", f"protocol {head.version}")
    if [t.lower() for t in head.tokens("upgrade")] != ["websocket"]:
        return Refusal(400, "Upgrade must be websocket", f"Upgrade: {', '.join(head.values('upgrade'))}")
    if "upgrade" not in (t.lower() for t in head.tokens("connection")):
        return Refusal(400, "Connection must include upgrade",
                       f"Connection: {', '.join(head.values('connection')) or '(none)'}")
    hosts = head.values("host")
    if len(hosts) != 1 or not hosts[0].strip():
        return Refusal(400, "a WebSocket handshake needs one Host header", f"{len(hosts)} Host header(s)")
    lengths = head.values("content-length")
    if head.values("transfer-encoding") or any(v.strip() != "0" for v in lengths):
        # Autobahn would take a body for the first WebSocket frames: data smuggled past the handshake.
        return Refusal(400, "a WebSocket handshake has no body",
                       "Transfer-Encoding" if head.values("transfer-encoding") else f"Content-Length: {lengths[0]}")
    keys = head.values("sec-websocket-key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return Refusal(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
                       f"{len(keys)} Sec-WebSocket-Key header(s)" if len(keys) != 1 else "malformed Sec-WebSocket-Key")
    versions = head.values("sec-websocket-version")
    if [v.strip() for v in versions] != ["13"]:
        return Refusal(426, "Sec-WebSocket-Version must be 13",
                       f"Sec-WebSocket-Version: {', '.join(versions) or '(none)'}",
                       (("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")))
    return None


def _valid_key(key: str) -> bool:
    key = key.strip()
    if len(key) != 24:  # 16 bytes in base64 are always 24 characters, two of them '=' padding
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == KEY_BYTES
    except (binascii.Error, ValueError):
        return False


# -- the route's allow-lists ------------------------------------------------------


class Screening(NamedTuple):
    """What a route's allow-lists make of a valid handshake: refused, or admitted with
    ``subprotocols`` the offer to pass on (None: the client's offer, unchanged)."""

    refusal: Refusal | None = None
    subprotocols: tuple[str, ...] | None = None


ADMITTED = Screening()


def screen(route, head: Head) -> Screening:
    """Apply ``route``'s ``hosts``, ``origins``, ``require_headers``, ``require_cookies``,
    ``extensions`` and ``subprotocols`` to a handshake that passed :func:`validate`.

    Every refusal is 403: the request is well-formed and understood, this route does not
    admit it. ``hosts`` refuses with 403 rather than 421 (Misdirected Request) too: 421
    invites a client to retry on another connection, and a Host outside the list is a
    policy decision, not a misrouted connection.
    """
    if route.hosts and not host_allowed(route.hosts, head.values("host")[0]):
        return Screening(Refusal(403, "host not allowed", f"Host {head.values('host')[0]!r} is not in hosts"))
    origins = head.values("origin")
    if route.origins and origins:
        if len(origins) > 1:
            return Screening(Refusal(403, "origin not allowed", f"{len(origins)} Origin headers"))
        if not origin_allowed(route.origins, origins[0]):
            return Screening(Refusal(403, "origin not allowed", f"Origin {origins[0]!r} is not in origins"))
    for name in route.require_headers:
        if not any(v.strip() for v in head.values(name)):
            return Screening(Refusal(403, "a required header is missing", f"required header {name} is missing"))
    if route.require_cookies:
        jar = cookies(head)
        for name in route.require_cookies:
            if not any(jar.get(name, ())):
                return Screening(Refusal(403, "a required cookie is missing", f"required cookie {name} is missing"))
    if route.extensions:
        allowed = {e.lower() for e in route.extensions}
        for name in offered_extensions(head):
            if name.lower() not in allowed:
                return Screening(Refusal(403, "extension not allowed", f"extension {name!r} is not in extensions"))
    subprotocols = None
    if route.subprotocols:
        offered = offered_subprotocols(head)
        if offered:
            kept = tuple(p for p in offered if p in route.subprotocols)
            if not kept:
                return Screening(Refusal(403, "no offered subprotocol is allowed",
                                         f"subprotocols {', '.join(offered)!r}: none is in subprotocols"))
            if kept != tuple(offered):
                subprotocols = kept
    return Screening(None, subprotocols) if subprotocols is not None else ADMITTED


def host_allowed(patterns, host: str) -> bool:
    """``host`` (a Host header; its port is ignored) against exact names and ``*.domain`` wildcards.
    A wildcard admits any depth of subdomain, never the domain itself."""
    name = normalise_host(host)
    return any(host_matches(pattern, name) for pattern in patterns)


def parse_origin(text: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an Origin value, lower-cased, the scheme's default port filled
    in (so ``https://a.example:443`` is ``https://a.example``); None when it is not one
    (``null``, a path, credentials, a list)."""
    m = _ORIGIN.match(text.strip())
    if m is None:
        return None
    scheme, host, port = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if host.startswith("["):
        host = host[1:-1]
    elif not host.isascii():
        return None  # browsers send IDNs in their A-label (xn--) form
    number = int(port) if port is not None else _DEFAULT_PORTS.get(scheme)
    if number is not None and not 0 < number < 65536:
        return None
    return scheme, host.rstrip("."), number


def parse_origin_pattern(text: str) -> OriginPattern:
    """An ``origins =`` entry: ``https://chat.example.com[:port]`` or ``https://*.example.com[:port]``.
    Raises ValueError with what is wrong (for the config loader)."""
    wildcard = False
    body = text
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)\*\.(.*)\Z", text)
    if m is not None:
        wildcard, body = True, m.group(1) + m.group(2)
    if not body.isascii():
        raise ValueError(f"{text!r}: write internationalised host names in their xn-- form, as browsers send them")
    parsed = parse_origin(body)
    if parsed is None or "*" in body:
        raise ValueError(f"{text!r} is not an origin: give scheme://host[:port] (no path), with *. before the "
                         "host for its subdomains, e.g. https://chat.example.com or https://*.example.com")
    scheme, host, port = parsed
    is_ip = is_ip_address(host)
    if not (_HOST_NAME.match(host) or is_ip):
        raise ValueError(f"{text!r}: {host!r} is not a host name or IP address")
    if wildcard and is_ip:
        raise ValueError(f"{text!r}: a wildcard needs a domain name, not an IP address")
    return OriginPattern(scheme=scheme, host=host, port=port, wildcard=wildcard)


def origin_allowed(patterns, origin: str) -> bool:
    """Whether one Origin header value is on the allow-list: scheme and port equal (default
    ports normalised), the host equal or, for a wildcard, a subdomain of it at any depth
    (``https://*.example.com`` admits ``https://a.b.example.com``, not ``https://example.com``
    nor ``https://evilexample.com``). ``null`` and malformed values never are."""
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    scheme, host, port = parsed
    for p in patterns:
        if p.scheme != scheme or p.port != port:
            continue
        if p.wildcard:
            if host.endswith("." + p.host) and len(host) > len(p.host) + 1 and not host.startswith("."):
                return True
        elif host == p.host:
            return True
    return False


def cookies(head: Head) -> dict[str, list[str]]:
    """Cookie name -> values, from every ``Cookie`` header (``wsfw.forwarding.cookie_jar``)."""
    return cookie_jar(head.values("cookie"))


def offered_subprotocols(head: Head) -> list[str]:
    """The client's ``Sec-WebSocket-Protocol`` offers, in its order of preference."""
    return head.tokens("sec-websocket-protocol")


def offered_extensions(head: Head) -> list[str]:
    """The extension names of ``Sec-WebSocket-Extensions`` (``permessage-deflate; client_max_window_bits``
    is ``permessage-deflate``), in order."""
    return [t.split(";", 1)[0].strip() for t in head.tokens("sec-websocket-extensions") if t.split(";", 1)[0].strip()]


# -- the handshake as parameters for the detectors ----------------------------------------

#: Headers that are not inspected: protocol structure that wsfw or Autobahn validate (host,
#: connection, upgrade, content-length, sec-websocket-*), browser-generated metadata that
#: applications do not read as data (accept*, cache-control, pragma, sec-fetch-*, sec-ch-*),
#: cookies (inspected one by one as handshake.cookie.NAME), and credentials: a bearer token
#: is random text the detectors can only misread, and an audit excerpt must never carry one.
STRUCTURAL_HEADERS = frozenset({
    "host", "connection", "upgrade", "content-length", "transfer-encoding", "te", "trailer", "keep-alive",
    "expect", "cache-control", "pragma", "cookie", "authorization", "proxy-authorization", "content-type",
    "priority", "dnt", "upgrade-insecure-requests",
})
STRUCTURAL_PREFIXES = ("sec-websocket-", "accept", "sec-fetch-", "sec-ch-", "if-")


def inspected_header(name: str) -> bool:
    """Whether the value of header ``name`` (lower case) goes through the detectors: what an attacker
    sets and applications read (user-agent, referer, origin, x-forwarded-for, every custom
    header such as x-*), not :data:`STRUCTURAL_HEADERS` or :data:`STRUCTURAL_PREFIXES`."""
    return name not in STRUCTURAL_HEADERS and not name.startswith(STRUCTURAL_PREFIXES)


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])"
_AUTHORITY = rf"[A-Za-z][A-Za-z0-9+.-]*://{_HOST}(?::[0-9]{{1,5}})?"
_WELL_FORMED = {
    "origin": re.compile(rf"(?:{_AUTHORITY}|null)\Z"),
    "x-forwarded-host": re.compile(rf"{_HOST}(?::[0-9]{{1,5}})?(?:\s*,\s*{_HOST}(?::[0-9]{{1,5}})?)*\Z"),
    "x-forwarded-proto": re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(?:\s*,\s*[A-Za-z][A-Za-z0-9+.-]*)*\Z"),
    "x-forwarded-port": re.compile(r"[0-9]{1,5}(?:\s*,\s*[0-9]{1,5})*\Z"),
    # RFC 7239: for=, by=, host=, proto= pairs whose values are addresses, names or tokens.
    "forwarded": re.compile(r'(?:\s*[A-Za-z]+=(?:"[A-Za-z0-9._:\[\]-]*"|[A-Za-z0-9._:\[\]-]+)\s*[;,]?)+\Z'),
}
_ADDRESS_LISTS = frozenset(("x-forwarded-for", "x-real-ip", "x-client-ip"))
_REFERER = re.compile(rf"{_AUTHORITY}(?=[/?]|\Z)")


def header_value(name: str, value: str) -> str | None:
    """What of header ``name``'s value the detectors see, or None for nothing.

    Headers whose grammar is an address are inspected only when the value does not fit that
    grammar: a well-formed ``Origin`` (``scheme://host[:port]``), address list
    (``X-Forwarded-For``, ``X-Real-IP``: IP addresses) or ``X-Forwarded-Host`` /
    ``-Proto`` / ``-Port`` / ``Forwarded`` value has no room for an injection, and the
    detectors would read its loopback or private address as server-side request forgery
    (``http://10.0.0.5`` is every intranet page's Origin). Of a ``Referer`` with a
    well-formed ``scheme://host[:port]``, only the path and query that follow are inspected,
    for the same reason. A malformed value is inspected whole.
    """
    text = value.strip()
    pattern = _WELL_FORMED.get(name)
    if pattern is not None:
        return None if pattern.match(text) else value
    if name in _ADDRESS_LISTS:
        return None if all(_is_address(part.strip()) for part in text.split(",")) else value
    if name == "referer":
        m = _REFERER.match(text)
        return text[m.end():] if m is not None else value
    return value


def _is_address(text: str) -> bool:
    """An IP address as proxies write it: bare, ``v4:port``, ``[v6]`` or ``[v6]:port``; or ``unknown``."""
    if text == "unknown":
        return True
    if text.startswith("["):
        text, _, port = text[1:].partition("]")
        if port and not re.fullmatch(r":[0-9]{1,5}", port):
            return False
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not port.isdigit():
            return False
    return is_ip_address(text)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_UNPLAIN = frozenset(("constructor", "prototype"))


def _member(ctx: Ctx, base: str, name: str) -> str:
    """``base.name`` for a plain name (letters, digits, ``-``, ``_``), else ``base["name"]`` with the
    name emitted as a parameter of its own (``<key>``), as the JSON walker does: a query
    argument or cookie *named* ``<script>`` or ``__proto__`` is scanned too."""
    if _PLAIN_NAME.match(name) and name not in _UNPLAIN:
        return f"{base}.{name}"
    path = key_path(base, name)
    ctx.add(path + "<key>", name)
    return path


def _add(ctx: Ctx, path: str, value: str) -> None:
    if not value:
        return
    ctx.add(path, value)
    if ctx.max_depth > 0 and len(value) > 2 and may_nest(value):
        nested(ctx, value, path, 0)  # percent-, entity-, \\u-, base64-encoded and JSON values


def decode(head: Head, limits) -> Decoded:
    """The handshake as named parameters, bounded by the decoders' ``limits``:

    - ``handshake.path``: the request path (its percent-decoding at ``handshake.path<url>``);
    - ``handshake.query.NAME``: each query argument (``handshake.query["a.b"]`` for other names);
    - ``handshake.cookie.NAME``: each cookie;
    - ``handshake.header.NAME``: each header that :func:`inspected_header` admits, as much of its
      value as :func:`header_value` leaves (a Referer's path and query; nothing of a
      well-formed Origin or X-Forwarded-For).

    Each value is followed through nested encodings like a message's strings
    (``handshake.cookie.prefs<b64><json>.theme``), so an exclusion written for
    ``handshake.cookie.session`` covers its decodings too.
    """
    ctx = Ctx(limits)
    try:
        _add(ctx, "handshake.path", head.path)
        for name, value in parse_qsl(head.query, keep_blank_values=True):
            _add(ctx, _member(ctx, "handshake.query", name), value)
        for name, values in cookies(head).items():
            path = _member(ctx, "handshake.cookie", name)
            for value in values:
                _add(ctx, path, value)
        for name, value in head.headers:
            if inspected_header(name):
                inspected = header_value(name, value)
                if inspected:
                    _add(ctx, _member(ctx, "handshake.header", name), inspected)
    except Stop:
        pass
    return Decoded("handshake", None, tuple(ctx.params), ctx.truncated, None)
