"""The public ``Site``: a head deadline per request, a body cap, and route dispatch.

Only a request that asks to upgrade (GET with ``Upgrade: websocket`` and
``Connection: upgrade``) reaches Autobahn's ``WebSocketResource``, which refuses
anything that is not a valid RFC 6455 handshake; everything else is proxied as
HTTP on the same route. Nothing is ever tunnelled blind.
"""

from __future__ import annotations

from twisted.web import http, resource, server

from wsfw.config import Config
from wsfw.http.responses import plain
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
    """Whether a request asks for a WebSocket upgrade (Autobahn then validates the rest)."""
    if request.method != b"GET":
        return False
    upgrade = b",".join(request.requestHeaders.getRawHeaders(b"upgrade", [])).lower()
    connection = b",".join(request.requestHeaders.getRawHeaders(b"connection", [])).lower()
    return b"websocket" in upgrade and b"upgrade" in [t.strip() for t in connection.split(b",")]


class Dispatch(resource.Resource):
    """Routes each request to its route's WebSocket resource or HTTP proxy."""

    isLeaf = True

    def __init__(self, generation):
        super().__init__()
        #: A wsfw.reload.Generation (config, websockets, proxies); a reload swaps it whole.
        self.generation = generation

    def render(self, request):
        request.setHeader(b"server", b"wsfw")
        generation = self.generation  # one generation for the whole request, even if a reload lands
        path = request.path.decode("latin-1")
        route = generation.config.match_route(request.getHeader(b"host"), path)
        if route is None:
            return plain(request, 404, "no route for this host and path")
        if is_upgrade(request):
            if not route.websocket:
                return plain(request, 403, "WebSocket is not enabled on this route")
            return generation.websockets[route.name].render(request)
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
