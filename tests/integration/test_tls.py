"""TLS on both hops: a wss:// front with a test certificate and a wss:// upstream whose name is verified."""

from __future__ import annotations

from twisted.internet import defer, ssl
from twisted.trial import unittest

from tests import support
from tests.tlsutil import CA


class TLSTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def start(self, upstream_name: str, server_name: str | None = None):
        self.addCleanup(support.settle)
        self.ca = CA()
        cert, key = self.ca.issue("localhost")
        self.app = yield support.UpstreamApp().start(f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        self.addCleanup(self.app.stop)
        front_cert, front_key = self.ca.issue("127.0.0.1")
        route = f"ca_file = {self.ca.ca_file}\n" + (f"server_name = {server_name}\n" if server_name else "")
        self.wsfw = support.Wsfw(support.config_text(
            f"wss://{upstream_name}:{self.app.port_number}",
            listen=f"ssl:0:interface=127.0.0.1:privateKey={front_key}:certKey={front_cert}", route_extra=route))
        yield self.wsfw.start()
        self.addCleanup(self.wsfw.stop)

    def client_tls(self, **extra):
        trust = ssl.Certificate.loadPEM(open(self.ca.ca_file, "rb").read())
        return ssl.optionsForClientTLS("127.0.0.1", trustRoot=trust, **extra)

    @defer.inlineCallbacks
    def test_wss_both_hops(self):
        """A wss:// client reaches a wss:// upstream verified by name; messages and closes relay."""
        yield self.start("localhost")
        proto = yield support.connect(self.wsfw.url(scheme="wss"), tls_options=self.client_tls())
        self.addCleanup(support.abort, proto)
        proto.sendMessage(b"over tls" * 1000, True)
        self.assertEqual((yield support.next_message(proto)), (b"over tls" * 1000, True))
        self.assertEqual(self.app.ws.requests[-1].headers["x-forwarded-proto"], "https")
        upstream_closed = self.app.ws.next_close()
        proto.sendClose(4000, "tls bye")
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1000)
        self.assertEqual((yield upstream_closed), (True, 4000, "tls bye"))
        yield self.wsfw.drained()

    @defer.inlineCallbacks
    def test_wrong_upstream_hostname_refused(self):
        """An upstream whose certificate does not match the expected name is refused (502)."""
        yield self.start("127.0.0.1", server_name="not-localhost.example")
        with self.assertRaises(support.ConnectionRefused) as e:
            yield support.connect(self.wsfw.url(scheme="wss"), tls_options=self.client_tls())
        self.assertIn(" 502 ", e.exception.status_line)
        self.assertEqual(self.app.ws.requests, [], "nothing was sent to an unverified upstream")
        yield self.wsfw.drained()

    @defer.inlineCallbacks
    def test_front_refuses_tls_1_1(self):
        """The public listener does not negotiate TLS below 1.2."""
        yield self.start("localhost")
        old = self.client_tls(extraCertificateOptions={
            "insecurelyLowerMinimumTo": ssl.TLSVersion.TLSv1_0, "lowerMaximumSecurityTo": ssl.TLSVersion.TLSv1_1})
        try:
            proto = yield support.connect(self.wsfw.url(scheme="wss"), tls_options=old)
        except Exception:
            return  # handshake refused, as it should be
        proto.transport.abortConnection()
        self.fail("a TLS 1.1-only client was accepted")
