#!/usr/bin/env python3
"""Drive one relay check through an installed wsfw: a message echoes back, an attack gets 1008.

Runs with the package's own interpreter (/opt/venvs/wsfw/bin/python), whose
Twisted and Autobahn are the client, so the check needs nothing from the
source tree's virtualenv.

    ws_probe.py ws://127.0.0.1:PORT/path            exit 0: echoed, then blocked with 1008
"""

from __future__ import annotations

import sys

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor, task

HELLO = "hello through the installed wsfw"
ATTACK = '{"text": "<img src=x onerror=alert(document.cookie)>"}'


class Probe(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.messages.put(payload.decode("utf-8", "replace"))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(RuntimeError(f"handshake failed: {reason}"))
        self.factory.closed.callback((code, reason))


def open_client(url: str):
    factory = WebSocketClientFactory(url)
    factory.protocol = Probe
    factory.opened, factory.closed, factory.messages = defer.Deferred(), defer.Deferred(), defer.DeferredQueue()
    connectWS(factory)
    return factory


@defer.inlineCallbacks
def run(url: str):
    first = open_client(url)
    proto = yield first.opened.addTimeout(10, reactor)
    proto.sendMessage(HELLO.encode())
    echoed = yield first.messages.get().addTimeout(10, reactor)
    print(f"relay: sent {HELLO!r}, got back {echoed!r}")
    assert echoed == HELLO, "the message did not come back unchanged"
    proto.sendClose(1000)
    yield first.closed.addTimeout(10, reactor)
    second = open_client(url)
    attacker = yield second.opened.addTimeout(10, reactor)
    attacker.sendMessage(ATTACK.encode())
    code, reason = yield second.closed.addTimeout(10, reactor)
    print(f"attack: sent {ATTACK!r}, connection closed with {code} ({reason})")
    assert code == 1008, f"expected 1008, got {code}"


def main() -> int:
    url = sys.argv[1]
    result = []
    d = task.deferLater(reactor, 0, run, url)
    d.addCallbacks(lambda _: result.append(0), lambda f: (print(f"FAILED: {f.getErrorMessage()}"), result.append(1)))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return result[0] if result else 1


if __name__ == "__main__":
    raise SystemExit(main())
