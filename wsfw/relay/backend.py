"""The upstream hop: an Autobahn client dialled once per client connection.

It presents the client's path, query, subprotocol offers and end-to-end
headers to the upstream, and reports the outcome of its handshake back to the
frontend, which is still holding the client's handshake open.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

from wsfw.relay import UPSTREAM
from wsfw.relay.hop import HopMixin
from wsfw.relay.options import client_options
from wsfw.relay.timers import PreciseTimer


class BackendProtocol(HopMixin, WebSocketClientProtocol):
    side = UPSTREAM
    frontend = None
    connecting_request = None
    _response = None

    def onConnecting(self, transport_details):
        if self.relay.finished:  # the client left while we were dialling
            self.dropConnection(abort=True)
        return self.connecting_request

    def onConnect(self, response):
        self._response = response

    def onOpen(self):
        self.relay.attach(UPSTREAM, self)
        headers = {}
        set_cookie = self._response.headers.get("set-cookie") if self._response else None
        if set_cookie:
            headers["Set-Cookie"] = set_cookie
        self.frontend.upstream_open(self, self._response.protocol if self._response else None, headers)

    def failHandshake(self, reason):
        status = _status(getattr(self, "http_status_line", None))
        self.frontend.upstream_refused(status, reason)
        return super().failHandshake(reason)

    def onClose(self, wasClean, code, reason):
        if self.relay.ends.get(UPSTREAM) is None:
            # never opened: the TCP or TLS or WebSocket handshake with the upstream failed
            self.frontend.upstream_refused(None, reason or "upstream closed during handshake")
            return
        super().onClose(wasClean, code, reason)


def _status(status_line) -> int | None:
    """The HTTP status of an upstream's non-101 answer, if it was a well-formed one."""
    if not status_line:
        return None
    parts = status_line.split(" ", 2)
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


class BackendFactory(WebSocketClientFactory):
    """One per route: holds the upstream hop's options; each dial uses a :meth:`for_connection` view."""

    protocol = BackendProtocol
    noisy = False

    def __init__(self, config, route, reactor):
        super().__init__(url=route.upstream_url.split("?")[0], useragent="")
        self.setProtocolOptions(**client_options(config))
        self._batched_timer = PreciseTimer(reactor)
        self.wsfw_limits = config.limits

    def for_connection(self, relay, frontend, connecting_request) -> "DialFactory":
        return DialFactory(self, relay, frontend, connecting_request)


class DialFactory:
    """One dial's face of the route's :class:`BackendFactory`.

    Autobahn checks the subprotocol the upstream chose against
    ``factory.protocols``, which differ per client, so each dial needs a
    factory of its own; its protocol keeps it for the connection's life. A copy
    of the route's factory (a 38-entry ``__dict__``, 1.6 KB) was most of that
    cost per idle connection; this holds the five per-dial values in slots and
    reads every option from the shared factory.
    """

    __slots__ = ("shared", "protocols", "relay", "frontend", "connecting_request", "wsfw_limits")
    #: Autobahn reads it for every frame; ``__getattr__`` would be a Python call each time.
    isServer = False

    def __init__(self, shared: BackendFactory, relay, frontend, connecting_request):
        self.shared = shared
        self.wsfw_limits = shared.wsfw_limits  # the hop's caps, read for every frame
        self.protocols = list(connecting_request.protocols or [])
        self.relay = relay
        self.frontend = frontend
        self.connecting_request = connecting_request

    def __getattr__(self, name):
        return getattr(self.shared, name)

    def buildProtocol(self, addr):
        protocol = self.shared.protocol()
        protocol.factory = self
        protocol.relay = self.relay
        protocol.frontend = self.frontend
        protocol.connecting_request = self.connecting_request
        return protocol


