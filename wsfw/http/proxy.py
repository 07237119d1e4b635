"""Streaming HTTP reverse proxy for plain requests on a route (polling, negotiate, pages).

Built on ``twisted.web.client.Agent`` rather than ``twisted.web.proxy``, which
buffers whole bodies, collapses repeated headers, speaks only plain TCP and
has no flow control. Here the response body is streamed: the upstream
response's transport is registered as the client request's producer, so a
slow client slows the upstream read instead of filling wsfw's memory.
"""

from __future__ import annotations

import io

from twisted.internet import defer, error, protocol
from twisted.web import http
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.server import NOT_DONE_YET
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed
from zope.interface import implementer

from wsfw import endpoints
from wsfw.http.polling import ENDED, EndedSessions
from wsfw.http.responses import plain
from wsfw.forwarding import FORWARDING, HOP_BY_HOP, connection_tokens, forwarding_headers, request_client_address
from wsfw.logs import logger

log = logger("wsfw.proxy")

_BODY_METHODS = {b"POST", b"PUT", b"PATCH", b"DELETE"}


@implementer(IAgentEndpointFactory)
class _RouteEndpoints:
    """Every URI of one route goes to that route's HTTP upstream endpoint."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def endpointForURI(self, uri):
        return self.endpoint


def _drop_set(raw_headers) -> set[bytes]:
    names = connection_tokens(v.decode("latin-1") for v in raw_headers.getRawHeaders(b"connection", []))
    return {n.encode() for n in names | HOP_BY_HOP}


class _BodyRelay(protocol.Protocol):
    """Writes an upstream response body to the client request as it arrives."""

    def __init__(self, request, done: defer.Deferred):
        self.request = request
        self.done = done

    def connectionMade(self):
        if not (self.request._disconnected or self.request.finished):
            self.request.registerProducer(self.transport, True)

    def dataReceived(self, data):
        if not (self.request._disconnected or self.request.finished):
            self.request.write(data)

    def connectionLost(self, reason):
        request = self.request
        if request._disconnected or request.finished:
            self.done.callback(None)
            return
        request.unregisterProducer()
        if reason.check(ResponseDone, http.PotentialDataLoss):
            request.finish()
        else:
            log.warn("upstream response body failed mid-stream for {uri}: {why}", uri=request.uri,
                     why=reason.getErrorMessage(), event="upstream_body_failed")
            request.channel.transport.abortConnection()
        self.done.callback(None)


class ProxyResource:
    """Proxies one route's plain HTTP requests to its HTTP upstream."""

    isLeaf = True

    def __init__(self, config, route, reactor, pool: HTTPConnectionPool, pipeline=None):
        self.config = config
        self.route = route
        self.reactor = reactor
        self.pipeline = pipeline
        self.sessions = EndedSessions(reactor)
        tls = endpoints.client_tls_options(route.http, route.tls) if route.http.secure else None
        endpoint = endpoints.client_endpoint(reactor, route.http, route.tls, config.timeouts.connect, tls)
        self.agent = Agent.usingEndpointFactory(reactor, _RouteEndpoints(endpoint), pool=pool)
        scheme = "https" if route.http.secure else "http"
        self.origin = f"{scheme}://{route.http.authority()}"

    def upstream_headers(self, request) -> Headers:
        incoming = request.requestHeaders
        drop = _drop_set(incoming) | {n.encode() for n in FORWARDING} | {b"content-length"}
        if not self.route.preserve_host:
            drop.add(b"host")
        out = Headers()
        for name, values in incoming.getAllRawHeaders():
            if name.lower() not in drop:
                out.setRawHeaders(name, values)
        peer = request.getClientAddress()
        first = lambda name: (incoming.getRawHeaders(name) or [b""])[0].decode("latin-1") or None  # noqa: E731
        for name, value in forwarding_headers(getattr(peer, "host", str(peer)), request.isSecure(), first(b"host"),
                                              first(b"x-forwarded-for"), first(b"x-forwarded-proto"),
                                              self.config.settings):
            out.setRawHeaders(name, [value])
        return out

    def render(self, request):
        path = request.uri.decode("latin-1")
        path, _, query = path.partition("?")
        url = self.origin + self.route.upstream_path(path, self.route.http) + (f"?{query}" if query else "")
        session = self.pipeline.http_session(path, query) if self.pipeline is not None else None
        sid = session.key if session is not None else None
        if sid is not None and self.sessions.is_ended(sid):
            return plain(request, 403, ENDED, close=True)
        request.content.seek(0, 2)
        length = request.content.tell()
        request.content.seek(0)
        if length and self.pipeline is not None and self._refused(request, path, query, session, url):
            return plain(request, 403, "blocked by policy", close=True)
        if sid is not None:
            self.sessions.track(sid, request)
        body = FileBodyProducer(request.content) \
            if (length or request.method in _BODY_METHODS) else None
        d = self.agent.request(request.method, url.encode("latin-1"), self.upstream_headers(request), body)
        # Our own timer, not addTimeout: cancelling an Agent request fails it with
        # ResponseNeverReceived, which must still read as a timeout (504), not 502.
        timed_out = []
        timer = self.reactor.callLater(self.config.timeouts.upstream_response,
                                       lambda: (timed_out.append(True), d.cancel()))
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        finished = request.notifyFinish()
        finished.addErrback(lambda _: d.cancel())
        d.addCallbacks(self._respond, self._failed, callbackArgs=(request,), errbackArgs=(request, url, timed_out))
        d.addErrback(lambda f: log.failure("proxying {url} failed", f, url=url))
        return NOT_DONE_YET

    def _refused(self, request, path: str, query: str, session, url: str) -> bool:
        """Whether the route's WebSocket policy blocks this request body (the caller answers 403).

        The inspected ``peer`` is the client address (behind a trusted proxy, the client it
        names), so the audit record, the rules' ``client`` and an auto-ban all see the client."""
        headers = ()
        if getattr(self.pipeline, "policy", None) is not None:  # rules may test the request's headers, cookies, Origin
            headers = tuple((name.decode("latin-1").lower(), value.decode("latin-1"))
                            for name, values in request.requestHeaders.getAllRawHeaders() for value in values)
        verdict = self.pipeline.inspect_http_body(
            body=request.content.read(), content_type=(request.getHeader(b"content-type") or b"").decode("latin-1"),
            peer=request_client_address(request, self.config.settings), path=path, query=query, session=session,
            headers=headers)
        request.content.seek(0)
        if verdict.action == "forward":
            return False
        kind = session.kind if session is not None else None
        if kind is not None:
            self._end_polling_session(request, url, kind)
            self.sessions.end(session.key)
        return True

    def _end_polling_session(self, request, url: str, kind: str) -> None:
        """End the attacker's polling session upstream too, so the app drops it and
        the client is disconnected, as a blocked WebSocket client is: Engine.IO gets
        a ``1`` close packet in the blocked message's place, SignalR the ``DELETE``
        its own clients send to end a long-polling connection."""
        headers = self.upstream_headers(request)
        if kind == "engineio":
            headers.setRawHeaders(b"content-type", [b"text/plain; charset=UTF-8"])
            d = self.agent.request(b"POST", url.encode("latin-1"), headers, FileBodyProducer(io.BytesIO(b"1")))
        else:
            headers.removeHeader(b"content-type")
            d = self.agent.request(b"DELETE", url.encode("latin-1"), headers, None)
        d.addCallback(lambda response: response.deliverBody(protocol.Protocol()))
        d.addErrback(lambda f: log.info("closing the polling session upstream failed: {why}",
                                        why=f.getErrorMessage(), url=url))

    def _respond(self, response, request):
        if request._disconnected or request.finished:
            response.deliverBody(protocol.Protocol())
            return None
        request.setResponseCode(response.code, response.phrase)
        drop = _drop_set(response.headers)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in drop:
                request.responseHeaders.setRawHeaders(name, values)
        done = defer.Deferred()
        response.deliverBody(_BodyRelay(request, done))
        return done

    def _failed(self, failure, request, url, timed_out):
        if request._disconnected or request.finished:
            return None
        if timed_out or failure.check(defer.TimeoutError, error.TimeoutError):
            code, text = 504, "upstream timed out"
        elif failure.check(ResponseNeverReceived, RequestTransmissionFailed, ResponseFailed):
            code, text = 502, "upstream closed the connection without a response"
        elif failure.check(error.DNSLookupError):
            code, text = 502, "upstream host name does not resolve"
        elif failure.check(error.ConnectError):
            code, text = 502, "upstream unreachable"
        else:
            log.failure("unexpected error proxying {url}", failure, url=url)
            code, text = 502, "upstream error"
        log.info("HTTP {method} {url} -> {code}: {why}", method=request.method.decode("latin-1"), url=url,
                 code=code, why=failure.getErrorMessage(), event="upstream_error")
        request.write(plain(request, code, text))
        request.finish()
        return None

