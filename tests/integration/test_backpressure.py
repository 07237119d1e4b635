"""Backpressure through a real ``twistd wsfw`` process, in magic-wormhole-transit-relay's style.

The upstream stops reading; a sender tries to push 300 MiB through wsfw. With
the producer/consumer wiring the sender is paused after a few MiB and wsfw's
memory stays flat; without it wsfw would buffer everything it was sent.
"""

from __future__ import annotations

import os
import re
import sys

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.interfaces import IPullProducer
from twisted.trial import unittest
from zope.interface import implementer

from tests import support
from tests.tlsutil import CA

MIB = 1 << 20
BUDGET = 300 * MIB


@implementer(IPullProducer)
class Sender:
    """Sends 1 MiB binary messages whenever the transport asks for more, up to BUDGET."""

    def __init__(self, proto):
        self.proto = proto
        self.sent = 0
        self.last_progress = reactor.seconds()

    def resumeProducing(self):
        if self.sent >= BUDGET:
            self.proto.transport.unregisterProducer()
            return
        self.proto.sendMessage(os.urandom(16) * (MIB // 16), True)
        self.sent += MIB
        self.last_progress = reactor.seconds()

    def stopProducing(self):
        pass


class Daemon(protocol.ProcessProtocol):
    """A `twistd -n wsfw` child; `bound` fires with the port read from its log."""

    def __init__(self):
        self.out = b""
        self.bound = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data
        match = re.search(rb"listening \[listen:public\] on 127\.0\.0\.1:(\d+)", self.out)
        if match and not self.bound.called:
            self.bound.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.bound.called:
            self.bound.errback(RuntimeError(f"wsfw exited before listening:\n{self.out.decode(errors='replace')}"))
        self.ended.callback(None)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class BackpressureTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def run_daemon(self, listen: str):
        self.app = yield support.UpstreamApp().start()
        self.addCleanup(self.app.stop)
        path = support.write_config(support.config_text(
            f"ws://127.0.0.1:{self.app.port_number}", listen=listen,
            extra="[limits]\nmax_message_bytes = 4MiB\n", log="connections = yes"))
        self.addCleanup(os.unlink, path)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        daemon = Daemon()
        transport = reactor.spawnProcess(daemon, twistd, [twistd, "-n", "--pidfile=", "wsfw", "--config", path],
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))

        def stop():
            try:
                transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
            return daemon.ended
        self.addCleanup(stop)
        port = yield daemon.bound.addTimeout(30, reactor)
        return transport.pid, port

    @defer.inlineCallbacks
    def check_sender_paused(self, listen: str, scheme: str, tls_options=None):
        pid, port = yield self.run_daemon(listen)
        proto = yield support.connect(f"{scheme}://127.0.0.1:{port}/ws/stall", tls_options=tls_options)
        self.addCleanup(support.abort, proto)
        yield task.deferLater(reactor, 0.3, lambda: None)
        rss_before = rss_kib(pid)
        sender = Sender(proto)
        proto.transport.registerProducer(sender, False)
        while reactor.seconds() - sender.last_progress < 2.0 and sender.sent < BUDGET:
            yield task.deferLater(reactor, 0.25, lambda: None)
        growth_mib = (rss_kib(pid) - rss_before) / 1024
        self.assertLess(sender.sent, 64 * MIB, f"sender was not paused: pushed {sender.sent // MIB} MiB")
        self.assertLess(growth_mib, 24, f"wsfw grew by {growth_mib:.1f} MiB")
        return sender.sent

    def test_stalled_upstream_pauses_sender(self):
        """Plain TCP: the sender stops being asked for data after a few MiB; wsfw's RSS stays flat."""
        return self.check_sender_paused("tcp:0:interface=127.0.0.1", "ws")

    def test_stalled_upstream_pauses_sender_over_tls(self):
        """The same through a TLS listener (TLS transports take producers with fuzzier thresholds)."""
        ca = CA()
        cert, key = ca.issue("127.0.0.1")
        from twisted.internet import ssl
        trust = ssl.Certificate.loadPEM(open(ca.ca_file, "rb").read())
        return self.check_sender_paused(f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}", "wss",
                                        ssl.optionsForClientTLS("127.0.0.1", trustRoot=trust))
