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

    @defer.inlineCallbacks
    def exchange(self, sock, data: bytes) -> bytes:
        sock.sendall(data)
        got = b""
        for _ in range(200):
            try:
                got += sock.recv(65536)
            except BlockingIOError:
                pass
            if len(got) >= len(data):
                break
            yield _tick()
        return got

    @defer.inlineCallbacks
    def test_events_dispatched_and_failures_logged(self):
        sock = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        sock.setblocking(False)
        self.addCleanup(sock.close)
        payload = b"x" * 200_000  # several reads and writes, a full send buffer on the way
        self.assertEqual((yield self.exchange(sock, payload)), payload)
        sock.sendall(b"boom")
        logged = []
        for _ in range(100):
            logged += self.flushLoggedErrors(RuntimeError)
            if logged:
                break
            yield _tick()
        self.assertEqual([str(f.value) for f in logged], ["handler failure"], "the handler's exception was logged")
        crash = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        self.addCleanup(crash.close)
        crash.sendall(b"crash")
        escaped = []
        for _ in range(100):
            escaped += self.flushLoggedErrors(ValueError)
            if escaped:
                break
            yield _tick()
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual([str(f.value) for f in escaped], ["connectionLost failure"])
        # The reactor went on: a new connection is served.
        other = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        other.setblocking(False)
        self.addCleanup(other.close)
        self.assertEqual((yield self.exchange(other, b"still here")), b"still here")


def _tick():
    from twisted.internet import task

    return task.deferLater(reactor, 0.01, lambda: None)


def test_other_reactors_left_alone():
    from twisted.internet.selectreactor import SelectReactor

    other = SelectReactor()
    before = other.doIteration
    assert loop.install(other) is False
    assert other.doIteration == before
