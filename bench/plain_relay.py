"""The baseline: a bare Autobahn relay, what wsfw would be with nothing added.

One upstream connection per client connection, dialled while the client's
handshake is held open (``onConnect`` returns a Deferred); messages relayed
both ways with their opcode; each transport registered as the other's
streaming producer so a slow reader pushes back through TCP (Twisted's
``portforward`` idiom); a close on one side sent on to the other. No
inspection, no logging, no limits, no twisted.web ``Site`` in front. The
difference between this and wsfw is the cost of wsfw's own machinery.

    python bench/plain_relay.py --port 0 --upstream ws://127.0.0.1:PORT

Prints ``plain-relay listening on PORT`` once bound.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from zope.interface import implementer

from echo_upstream import log_warnings, raise_fd_limit

#: Options both hops share: no size caps, no fragmentation, no compression.
NO_LIMITS = dict(maxFramePayloadSize=0, maxMessagePayloadSize=0, autoFragmentSize=0, openHandshakeTimeout=30)


@implementer(IPushProducer)
class PeerProducer:
    """Pauses reading on the peer's transport while this transport's buffer is full.

    A wrapper rather than the raw transport, because Twisted calls
    ``stopProducing`` (i.e. ``loseConnection``) on the producer when the
    consumer disconnects; the relay wants to send a close frame instead.
    """

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        pass


def sendable(code):
    """Autobahn's ``sendClose`` takes 1000 or 3000-4999 only; anything else becomes 1000."""
    return code if code == 1000 or (code is not None and 3000 <= code <= 4999) else 1000


def relay_close(peer, code, reason) -> None:
    """Close ``peer`` because the other hop closed; drop it if it never opened."""
    if peer is None:
        return
    if peer.transport is not None and getattr(peer.transport, "producer", None) is not None:
        peer.transport.unregisterProducer()
    if peer.state == WebSocketProtocol.STATE_OPEN:
        peer.sendClose(sendable(code), reason if reason and len(reason.encode()) <= 123 else None)
    elif peer.state == WebSocketProtocol.STATE_CONNECTING:
        peer.dropConnection(abort=True)


class UpstreamProtocol(WebSocketClientProtocol):
    front: "FrontProtocol" = None

    def onOpen(self):
        self.front.upstream_open(self)

    def onMessage(self, payload, isBinary):
        front = self.front
        if front.state == WebSocketProtocol.STATE_OPEN:
            front.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        front, self.front = self.front, None
        if front is not None:
            front.upstream = None
            if front.state == WebSocketProtocol.STATE_CONNECTING:
                front.upstream_failed(f"upstream closed during handshake: {reason}")
            else:
                relay_close(front, code, reason)


class Dial(Factory):
    """Builds one upstream protocol from the shared client factory and ties it to its client."""

    noisy = False

    def __init__(self, client_factory, front):
        self.client_factory = client_factory
        self.front = front

    def buildProtocol(self, addr):
        protocol = self.client_factory.buildProtocol(addr)
        protocol.front = self.front
        return protocol


class FrontProtocol(WebSocketServerProtocol):
    upstream: UpstreamProtocol = None
    _handshake: Deferred = None

    def onConnect(self, request):
        self._handshake = Deferred()
        d = self.factory.endpoint.connect(Dial(self.factory.client_factory, self))
        d.addErrback(lambda f: self.upstream_failed(f.getErrorMessage()))
        return self._handshake

    def upstream_open(self, upstream):
        self.upstream = upstream
        if not self._handshake.called:
            self._handshake.callback(None)

    def upstream_failed(self, why):
        if self._handshake is not None and not self._handshake.called:
            self._handshake.errback(ConnectionDeny(502, why))

    def onOpen(self):
        front, back = self.transport, self.upstream.transport
        back.registerProducer(PeerProducer(front), True)
        front.registerProducer(PeerProducer(back), True)

    def onMessage(self, payload, isBinary):
        upstream = self.upstream
        if upstream is not None and upstream.state == WebSocketProtocol.STATE_OPEN:
            upstream.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.front = None
            relay_close(upstream, code, reason)


def factories(reactor, upstream_url: str) -> WebSocketServerFactory:
    """The listening factory, carrying the shared upstream client factory and endpoint."""
    url = urlsplit(upstream_url)
    client = WebSocketClientFactory(url=upstream_url, reactor=reactor)
    client.protocol = UpstreamProtocol
    client.setProtocolOptions(**NO_LIMITS)
    front = WebSocketServerFactory(reactor=reactor)
    front.protocol = FrontProtocol
    front.setProtocolOptions(perMessageCompressionAccept=lambda offers: None, webStatus=False, **NO_LIMITS)
    front.client_factory = client
    front.endpoint = endpoints.TCP4ClientEndpoint(reactor, url.hostname, url.port or 80, timeout=10)
    return front


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--upstream", required=True, help="ws://HOST:PORT of the echo server")
    args = parser.parse_args(argv)
    raise_fd_limit()
    log_warnings()
    from twisted.internet import reactor

    port = reactor.listenTCP(args.port, factories(reactor, args.upstream), backlog=args.backlog,
                             interface="127.0.0.1")
    print(f"plain-relay listening on {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
