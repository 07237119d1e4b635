"""Rules and positive models over real sockets: a running wsfw in front of the loopback test app."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from twisted.internet import defer
from twisted.trial import unittest

from tests import support
from tests.integration.test_inspection import read_audit

XSS = "<img src=x onerror=alert(document.cookie)>"


def sio(event, *args) -> bytes:
    return ("42" + json.dumps([event, *args])).encode()


def signalr(target, *args) -> bytes:
    return (json.dumps({"type": 1, "target": target, "arguments": list(args)}) + "\x1e").encode()


class PolicyBase(unittest.TestCase):
    timeout = 30
    rules = ""
    wsfw_extra = ""
    route_extra = ""

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw, self.audit_path = yield support.start_stack_with_rules(
            self, self.rules, route_extra=self.route_extra, wsfw_extra=self.wsfw_extra)

    def connect(self, path="/ws/socket.io/?EIO=4&transport=websocket", **kwargs):
        return support.connect_for(self, self.wsfw.url(path), **kwargs)

    @defer.inlineCallbacks
    def assert_echoed(self, proto, payload: bytes):
        proto.sendMessage(payload)
        self.assertEqual((yield support.next_message(proto))[0], payload)

    @defer.inlineCallbacks
    def assert_closed_1008(self, proto, payload: bytes):
        upstream_closed = self.app.ws.next_close()
        proto.sendMessage(payload)
        _, code, _ = yield support.closed(proto)
        self.assertEqual(code, 1008)
        yield upstream_closed
        self.assertNotIn(payload, [m for m, _ in self.app.ws.received], "the message reached the app")
        return read_audit(self.audit_path)[-1]


class SocketIOChatModelTests(PolicyBase):
    """A Socket.IO chat whose clients may only emit the events listed, with a schema for chat messages."""

    rules = """
        [model:app]
        unknown = block
        allow = typing

        [model:app:chat message]
        schema = {"type": "array", "minItems": 1, "maxItems": 1,
                  "prefixItems": [{"type": "object",
                                   "properties": {"text": {"type": "string", "maxLength": 100}},
                                   "required": ["text"], "additionalProperties": false}]}
    """

    @defer.inlineCallbacks
    def test_listed_events_with_valid_arguments_pass(self):
        proto = yield self.connect()
        for payload in (b"40", sio("chat message", {"text": "hello"}), sio("typing"), b"2"):
            yield self.assert_echoed(proto, payload)
        self.assertFalse(os.path.exists(self.audit_path) and read_audit(self.audit_path))

    @defer.inlineCallbacks
    def test_unknown_event_blocked(self):
        bystander = yield self.connect()
        proto = yield self.connect()
        record = yield self.assert_closed_1008(proto, sio("admin:shutdown"))
        self.assertEqual((record["action"], record["rule_ids"], record["param"], record["inspector"]),
                         ("block", ["model-unknown"], "socketio.event", "model"))
        yield self.assert_echoed(bystander, sio("chat message", {"text": "still here"}))

    @defer.inlineCallbacks
    def test_schema_violation_blocks(self):
        proto = yield self.connect()
        yield self.assert_echoed(proto, sio("chat message", {"text": "fine"}))
        record = yield self.assert_closed_1008(proto, sio("chat message", {"text": "x" * 101}))
        self.assertEqual((record["rule_ids"], record["param"]), (["model-schema"], "socketio.args[0].text"))
        self.assertIn("violate the schema at 0/text", record["reason"])
        proto = yield self.connect()
        record = yield self.assert_closed_1008(proto, sio("chat message", {"text": "hi", "html": "<b>"}))
        self.assertIn("Additional properties are not allowed", record["reason"])


    @defer.inlineCallbacks
    def test_long_polling_gets_the_same_model(self):
        """Over Engine.IO long-polling an unknown event is refused with 403 and never reaches the app."""
        from io import BytesIO

        from twisted.internet import reactor, task
        from twisted.web.client import Agent, FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        url = self.wsfw.url("/http/echo/socket.io/?EIO=4&transport=polling&sid=s1", "http").encode()

        @defer.inlineCallbacks
        def post(body):
            response = yield Agent(reactor).request(b"POST", url, Headers({b"content-type": [b"text/plain"]}),
                                                    FileBodyProducer(BytesIO(body)))
            yield readBody(response)
            return response.code
        self.assertEqual((yield post(sio("chat message", {"text": "hi"}))), 200)
        self.assertEqual((yield post(b"2\x1e" + sio("admin:shutdown"))), 403)
        record = read_audit(self.audit_path)[-1]
        self.assertEqual((record["kind"], record["rule_ids"]), ("http", ["model-unknown"]))
        # wsfw ends the session upstream in the blocked packet's place (an Engine.IO close packet)
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertFalse([b for _, b in self.app.http_bodies if b"admin:shutdown" in b])
        self.assertIn(b"1", [b for _, b in self.app.http_bodies])


class ExclusionTests(PolicyBase):
    """A false positive fixed on one field: markup in chat message text is not XSS for this app."""

    rules = """
        [rule:markdown-text]
        route = app
        when = event == "chat message"
        action = exclude
        detector = xss
        param = socketio.args[0].text
    """

    @defer.inlineCallbacks
    def test_exclusion_fixes_the_false_positive_only(self):
        proto = yield self.connect()
        yield self.assert_echoed(proto, sio("chat message", {"text": XSS}))
        # the same payload in another field of the same event is still blocked
        record = yield self.assert_closed_1008(proto, sio("chat message", {"text": "hi", "signature": XSS}))
        self.assertEqual(record["param"], "socketio.args[0].signature")
        self.assertIn("xss", record["classes"])
        # so is the excluded field of another event
        proto = yield self.connect()
        yield self.assert_closed_1008(proto, sio("profile", {"text": XSS}))
        # and another detector in the excluded field
        proto = yield self.connect()
        record = yield self.assert_closed_1008(proto, sio("chat message", {"text": "x' UNION SELECT pw FROM users--"}))
        self.assertIn("sqli", record["classes"])


class SignalRBlockRuleTests(PolicyBase):
    """A block rule on one SignalR hub method, except from the back office network (behind the proxy)."""

    wsfw_extra = "[wsfw]\ntrusted_proxies = 127.0.0.1\n"
    rules = """
        [rule:delete-user-back-office-only]
        route = app
        when = signalr.target == "DeleteUser" and not client in [10.20.0.0/16]
        action = block
        msg = DeleteUser from outside the back office
        tag = admin
    """

    @defer.inlineCallbacks
    def test_block_rule_on_a_target(self):
        proto = yield self.connect("/ws/chathub", headers={"X-Forwarded-For": "203.0.113.5"})
        yield self.assert_echoed(proto, b'{"protocol":"json","version":1}\x1e')
        yield self.assert_echoed(proto, signalr("SendMessage", "bob", "hi"))
        record = yield self.assert_closed_1008(proto, signalr("DeleteUser", 42))
        self.assertEqual((record["rule_ids"], record["action"], record["enforced"], record["param"], record["tags"],
                          record["reason"]),
                         (["delete-user-back-office-only"], "block", True, "signalr.target", ["admin"],
                          "DeleteUser from outside the back office"))

    @defer.inlineCallbacks
    def test_back_office_behind_the_trusted_proxy_may(self):
        proto = yield self.connect("/ws/chathub", headers={"X-Forwarded-For": "10.20.1.2"})
        yield self.assert_echoed(proto, b'{"protocol":"json","version":1}\x1e')
        yield self.assert_echoed(proto, signalr("DeleteUser", 42))


class UntrustedForwardedForTests(SignalRBlockRuleTests):
    """The same rule when the peer is not a trusted proxy: its X-Forwarded-For is the client's own claim."""

    wsfw_extra = "[wsfw]\ntrusted_proxies = 192.0.2.1\n"

    @defer.inlineCallbacks
    def test_back_office_behind_the_trusted_proxy_may(self):
        proto = yield self.connect("/ws/chathub", headers={"X-Forwarded-For": "10.20.1.2"})
        yield self.assert_echoed(proto, b'{"protocol":"json","version":1}\x1e')
        yield self.assert_closed_1008(proto, signalr("DeleteUser", 42))


class GraphQLAllowListTests(PolicyBase):
    """graphql-transport-ws: only the operations the app ships, by operationName."""

    rules = """
        [model:app]
        unknown = block
        allow = OnMessage
        [model:app:SendMessage]
        schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 50}},
                  "required": ["text"], "additionalProperties": false}
    """

    def subscribe(self, name, query, variables=None) -> bytes:
        payload = {"query": query, "variables": variables or {}}
        if name is not None:
            payload["operationName"] = name
        return json.dumps({"type": "subscribe", "id": "1", "payload": payload}).encode()

    @defer.inlineCallbacks
    def connect_gql(self):
        self.app.ws.accept_protocols = ["graphql-transport-ws"]
        proto = yield self.connect("/ws/graphql", protocols=["graphql-transport-ws"])
        self.assertEqual(proto.websocket_protocol_in_use, "graphql-transport-ws")
        yield self.assert_echoed(proto, b'{"type":"connection_init","payload":{}}')
        return proto

    @defer.inlineCallbacks
    def test_operation_allow_list(self):
        proto = yield self.connect_gql()
        yield self.assert_echoed(proto, self.subscribe("OnMessage", "subscription OnMessage { message { text } }"))
        yield self.assert_echoed(proto, self.subscribe("SendMessage", "mutation SendMessage($text: String!) "
                                                       "{ send(text: $text) }", {"text": "hi"}))
        record = yield self.assert_closed_1008(proto, self.subscribe("DumpUsers", "query DumpUsers { users { pw } }"))
        self.assertEqual((record["rule_ids"], record["param"], record["framing"]),
                         (["model-unknown"], "graphql.operationName", "graphqlws"))

    @defer.inlineCallbacks
    def test_named_in_the_query_only_or_anonymous(self):
        proto = yield self.connect_gql()
        yield self.assert_closed_1008(proto, self.subscribe(None, "query DumpUsers { users { pw } }"))
        proto = yield self.connect_gql()
        record = yield self.assert_closed_1008(proto, self.subscribe(None, "{ users { pw } }"))
        self.assertIn("(none) is not in the route's allow-list", record["reason"])

    @defer.inlineCallbacks
    def test_variables_schema(self):
        proto = yield self.connect_gql()
        record = yield self.assert_closed_1008(proto, self.subscribe("SendMessage", "mutation SendMessage { x }",
                                                                     {"text": "y" * 51}))
        self.assertEqual(record["param"], "graphql.variables.text")


class CommandLineTests(unittest.TestCase):
    """The installed commands: check-config covers rule files; inspect shows which rules matched."""

    def run_wsfw(self, *args, stdin=b""):
        return subprocess.run([support.venv_tool("wsfw"), *args], input=stdin, capture_output=True, timeout=120)

    def test_check_config_and_inspect(self):
        import shutil

        folder = tempfile.mkdtemp(prefix="wsfw-policy-cli-")
        self.addCleanup(shutil.rmtree, folder)
        os.makedirs(os.path.join(folder, "rules.d"))
        main = os.path.join(folder, "wsfw.ini")
        with open(main, "w") as f:
            f.write("[listen:a]\nendpoint = tcp:0\n[route:hub]\nupstream = ws://127.0.0.1:1\n"
                    "[inspection]\nrules = rules.d/*.ini\n")
        bad = os.path.join(folder, "rules.d", "hub.ini")
        with open(bad, "w") as f:
            f.write('[rule:no-delete]\nwhen = signalr.target = "DeleteUser"\naction = block\n')
        result = self.run_wsfw("check-config", main)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{bad}: [rule:no-delete] when: '=' is not an operator (did you mean '==' or '!='?)",
                      result.stderr.decode())
        with open(bad, "w") as f:
            f.write('[rule:no-delete]\nwhen = signalr.target == "DeleteUser"\naction = block\ntag = admin\n')
        result = self.run_wsfw("check-config", main)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"1 rule(s), 0 positive model(s) from 1 rule file(s)", result.stdout)
        result = self.run_wsfw("inspect", "--config", main, "--escaped",
                               stdin=b'{"type":1,"target":"Send","arguments":["hi"]}\\x1e\n'
                                     b'{"type":1,"target":"DeleteUser","arguments":[1]}\\x1e\n')
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("rule: no-delete block param=signalr.target", out)
        self.assertIn("verdict: BLOCK (rule no-delete)", out)
        self.assertIn("2 message(s), 1 would be blocked", out)
        self.assertEqual(out.count("rule: "), 1)

