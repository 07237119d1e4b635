"""wsfw.loop: the lean poll loop dispatches socket events like Twisted's, and still logs (and
survives) an exception a handler lets escape."""

from __future__ import annotations

import socket

from twisted.internet import defer, protocol, reactor
from twisted.internet.epollreactor import EPollReactor
from twisted.trial import unittest

from wsfw import loop


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        if data in (b"boom", b"crash"):
            self.crash = data == b"crash"
            raise RuntimeError("handler failure")
        self.transport.write(data)

    def connectionLost(self, reason):
        if getattr(self, "crash", False):  # escapes _doReadOrWrite itself: the loop's own guard logs it
            raise ValueError("connectionLost failure")


class LeanLoopTests(unittest.TestCase):
    def setUp(self):
        self.assertIsInstance(reactor, EPollReactor)  # Twisted's default on Linux, as wsfw runs
        self.assertTrue(loop.install(reactor))
        self.assertTrue(loop.install(reactor))  # idempotent
        self.assertTrue(reactor.doIteration.wsfw_lean)
        factory = protocol.Factory.forProtocol(Echo)
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        sock.setblocking(False)
        self.addCleanup(sock.close)
        return sock

    @defer.inlineCallbacks
    def exchange(self, sock, data: bytes) -> bytes:
        """Send ``data`` (as the socket takes it) and read the echo, letting the reactor run."""
        sent, got = 0, b""
        for _ in range(500):
            if sent < len(data):
                try:
                    sent += sock.send(data[sent:])
                except BlockingIOError:
                    pass
            try:
                got += sock.recv(65536)
            except BlockingIOError:
                pass
            if len(got) >= len(data):
                break
            yield _tick()
        return got

    @defer.inlineCallbacks
    def logged(self, kind) -> list[str]:
        """The messages of the ``kind`` errors logged, once there is one (waiting up to 1 s)."""
        found = []
        for _ in range(100):
            found += self.flushLoggedErrors(kind)
            if found:
                break
            yield _tick()
        return [str(f.value) for f in found]

    @defer.inlineCallbacks
    def test_events_dispatched_and_failures_logged(self):
        sock = self.connect()
        payload = b"x" * 200_000  # several reads and writes, a full send buffer on the way
        self.assertEqual((yield self.exchange(sock, payload)), payload)
        sock.send(b"boom")  # the protocol raises: Twisted's _doReadOrWrite logs it, closes the connection
        self.assertEqual((yield self.logged(RuntimeError)), ["handler failure"])
        self.connect().send(b"crash")  # ... and connectionLost raises too: the loop's own guard logs that
        self.assertEqual((yield self.logged(ValueError)), ["connectionLost failure"])
        self.flushLoggedErrors(RuntimeError)
        # The reactor went on: a new connection is served.
        self.assertEqual((yield self.exchange(self.connect(), b"still here")), b"still here")


def _tick():
    from twisted.internet import task

    return task.deferLater(reactor, 0.01, lambda: None)


def test_other_reactors_left_alone():
    from twisted.internet.selectreactor import SelectReactor

    other = SelectReactor()
    before = other.doIteration
    assert loop.install(other) is False
    assert other.doIteration == before
