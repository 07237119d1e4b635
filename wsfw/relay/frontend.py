"""The client hop: an Autobahn server protocol under twisted.web's ``WebSocketResource``.

The client's opening handshake is held open while the upstream is dialled:
``onConnect`` returns a Deferred that fires only when the upstream answered 101,
so the client gets the subprotocol the upstream chose, or the upstream's own
refusal status, or 502/504 when it could not be reached in time. The client's
socket is not read meanwhile, so nothing it sends can pile up in wsfw.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectingRequest, ConnectionDeny
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone

from wsfw import endpoints
from wsfw.config import normalise_host
from wsfw.forwarding import FORWARDING, HOP_BY_HOP, connection_tokens, forwarding_headers
from wsfw.guard import REFUSAL_TEXT, claim_parked
from wsfw.logs import logger
from wsfw.relay import CLIENT
from wsfw.relay.backend import BackendFactory
from wsfw.relay.hop import HopMixin
from wsfw.relay.machine import Relay
from wsfw.relay.options import server_options
from wsfw.relay.timers import PreciseTimer
from wsfw.relay.tracker import NO_OBSERVER

log = logger("wsfw.frontend")

#: Request headers Autobahn writes itself for the upstream hop (RFC 6455 4.1).
HANDSHAKE_HEADERS = frozenset({
    "host", "content-length", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-websocket-accept", "origin", "user-agent", "pragma", "cache-control",
})


def upstream_headers(headers: dict[str, str], peer_ip: str, secure: bool, settings) -> dict[str, str]:
    """End-to-end request headers of the client's handshake plus ``X-Forwarded-*``."""
    drop = HOP_BY_HOP | FORWARDING | HANDSHAKE_HEADERS | connection_tokens([headers.get("connection", "")])
    out = {name: value for name, value in headers.items() if name not in drop}
    out.update(forwarding_headers(peer_ip, secure, headers.get("host"), headers.get("x-forwarded-for"),
                                  headers.get("x-forwarded-proto"), settings))
    return out


class FrontendProtocol(HopMixin, WebSocketServerProtocol):
    side = CLIENT
    _handshake: Deferred | None = None
    _dial: Deferred | None = None
    _deadline = None
    _backend = None
    #: This connection's slot in the IClientGuard's counts (wsfw.guard), when it was admitted by one.
    ticket = None

    def connectionMade(self):
        # The Dispatch that admitted this request parked its ticket for exactly this call
        # (wsfw.guard.handing_over): take it before anything can fail.
        self.ticket = claim_parked()
        super().connectionMade()

    def connectionLost(self, reason=connectionDone):
        """Twisted calls this exactly once per connection, whatever ended it (refused by the
        upstream, 502/504, the client gone mid-handshake, a close, an abort, the shutdown drain):
        the one place the guard's slot is given back."""
        try:
            super().connectionLost(reason)
        finally:
            ticket, self.ticket = self.ticket, None
            if ticket is not None:
                ticket.release()

    def onConnect(self, request):
        factory = self.factory
        self.pause_reading()
        peer = self.transport.getPeer()
        peer_ip = getattr(peer, "host", str(peer))
        self.relay = Relay(route=factory.route.name, peer=f"{peer_ip}:{getattr(peer, 'port', '')}",
                           path=request.path, query=self.http_request_uri.partition("?")[2],
                           headers=tuple(request.headers.items()),
                           hook=factory.hook, settings=factory.config.settings,
                           timeouts=factory.config.timeouts, clock=factory.clock, tracker=factory.tracker,
                           log_connections=factory.config.log.connections, limits=factory.config.limits)
        self.relay.attach(CLIENT, self)
        if self.ticket is not None:
            self.ticket.bind(self.relay.conn_id)
            self.relay.ticket = self.ticket
        if factory.tracker is not None and not factory.tracker.accepting:
            self.relay._record(None, 503, "shutting down", "wsfw")
            raise ConnectionDeny(503, "shutting down")
        self._handshake = Deferred()
        self._deadline = factory.clock.callLater(factory.config.timeouts.connect, self._upstream_timeout)
        confirm = getattr(self.ticket, "confirm", None)
        if confirm is None:
            self._start_dial(request, peer_ip)
        else:
            # A fleet's guard (wsfw.cluster.guard) reserves the slot in Redis first: one round trip
            # within the upstream deadline, while the client's handshake is held anyway.
            confirm().addCallback(self._confirmed, request, peer_ip).addErrback(
                lambda f: log.failure("{conn} fleet admission failed", f, conn=self.relay.conn_id))
        return self._handshake

    def _start_dial(self, request, peer_ip: str) -> None:
        self._dial = self.factory.dial(self, request, peer_ip, self._client_secure())
        self._dial.addErrback(self._dial_failed)

    def _confirmed(self, refusal, request, peer_ip: str) -> None:
        if self._handshake is None or self._handshake.called or self.state == self.STATE_CLOSED:
            return  # the client left, or the deadline answered it, while the fleet decided
        if refusal is not None:
            self._deny(refusal.status, REFUSAL_TEXT.get(refusal.reason, "refused"))
            return
        self._start_dial(request, peer_ip)

    def _client_secure(self) -> bool:
        return hasattr(self.transport, "getPeerCertificate") or hasattr(
            getattr(self.transport, "transport", None), "getPeerCertificate")

    # -- outcomes of the upstream dial ----------------------------------------

    def upstream_open(self, backend, subprotocol, headers) -> None:
        self._cancel_deadline()
        self._backend = backend
        self.factory.observer.upstream_connected(self.relay, self.factory.clock.seconds() - self.relay.opened_at)
        self.relay.subprotocol = subprotocol
        waiting = self._handshake is not None and not self._handshake.called
        if waiting and self.state != self.STATE_CLOSED and not self.relay.finished:
            self._handshake.callback((subprotocol, headers))
        else:
            backend.abort()  # the client left (or was refused) while the upstream was answering

    def upstream_refused(self, status: int | None, reason: str) -> None:
        if status is not None and 400 <= status <= 599:
            self._deny(status, f"upstream refused the WebSocket upgrade ({status})", "refused")
        else:
            self._deny(502, f"upstream handshake failed: {reason}", "handshake")

    def _dial_failed(self, failure) -> None:
        if failure.check(error.TimeoutError):
            self._deny(504, "upstream connect timed out", "timeout")
        elif failure.check(error.DNSLookupError):
            self._deny(502, "upstream host name does not resolve", "dns")
        elif failure.check(error.ConnectingCancelledError):
            pass
        else:
            self._deny(502, f"upstream unreachable: {failure.getErrorMessage()}", "unreachable")

    def _upstream_timeout(self) -> None:
        self._deadline = None
        if self._dial is not None and not self._dial.called:
            self._dial.cancel()
        if self._backend is None:
            protocol = self._dial_protocol()
            if protocol is not None:
                protocol.abort()
        self._deny(504, f"upstream did not open within {self.factory.config.timeouts.connect:g}s", "timeout")

    def _dial_protocol(self):
        result = getattr(self._dial, "result", None)
        return result if hasattr(result, "abort") else None

    def _deny(self, status: int, reason: str, upstream_failure: str | None = None) -> None:
        """Refuse the client's handshake with ``status``; ``upstream_failure`` names why the dial failed."""
        self._cancel_deadline()
        if self._handshake is not None and not self._handshake.called:
            if upstream_failure is not None:
                self.factory.observer.upstream_failed(self.relay, upstream_failure)
            log.info("{conn} handshake denied {status}: {reason}", conn=self.relay.conn_id, status=status,
                     reason=reason, peer=self.relay.peer, route=self.relay.route, event="deny")
            self.relay._record(None, status, reason, "wsfw")
            self._handshake.errback(ConnectionDeny(status, reason))
            self.resume_reading()  # so the client's close (or TLS close_notify) is seen

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def close_connecting(self, code, reason) -> None:
        self._deny(503 if code == 1001 else 502, reason or "closing")

    # -- open and close -------------------------------------------------------

    def onOpen(self):
        backend = self._backend
        self.relay.start(self.transport, backend.transport)
        self.factory.observer.opened(self.relay)
        self._handshake = self._dial = None
        self.compact()
        backend.compact()

    def onClose(self, wasClean, code, reason):
        self._cancel_deadline()
        if self._dial is not None and not self._dial.called:
            self._dial.cancel()
        if self.relay is not None:
            if self._backend is None:
                protocol = self._dial_protocol()
                if protocol is not None and not self.relay.started:
                    protocol.abort()
            super().onClose(wasClean, code, reason)


class FrontendFactory(WebSocketServerFactory):
    """One per route: knows the route's upstream and how to dial it."""

    protocol = FrontendProtocol

    def __init__(self, config, route, hook, reactor, tracker=None):
        super().__init__(server="wsfw", externalPort=None)
        self.setProtocolOptions(**server_options(config))
        self._batched_timer = PreciseTimer(reactor)
        self.config = config
        self.route = route
        self.hook = hook
        self.clock = reactor
        self.reactor = reactor
        self.tracker = tracker
        self.observer = tracker.observer if tracker is not None else NO_OBSERVER
        self.wsfw_limits = config.limits
        self.backend = BackendFactory(config, route, reactor)
        tls = endpoints.client_tls_options(route.ws, route.tls) if route.ws.secure else None
        self.endpoint = endpoints.client_endpoint(reactor, route.ws, route.tls, config.timeouts.connect, tls)

    def dial(self, frontend: FrontendProtocol, request, peer_ip: str, secure: bool) -> Deferred:
        route = self.route
        uri = frontend.http_request_uri
        path, _, query = uri.partition("?")
        resource = route.upstream_path(path, route.ws) + (f"?{query}" if query else "")
        if route.preserve_host and "host" in request.headers:
            host = normalise_host(request.headers["host"])
            port = 443 if secure else 80
        else:
            host, port = route.ws.host, route.ws.port
        connecting = ConnectingRequest(
            host=host, port=port, resource=resource,
            headers=upstream_headers(request.headers, peer_ip, secure, self.config.settings),
            useragent=request.headers.get("user-agent", ""),
            origin=request.headers.get("origin"),
            protocols=request.protocols or None,
        )
        return self.endpoint.connect(self.backend.for_connection(frontend.relay, frontend, connecting))
