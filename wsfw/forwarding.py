"""Which request headers cross the proxy, and the ``X-Forwarded-*`` set wsfw adds.

Shared by the WebSocket handshake and the HTTP passthrough so both hops
present the client the same way to the upstream app.
"""

from __future__ import annotations

#: Hop-by-hop headers (RFC 9110 7.6.1) plus the ones wsfw rebuilds itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection",
    "proxy-authorization", "proxy-authenticate", "expect",
})
FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})


def connection_tokens(values) -> set[str]:
    """Header names listed in ``Connection``, which are hop-by-hop too."""
    tokens = set()
    for value in values or ():
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def forwarding_headers(peer_ip: str, secure: bool, host: str | None, prior_for: str | None,
                       prior_proto: str | None, settings) -> list[tuple[str, str]]:
    """``X-Forwarded-For/-Proto/-Host`` for a request from ``peer_ip``.

    Incoming values are kept (and extended) only from a ``trusted_proxies``
    address; from anyone else they would let a client forge its address.
    """
    trusted = settings.is_trusted_proxy(peer_ip)
    xff = f"{prior_for}, {peer_ip}" if (trusted and prior_for) else peer_ip
    proto = prior_proto if (trusted and prior_proto) else ("https" if secure else "http")
    out = [("X-Forwarded-For", xff), ("X-Forwarded-Proto", proto)]
    if host:
        out.append(("X-Forwarded-Host", host))
    return out


def client_address(peer_ip: str, headers, settings) -> str:
    """The client's address for policy decisions: the TCP peer, unless the peer is one of
    ``trusted_proxies``; then the nearest address in ``X-Forwarded-For`` (else in
    ``Forwarded: for=``) that is not a trusted proxy itself, read from the right, as nginx's
    ``real_ip_recursive`` does. ``headers`` are (lower-cased name, value) pairs.
    """
    if not settings.trusted_proxies or not settings.is_trusted_proxy(peer_ip):
        return peer_ip
    chain = []
    for name, value in headers:
        if name == "x-forwarded-for":
            chain.extend(part.strip() for part in value.split(",") if part.strip())
    if not chain:
        for name, value in headers:
            if name == "forwarded":
                chain.extend(_forwarded_for(value))
    for address in reversed(chain):
        address = _bare_address(address)
        if not settings.is_trusted_proxy(address):
            return address
    return _bare_address(chain[0]) if chain else peer_ip


def request_client_address(request, settings) -> str:
    """:func:`client_address` of a twisted.web request: its peer, or the client a trusted proxy names.

    Only the two forwarding headers are read, and only from a trusted peer, so
    the common case (no ``trusted_proxies``) costs one attribute lookup.
    """
    peer = request.getClientAddress()
    peer_ip = getattr(peer, "host", None) or str(peer)
    if not settings.trusted_proxies:
        return peer_ip
    headers = [(name.decode("ascii"), value.decode("latin-1")) for name in (b"x-forwarded-for", b"forwarded")
               for value in request.requestHeaders.getRawHeaders(name, ())]
    return client_address(peer_ip, headers, settings)


def cookie_jar(values) -> dict[str, list[str]]:
    """Cookie name -> values, from the values of every ``Cookie`` header (RFC 6265 5.4:
    ``name=value; ...``; quotes around a value dropped). For the handshake's allow-lists and
    detectors and for the rules' ``cookie:`` field alike."""
    jar: dict[str, list[str]] = {}
    for value in values:
        for pair in value.split(";"):
            name, eq, val = pair.strip().partition("=")
            if eq and name.strip():
                jar.setdefault(name.strip(), []).append(val.strip().strip('"'))
    return jar


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` nodes of an RFC 7239 ``Forwarded`` header, in order."""
    out = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, node = pair.strip().partition("=")
            if key.strip().lower() == "for" and node:
                out.append(node.strip().strip('"'))
    return out


def _bare_address(node: str) -> str:
    """``[2001:db8::1]:443`` -> ``2001:db8::1``; ``192.0.2.1:80`` -> ``192.0.2.1``."""
    if node.startswith("["):
        return node[1:node.find("]")] if "]" in node else node[1:]
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node
