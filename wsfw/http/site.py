"""The public ``Site``: a head deadline per request, a body cap, admission, and route dispatch.

Admission comes first: the ``IClientGuard`` (``wsfw.guard``) refuses a banned
address anything, and a WebSocket upgrade over the connection caps or the
handshake rate, before a route is matched, a body inspected or an upstream
dialled.

Any request whose ``Upgrade`` header names websocket, whatever its method, is a
WebSocket handshake attempt: it is a valid RFC 6455 handshake that passes the
route's allow-lists and detectors (``wsfw.handshake``), and only then reaches
Autobahn's ``WebSocketResource``, or wsfw refuses it itself. Everything else is
proxied as HTTP on the same route. Nothing is ever tunnelled blind.
"""

from __future__ import annotations

from twisted.web import http, resource, server

from wsfw import handshake
from wsfw.config import Config
from wsfw.forwarding import request_client_address
from wsfw.guard import REFUSAL_TEXT, handing_over
from wsfw.http.responses import plain
from wsfw.inspection.audit import escape
from wsfw.logs import logger

log = logger("wsfw.http")


class Channel(http.HTTPChannel):
    """``HTTPChannel`` with an absolute deadline for each request head.

    twisted.web's ``timeOut`` is an idle timer that every byte resets, so a
    client dribbling one header byte at a time (slowloris) keeps a socket
    forever. This deadline does not move.
    """

    _head_call = None

    def connectionMade(self):
        super().connectionMade()
        self._arm_head_deadline()

    def _arm_head_deadline(self):
        self._head_call = self.site.reactor.callLater(self.site.head_timeout, self._head_expired)

    def _cancel_head_deadline(self):
        if self._head_call is not None and self._head_call.active():
            self._head_call.cancel()
        self._head_call = None

    def _head_expired(self):
        self._head_call = None
        peer = self.transport.getPeer()
        log.info("request head not received within {t}s from {peer}: closing", t=self.site.head_timeout,
                 peer=getattr(peer, "host", str(peer)), event="head_timeout")
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.site.on_response(408)
        self.transport.loseConnection()

    def allHeadersReceived(self):
        self._cancel_head_deadline()
        super().allHeadersReceived()

    def requestDone(self, request):
        super().requestDone(request)
        if self.persistent and self.transport is not None and not self.transport.disconnecting:
            self._arm_head_deadline()

    def connectionLost(self, reason):
        self._cancel_head_deadline()
        super().connectionLost(reason)


class CappedRequest(server.Request):
    """A ``Request`` that refuses bodies over ``max_http_body_bytes`` with 413.

    twisted.web has no body limit of its own: it would spool any size to a
    temporary file before the resource ever sees it.
    """

    _rejected = False
    _received = 0

    def gotLength(self, length):
        cap = self.channel.site.max_body
        if length is not None and length > cap:
            self.requestHeaders.removeHeader(b"expect")  # no 100 Continue for a body we refuse
            self._reject()
        super().gotLength(None if self._rejected else length)

    def handleContentChunk(self, data):
        if self._rejected:
            return
        self._received += len(data)
        if self._received > self.channel.site.max_body:
            self._reject()
            return
        super().handleContentChunk(data)

    def _reject(self):
        self._rejected = True
        log.info("request body over {cap} bytes: 413", cap=self.channel.site.max_body, event="body_too_large")
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n"
                        b"Connection: close\r\n\r\nrequest body exceeds the cap\n")
        transport.loseConnection()
        self.channel.site.on_response(413)

    def process(self):
        if not self._rejected:
            super().process()


def is_upgrade(request) -> bool:
    """Whether a request is a WebSocket handshake attempt: any method, with an ``Upgrade`` header
    that names websocket (``wsfw.handshake.is_attempt``). Such a request is a valid handshake or
    refused by wsfw itself (:func:`upgrade`): it never goes to the plain HTTP proxy."""
    return handshake.is_attempt(request.requestHeaders.getRawHeaders(b"upgrade", ()))


def upgrade(request, generation, route, client: str):
    """The upgrade branch of ``Dispatch``: a handshake attempt on ``route``, checked in order by
    strict RFC 6455 validation (``wsfw.handshake.validate``), the route's allow-lists
    (``wsfw.handshake.screen``) and, with ``inspect_handshake``, the route's detectors
    (``Pipeline.inspect_handshake``). A refusal is answered here and the connection closed
    after it, so nothing reaches Autobahn or the upstream; an admitted handshake goes to the
    route's WebSocket resource with the subprotocol offer the allow-list left (Autobahn
    re-reads the request's headers), which dials the upstream. ``client`` is the request's
    client address (``request_client_address``), as the Dispatch admitted it."""
    query = request.uri.partition(b"?")[2]
    head = handshake.Head.from_raw(request.method, request.clientproto, request.path, query,
                                   request.requestHeaders.getAllRawHeaders())
    refusal = handshake.validate(head)
    if refusal is None and not route.websocket:
        refusal = handshake.Refusal(403, "WebSocket is not enabled on this route")
    screening = None
    if refusal is None:
        screening = handshake.screen(route, head)
        refusal = screening.refusal
    peer = request.getClientAddress()
    peer_ip = getattr(peer, "host", None) or str(peer)
    settings = generation.config.settings
    pipeline = generation.pipelines.get(route.name)  # None when a test or an embedder gave its own hook
    if refusal is None and pipeline is not None and route.inspect_handshake:
        verdict = pipeline.inspect_handshake(peer=f"{peer_ip}:{getattr(peer, 'port', 0)}", client=client, head=head)
        if verdict.action != "forward":
            failed = verdict.code == 1011  # an inspector raised and on_inspection_error = close
            text = "inspection error" if failed else (verdict.reason if settings.expose_reason else BLOCKED)
            refusal = handshake.Refusal(500 if failed else 403, text, f"{verdict.reason} ({verdict.rule})")
    if refusal is not None:
        return refuse_handshake(request, route, peer_ip, client, refusal)
    if screening.subprotocols is not None:
        request.requestHeaders.setRawHeaders(b"sec-websocket-protocol", [", ".join(screening.subprotocols).encode()])
    return generation.websockets[route.name].render(request)


#: What a client refused by the detectors reads (``[wsfw] expose_reason`` shows the finding instead).
BLOCKED = "blocked by policy"


def refuse_handshake(request, route, peer_ip: str, client: str, refusal) -> bytes:
    """Answer a refused handshake with its status and short reason, log it, and close the
    connection after the answer: whatever the client pipelined behind a refused upgrade is
    not read as another request."""
    log.info("handshake refused {status} on route {route} from {client}: {reason}", status=refusal.status,
             route=route.name, peer=peer_ip, client=client, reason=escape(refusal.detail or refusal.reason, 300),
             path=escape(request.path.decode("latin-1"), 300), event="handshake_refused")
    body = plain(request, refusal.status, refusal.reason, close=True)
    for name, value in refusal.headers:
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    if any(name.lower() == "upgrade" for name, _ in refusal.headers):
        request.setHeader(b"connection", b"Upgrade, close")  # RFC 9110 7.8: Upgrade is listed in Connection
    return body


class Dispatch(resource.Resource):
    """Admits each request (``IClientGuard``), then routes it to its route's WebSocket resource or HTTP proxy."""

    isLeaf = True

    def __init__(self, generation, guard=None):
        super().__init__()
        #: A wsfw.reload.Generation (config, websockets, proxies); a reload swaps it whole.
        self.generation = generation
        #: A wsfw.interfaces.IClientGuard (bans, connection caps, handshake rate), or None: no abuse limits.
        self.guard = guard

    def render(self, request):
        request.setHeader(b"server", b"wsfw")
        generation = self.generation  # one generation for the whole request, even if a reload lands
        address = request_client_address(request, generation.config.settings)
        if self.guard is None:
            return self.dispatch(request, generation, address)
        admission = self.guard.admit(address, is_upgrade(request))
        if not admission.admitted:
            if admission.retry_after is not None:
                request.setHeader(b"retry-after", str(admission.retry_after).encode())
            return plain(request, admission.status, REFUSAL_TEXT.get(admission.reason, "refused"), close=True)
        if admission.ticket is None:
            return self.dispatch(request, generation, address)
        # The WebSocket resource builds the connection's protocol within this call; it takes the
        # ticket and releases it when the connection ends. Unclaimed, it is released right here.
        with handing_over(admission.ticket):
            return self.dispatch(request, generation, address)

    def dispatch(self, request, generation, address: str):
        """Route an admitted request (from client ``address``) to its route's WebSocket resource or HTTP proxy."""
        path = request.path.decode("latin-1")
        route = generation.config.match_route(request.getHeader(b"host"), path)
        if route is None:
            return plain(request, 404, "no route for this host and path")
        if is_upgrade(request):
            return upgrade(request, generation, route, address)
        if not route.http_enabled:
            return plain(request, 404, "plain HTTP is not enabled on this route")
        return generation.proxies[route.name].render(request)


class PublicSite(server.Site):
    """The ``Site`` every public listener serves (HTTP/1.1 only: WebSocket needs it)."""

    protocol = Channel
    requestFactory = CappedRequest
    noisy = False

    def __init__(self, root, config: Config, reactor, on_response=None):
        super().__init__(root, reactor=reactor)
        self.reactor = reactor
        self.on_response = on_response or (lambda code: None)
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Apply the request-head deadline and body cap of ``config`` (at start and on reload)."""
        self.head_timeout = config.timeouts.request_head
        self.max_body = config.limits.max_http_body_bytes

    def log(self, request):
        """Every HTTP response that went through a ``Request`` (proxied, or wsfw's own) ends here:
        count it by status. There is no access log: the upstream app keeps its own."""
        self.on_response(request.code)
