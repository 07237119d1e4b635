"""Inspection over real sockets: attacks in Socket.IO events and JSON are blocked, bystanders carry on."""

from __future__ import annotations

import json
import os
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from io import BytesIO
from zope.interface import implementer

from signalrcore.messages.invocation_message import InvocationMessage
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol

from tests import support
from wsfw import decoders
from wsfw.inspection.audit import Audit
from wsfw.inspection.pipeline import Pipeline
from wsfw.interfaces import IInspector

XSS = '42["chat message","<img src=x onerror=alert(document.cookie)>"]'
SQLI = '42["chat message","1\' UNION SELECT username, password FROM users--"]'
BENIGN = '42["chat message","see you at 5pm, bring the <3 and snacks; SELECT a seat early!"]'


JSON_HUB, MP_HUB = JsonHubProtocol(), MessagePackHubProtocol()


def read_audit(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class InspectionBase(unittest.TestCase):
    timeout = 30
    mode = "block"

    @defer.inlineCallbacks
    def setUp(self):
        folder = tempfile.mkdtemp(prefix="wsfw-audit-")
        self.audit_path = os.path.join(folder, "audit.json")
        self.addCleanup(lambda: (os.path.exists(self.audit_path) and os.unlink(self.audit_path), os.rmdir(folder)))
        self.app, self.wsfw = yield support.start_stack(
            self, hook=self.make_hook(), log=f"connections = yes\naudit_file = {self.audit_path}",
            extra=f"[wsfw]\nmode = {self.mode}\n")

    def make_hook(self):
        return None

    def client(self, path="/ws/socket.io/?EIO=4&transport=websocket"):
        return support.connect_for(self, self.wsfw.url(path))


class BlockTests(InspectionBase):
    @defer.inlineCallbacks
    def test_socketio_attack_closes_attacker_only(self):
        """An XSS in a Socket.IO event argument: attacker closed with 1008, upstream never sees it, victim chats on."""
        victim = yield self.client()
        attacker = yield self.client()
        victim.sendMessage(BENIGN.encode())
        self.assertEqual((yield support.next_message(victim))[0], BENIGN.encode())
        upstream_closed = self.app.ws.next_close()
        attacker.sendMessage(XSS.encode())
        _, code, _ = yield support.closed(attacker)
        self.assertEqual(code, 1008)
        self.assertEqual((yield upstream_closed)[1], 1001, "the app sees a normal departure")
        self.assertNotIn(XSS.encode(), [m for m, _ in self.app.ws.received])
        victim.sendMessage(b'42["chat message","still here"]')
        self.assertEqual((yield support.next_message(victim))[0], b'42["chat message","still here"]')
        record = read_audit(self.audit_path)[-1]
        self.assertEqual((record["action"], record["enforced"], record["framing"], record["direction"]),
                         ("block", True, "socketio", "client"))
        self.assertEqual(record["param"], "socketio.args[0]")
        self.assertEqual(record["operation"], "chat message")
        self.assertIn("xss", record["classes"])
        for field in ("log_time", "conn", "peer", "route", "rule_ids", "score", "excerpt", "matches"):
            self.assertIn(field, record)

    @defer.inlineCallbacks
    def test_sqli_in_json_blocked(self):
        """A SQL injection inside a JSON field is blocked."""
        proto = yield self.client("/ws/echo")
        proto.sendMessage(json.dumps({"type": "search", "q": "x' OR 1=1 -- "}).encode())
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1008)
        self.assertEqual(self.app.ws.received, [])

    @defer.inlineCallbacks
    def test_polling_refusal_ends_the_connection(self):
        """After a 403 for a polling attack wsfw closes the connection, as its Connection: close
        says: a request the client pipelined behind the attack is never read nor forwarded."""
        path = b"/http/echo/socket.io/?EIO=4&transport=polling&sid=pipe"
        attack = ("2\x1e" + SQLI).encode()

        def post(body: bytes) -> bytes:
            return (b"POST " + path + b" HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

        proto = yield support.raw(self.wsfw.port, post(attack) + post(b"4pipelined after the attack"))
        data = yield proto.done  # fires only when wsfw closes the connection
        self.assertTrue(data.startswith(b"HTTP/1.1 403 "), data)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1, "the pipelined request was answered too")
        # wsfw ends the attacker's Engine.IO session at the app (as in the test below): let that finish.
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertNotIn(b"pipelined after the attack", b"".join(body for _, body in self.app.http_bodies))

    @defer.inlineCallbacks
    def test_polling_attack_gets_403(self):
        """The same attack over Engine.IO long-polling is refused with 403 and not forwarded."""
        agent = Agent(reactor)
        url = self.wsfw.url("/http/echo/socket.io/?EIO=4&transport=polling&sid=abc", "http").encode()
        response = yield agent.request(b"POST", url, Headers({b"content-type": [b"text/plain;charset=UTF-8"]}),
                                       FileBodyProducer(BytesIO(("2\x1e" + SQLI).encode())))
        self.assertEqual(response.code, 403)
        yield readBody(response)
        self.assertEqual(read_audit(self.audit_path)[-1]["kind"], "http")
        # The attacker's session is over: anything else it sends with that sid is refused.
        again = yield agent.request(b"POST", url, Headers({}), FileBodyProducer(BytesIO(BENIGN.encode())))
        self.assertEqual(again.code, 403)
        yield readBody(again)
        # Other sessions carry on.
        other = url.replace(b"sid=abc", b"sid=def")
        benign = yield agent.request(b"POST", other, Headers({}), FileBodyProducer(BytesIO(BENIGN.encode())))
        self.assertEqual(benign.code, 200)
        self.assertEqual((yield readBody(benign)), BENIGN.encode())
        # wsfw told the app to close the attacker's Engine.IO session in the attack's place.
        yield task.deferLater(reactor, 0.2, lambda: None)
        posted = [(uri.decode(), body) for uri, body in self.app.http_bodies]
        self.assertIn((url.decode().split(str(self.wsfw.port), 1)[1], b"1"), posted)
        self.assertFalse([body for _, body in posted if b"UNION" in body], "the attack reached the app")


class SignalRPollingTests(InspectionBase):
    """SignalR long-polling / SSE sends (POST ?id=token) get the WebSocket policy too."""

    @defer.inlineCallbacks
    def post(self, url: bytes, body: bytes):
        response = yield Agent(reactor).request(b"POST", url, Headers({}), FileBodyProducer(BytesIO(body)))
        yield readBody(response)
        return response.code

    def url(self, token: str) -> bytes:
        return self.wsfw.url(f"/http/echo/chathub?id={token}", "http").encode()

    @defer.inlineCallbacks
    def assert_session_ended(self, token: str):
        """Later sends on the token are refused, and the app got SignalR's own DELETE for it."""
        self.assertEqual((yield self.post(self.url(token), JSON_HUB.encode(InvocationMessage("2", "Send", ["hi"])).encode())),
                         403)
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertIn((f"/http/echo/chathub?id={token}", b"DELETE"),
                      [(uri.decode(), body) for uri, body in self.app.http_bodies])

    @defer.inlineCallbacks
    def test_json_records_inspected(self):
        """Handshake and a benign invocation pass; an XSS in an argument gets 403 and ends the connection."""
        url = self.url("tok-json")
        self.assertEqual((yield self.post(url, b'{"protocol":"json","version":1}\x1e')), 200)
        benign = JSON_HUB.encode(InvocationMessage("1", "Send", ["alice", "lunch at 12?"])).encode()
        self.assertEqual((yield self.post(url, benign)), 200)
        attack = JSON_HUB.encode(InvocationMessage("2", "Send", ["alice", "<svg/onload=alert(1)>"])).encode()
        self.assertEqual((yield self.post(url, attack)), 403)
        record = read_audit(self.audit_path)[-1]
        self.assertEqual((record["kind"], record["framing"], record["param"]), ("http", "signalr", "signalr.arguments[1]"))
        self.assertEqual(record["operation"], "Send", "the SignalR target is the audited operation")
        yield self.assert_session_ended("tok-json")
        self.assertFalse([b for _, b in self.app.http_bodies if b"svg" in b], "the attack reached the app")

    @defer.inlineCallbacks
    def test_messagepack_records_inspected(self):
        """After a MessagePack handshake, binary bodies are decoded as MessagePack hub records."""
        url = self.url("tok-mp")
        self.assertEqual((yield self.post(url, b'{"protocol":"messagepack","version":1}\x1e')), 200)
        benign = MP_HUB.encode(InvocationMessage("1", "Send", ["bob", "see you"]))
        self.assertEqual((yield self.post(url, benign)), 200)
        attack = MP_HUB.encode(InvocationMessage("2", "Send", ["bob", "1' UNION SELECT password FROM users--"]))
        self.assertEqual((yield self.post(url, attack)), 403)
        self.assertEqual(read_audit(self.audit_path)[-1]["param"], "signalr.arguments[1]")
        yield self.assert_session_ended("tok-mp")
        # Another SignalR connection carries on.
        other = self.url("tok-other")
        self.assertEqual((yield self.post(other, b'{"protocol":"json","version":1}\x1e')), 200)
        self.assertEqual((yield self.post(other, JSON_HUB.encode(InvocationMessage("1", "Send", ["x"])).encode())), 200)

    @defer.inlineCallbacks
    def test_non_signalr_id_query_is_not_a_session(self):
        """An ordinary POST that happens to carry ?id= is refused on attack but never DELETEd upstream."""
        url = self.wsfw.url("/http/echo/items?id=7", "http").encode()
        self.assertEqual((yield self.post(url, json.dumps({"q": "x' OR 1=1 -- "}).encode())), 403)
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertNotIn(b"DELETE", [body for _, body in self.app.http_bodies])
        self.assertEqual((yield self.post(url, b'{"q": "plain"}')), 200)


class DetectModeTests(InspectionBase):
    mode = "detect"

    @defer.inlineCallbacks
    def test_detect_mode_forwards_and_logs(self):
        """In detect mode the attack is forwarded and audited with enforced=false."""
        proto = yield self.client()
        proto.sendMessage(XSS.encode())
        self.assertEqual((yield support.next_message(proto))[0], XSS.encode())
        record = read_audit(self.audit_path)[-1]
        self.assertEqual((record["action"], record["enforced"]), ("detect", False))


@implementer(IInspector)
class Broken:
    name = "broken"

    def inspect(self, view, decoded):
        raise RuntimeError("inspector bug")


class FailClosedTests(InspectionBase):
    def make_hook(self):
        self.hook_audit = Audit(None)
        return Pipeline(route="app", mode="block", framing="auto", inspect_upstream=False, inspectors=[Broken()],
                        limits=decoders.Limits(), on_decode_error="raw", on_decode_limit="log", on_error="close",
                        audit=self.hook_audit)

    @defer.inlineCallbacks
    def test_raising_inspector_fails_closed(self):
        """An inspector that raises closes the client with 1011 and the failure is logged."""
        proto = yield self.client("/ws/echo")
        proto.sendMessage(b"hello")
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1011)
        self.assertEqual(self.app.ws.received, [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        yield task.deferLater(reactor, 0, lambda: None)
