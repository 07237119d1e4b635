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
