"""The benchmark's upstream: an Autobahn/Twisted echo server with no limits.

Every message goes back with the opcode it came with. Message and frame size
caps are off and permessage-deflate is refused, so the server adds nothing the
proxies under test do not also do, and the ``direct`` target measures plain
Autobahn server cost per round trip.

    python bench/echo_upstream.py [--port 0]

Prints ``echo listening on PORT`` once bound (port 0: the kernel picks one).
"""

from __future__ import annotations

import argparse
import resource
import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit: the idle phase holds thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def log_warnings(stream=sys.stdout) -> None:
    """Send Twisted/Autobahn warnings and worse to ``stream``, as twistd does for wsfw.

    Until logging begins Twisted keeps every event in memory (up to 64k of
    them), which would blur the RSS figures; and the benchmark counts the
    warnings each server logged.
    """
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
                                textFileLogObserver)

    observer = FilteringLogObserver(textFileLogObserver(stream), [LogLevelFilterPredicate(LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


class EchoProtocol(WebSocketServerProtocol):
    """Sends every message back unchanged, binary or text alike."""

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def factory(reactor) -> WebSocketServerFactory:
    echo = WebSocketServerFactory(reactor=reactor)
    echo.protocol = EchoProtocol
    echo.setProtocolOptions(
        maxFramePayloadSize=0,
        maxMessagePayloadSize=0,
        autoFragmentSize=0,
        perMessageCompressionAccept=lambda offers: None,
        openHandshakeTimeout=30,  # thousands of handshakes may queue up in the idle phase
        webStatus=False,
    )
    return echo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    raise_fd_limit()
    log_warnings()
    from twisted.internet import reactor

    port = reactor.listenTCP(args.port, factory(reactor), backlog=args.backlog, interface="127.0.0.1")
    print(f"echo listening on {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
