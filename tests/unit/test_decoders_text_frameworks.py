"""Framework decoders for text protocols: STOMP (and SockJS around it), GraphQL over WebSocket,
JSON-RPC, ActionCable and Phoenix channels.

Client messages come from the real client libraries where there is one: stomper (STOMP 1.0 and
1.1 frame builders), gql (its graphql-transport-ws / subscriptions-transport-ws transport and its
Absinthe Phoenix-channel transport, driven over an in-memory connection so the exact text they
send is captured), jsonrpcclient (request/notification builders). The rest is built to the
documented wire format, cited where it is built.
"""

from __future__ import annotations

import asyncio
import json

import graphql
import jsonrpcclient
import pytest
import stomper
import stomper.stomp_10
from gql import Client, GraphQLRequest
from gql.transport.common.adapters.connection import AdapterConnection
from gql.transport.phoenix_channel_websockets import PhoenixChannelWebsocketsTransport
from gql.transport.websockets_protocol import WebsocketsProtocolTransportBase
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from wsfw.decoders import ConnectionState, IDecoder, Limits, decode_message, registry, select
from wsfw.decoders.graphqlws import operation_name
from tests.unit.decoded_checks import assert_sane

LIMITS = Limits()
XSS = "<script>alert(1)</script>"
NAMES = ("stomp", "graphqlws", "jsonrpc", "actioncable", "phoenix")
DEC = {name: registry()[name] for name in NAMES}


def dec(name, text, state=None, limits=LIMITS, binary=False):
    payload = text if isinstance(text, bytes) else text.encode("utf-8")
    return DEC[name].decode(payload, binary, limits, state)


def params(d):
    return dict(d.params)


def auto(text, state=None):
    payload = text if isinstance(text, bytes) else text.encode("utf-8")
    return decode_message(payload, False, "auto", LIMITS, state if state is not None else ConnectionState())


# -- registration -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_provides_idecoder(name):
    assert verifyObject(IDecoder, DEC[name])
    assert DEC[name].name == name


@pytest.mark.parametrize(
    "subprotocol, expected",
    [
        ("v10.stomp", "stomp"),
        ("v11.stomp", "stomp"),
        ("V12.STOMP", "stomp"),
        ("stomp", "stomp"),
        ("graphql-transport-ws", "graphqlws"),
        ("graphql-ws", "graphqlws"),
        ("actioncable-v1-json", "actioncable"),
        ("actioncable-unsupported", "actioncable"),
        ("something-else", "json"),
    ],
)
def test_select_by_subprotocol(subprotocol, expected):
    """The negotiated subprotocol picks the decoder before the route's framing."""
    assert select("json", "/ws", "", subprotocol) == expected


# -- STOMP ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame, command, event",
    [
        (stomper.send("/queue/chat", "hello"), "SEND", "/queue/chat"),
        (stomper.subscribe("/topic/news", "sub-0", ack="client"), "SUBSCRIBE", "/topic/news"),
        (stomper.unsubscribe("sub-0"), "UNSUBSCRIBE", "UNSUBSCRIBE"),
        (stomper.connect("alice", "secret", "broker", (10000, 10000)), "CONNECT", "CONNECT"),
        (stomper.ack("m-1", "sub-0", "tx-1"), "ACK", "ACK"),
        (stomper.nack("m-1", "sub-0"), "NACK", "NACK"),
        (stomper.begin("tx-1"), "BEGIN", "BEGIN"),
        (stomper.commit("tx-1"), "COMMIT", "COMMIT"),
        (stomper.abort("tx-1"), "ABORT", "ABORT"),
        (stomper.disconnect("r-1"), "DISCONNECT", "DISCONNECT"),
        (stomper.stomp_10.connect("alice", "secret"), "CONNECT", "CONNECT"),
    ],
)
def test_stomp_stomper_frames(frame, command, event):
    d = dec("stomp", frame, ConnectionState())
    assert d.format == "stomp" and d.error is None and d.truncated is None
    assert d.event == event
    assert params(d)["stomp.command"] == command
    assert params(d)["raw"] == frame


def test_stomp_frame_params():
    d = dec("stomp", stomper.send("/queue/chat", XSS, transactionid="tx-7"))
    assert d.params == (
        ("stomp.command", "SEND"),
        ("stomp.destination", "/queue/chat"),
        ('stomp.headers["content-type"]', "text/plain"),
        ("stomp.headers.transaction", "tx-7"),
        ("stomp.body", XSS),
        ("raw", stomper.send("/queue/chat", XSS, transactionid="tx-7")),
    )
    connect = params(dec("stomp", stomper.connect("alice", "secret", "broker", (1, 2))))
    assert connect['stomp.headers["heart-beat"]'] == "1,2"
    assert connect["stomp.headers.login"] == "alice"


def test_stomp_frame_built_with_stomper_frame():
    """stomper.Frame().pack() (STOMP 1.1 MESSAGE from a broker), with a custom header."""
    f = stomper.Frame()
    f.cmd = "MESSAGE"
    f.headers = {"destination": "/topic/a", "message-id": "007", "x_trace": "abc", "$where": "1"}
    f.body = "news"
    d = dec("stomp", f.pack())
    p = params(d)
    assert d.event == "/topic/a" and d.error is None
    assert p['stomp.headers["message-id"]'] == "007"
    assert p["stomp.headers.x_trace"] == "abc"
    # a non-identifier, non-standard header name is also a param of its own, as JSON keys are
    assert p['stomp.headers["$where"]<key>'] == "$where"


def test_stomp_stomp10_send_keeps_value_verbatim():
    """STOMP 1.0 (stomper.stomp_10 writes "destination: /q"); values are not trimmed (1.1+)."""
    d = dec("stomp", stomper.stomp_10.send("/queue/a", "hi"))
    assert params(d)["stomp.destination"] == " /queue/a" and params(d)["stomp.body"] == "hi"


def test_stomp_frame_without_blank_line_before_nul():
    """stomper's DISCONNECT ends its headers with the NUL directly; decoded leniently."""
    d = dec("stomp", stomper.disconnect("r-1") + stomper.send("/q", "x"))
    assert d.error is None and params(d)["stomp[0].headers.receipt"] == "r-1"
    assert params(d)["stomp[1].body"] == "x"


def test_stomp_several_frames_in_one_message():
    text = stomper.subscribe("/topic/a", "0") + "\n\r\n" + stomper.send("/queue/b", XSS)
    d = dec("stomp", text)
    p = params(d)
    assert d.error is None and d.event == "/topic/a"
    assert p["stomp[0].command"] == "SUBSCRIBE" and p["stomp[0].destination"] == "/topic/a"
    assert p["stomp[1].command"] == "SEND" and p["stomp[1].body"] == XSS
    assert "stomp.command" not in p


def test_stomp_frame_split_across_two_messages_at_every_point():
    frame = stomper.send("/queue/chat", "{\"text\": \"%s\"}" % XSS, content_type="application/json").encode()
    frame = frame.rstrip(b"\n")  # every cut below falls inside the frame
    for cut in range(1, len(frame)):
        state = ConnectionState()
        first = DEC["stomp"].decode(frame[:cut], False, LIMITS, state)
        assert first.error is None, (cut, first)
        second = DEC["stomp"].decode(frame[cut:], False, LIMITS, state)
        assert second.error is None, (cut, second)
        assert params(second)["stomp.body.text"] == XSS, cut
        assert second.event == "/queue/chat"
        assert "stomp" not in state.extra
        # the unfinished part was decoded too: its bytes are params, not only raw
        assert any(p != "raw" for p, _ in first.params)


def test_stomp_partial_frame_params():
    state = ConnectionState()
    d = dec("stomp", "SEND\ndestination:/q\ncontent-type:text/pl", state)
    assert d.event == "/q" and d.error is None
    assert params(d)["stomp.partial"] == "content-type:text/pl"
    d = dec("stomp", "ain\n\nhello <scr", state)
    assert params(d)["stomp.body"] == "hello <scr"
    d = dec("stomp", "ipt> and more", state)  # more body only: just this message's part
    assert params(d) == {"stomp.body": "ipt> and more"} and d.event == "/q"
    d = dec("stomp", "\x00", state)
    assert params(d)["stomp.body"] == "hello <script> and more" and state.extra == {}


def test_stomp_split_frame_buffer_is_bounded():
    limits = Limits(max_expanded_bytes=64)
    state = ConnectionState()
    d = dec("stomp", "SEND\ndestination:/q\n\n" + "a" * 30, state, limits)
    assert d.truncated is None and "stomp" in state.extra
    d = dec("stomp", "b" * 40, state, limits)  # the frame would outgrow the bound
    assert d.truncated == "size"
    assert "stomp" not in state.extra
    assert_sane(d, limits)


def test_stomp_incomplete_frame_without_state_is_an_error():
    d = dec("stomp", "SEND\ndestination:/q\n\nno terminator", None)
    assert d.error == "invalid stomp frame: incomplete frame"
    assert params(d)["stomp.body"] == "no terminator" and params(d)["raw"]


@pytest.mark.parametrize("beat", ["\n", "\r\n", "\n\n"])
def test_stomp_heart_beats(beat):
    d = dec("stomp", beat, ConnectionState())
    assert d.error is None and d.event is None and d.params == (("raw", beat),)


def test_stomp_header_escaping():
    """STOMP 1.2 escapes \\r \\n \\c \\\\ in SEND headers; CONNECT headers are taken verbatim."""
    d = dec("stomp", "SEND\ndestination:/a\\cb\nx\\cname:line1\\nline2\\r\\\\end\\t\n\n\x00")
    p = params(d)
    assert p["stomp.destination"] == "/a:b" and d.event == "/a:b"
    assert p['stomp.headers["x:name"]'] == "line1\nline2\r\\end\\t"  # undefined \t kept literal
    assert p['stomp.headers["x:name"]<key>'] == "x:name"
    d = dec("stomp", "CONNECT\nlogin:a\\cb\n\n\x00")
    assert params(d)["stomp.headers.login"] == "a\\cb"


def test_stomp_content_length_body_with_nul():
    body = b"bin\x00ary\x00<script>"
    frame = b"SEND\ndestination:/q\ncontent-length:%d\n\n%s\x00\n" % (len(body), body)
    d = dec("stomp", frame)
    assert d.error is None and params(d)["stomp.body"] == body.decode()
    two = frame + b"SEND\ndestination:/r\n\nx\x00"
    assert params(dec("stomp", two))["stomp[1].destination"] == "/r"


def test_stomp_json_body_by_content_type():
    body = json.dumps({"user": {"name": XSS}, "$ne": 1})
    d = dec("stomp", stomper.send("/app/chat", body, content_type="application/json;charset=UTF-8"))
    p = params(d)
    assert p["stomp.body.user.name"] == XSS
    assert p['stomp.body["$ne"]<key>'] == "$ne"
    assert "stomp.body" not in p
    d = dec("stomp", stomper.send("/app/chat", body, content_type="application/vnd.api+json"))
    assert params(d)["stomp.body.user.name"] == XSS
    # text bodies are one value, with nested encodings followed (here JSON in the text)
    d = dec("stomp", stomper.send("/app/chat", body))
    assert params(d)["stomp.body"] == body and params(d)["stomp.body<json>.user.name"] == XSS
    d = dec("stomp", stomper.send("/app/chat", "q=%3Cscript%3E"))
    assert params(d)["stomp.body<url>"] == "q=<script>"
    # a JSON content-type with a body that is not JSON: still the whole text
    d = dec("stomp", stomper.send("/app/chat", "{oops", content_type="application/json"))
    assert params(d)["stomp.body"] == "{oops" and d.error is None


def _sockjs_server(*frames):
    # SockJS protocol (sockjs/sockjs-protocol, sockjs-protocol.py): the server sends 'o' on
    # open, 'h' heartbeats, 'a' + a JSON array of messages, 'c' + [code, "reason"] to close.
    return "a" + json.dumps(list(frames))


def test_stomp_over_sockjs_server_frames():
    # what Spring's SockJS + STOMP broker relay sends (stomp.js message frames)
    msg = ("MESSAGE\ndestination:/topic/greetings\ncontent-type:application/json\n"
           "subscription:sub-0\nmessage-id:abc-1\ncontent-length:27\n\n{\"content\":\"Hello, <b>!\"}  \x00")
    d = dec("stomp", _sockjs_server(msg, stomper.send("/topic/x", XSS)), ConnectionState())
    p = params(d)
    assert d.error is None and d.event == "/topic/greetings"
    assert p["stomp[0].body.content"] == "Hello, <b>!"
    assert p["stomp[1].body"] == XSS
    for frame in ("o", "h"):
        d = dec("stomp", frame, ConnectionState())
        assert d.error is None and d.params == (("raw", frame),)
    d = dec("stomp", 'c[3000,"Go away!"]')
    assert params(d) == {"sockjs.close.code": "3000", "sockjs.close.reason": "Go away!",
                         "raw": 'c[3000,"Go away!"]'}


def test_stomp_over_sockjs_client_frames_and_split():
    # the SockJS client sends a bare JSON array of strings over its websocket transport
    state = ConnectionState()
    frame = stomper.send("/app/chat", XSS)
    d = dec("stomp", json.dumps([frame[:12]]), state)
    assert d.error is None and "stomp" in state.extra
    d = dec("stomp", "h", state)  # a heartbeat between the two halves keeps the buffer
    assert "stomp" in state.extra
    d = dec("stomp", json.dumps([frame[12:]]), state)
    assert params(d)["stomp.body"] == XSS and d.event == "/app/chat"


def test_stomp_binary_messages():
    frame = b"SEND\ndestination:/q\ncontent-type:application/octet-stream\ncontent-length:3\n\n\xff\x00\xfe\x00"
    d = dec("stomp", frame, binary=True)
    assert d.format == "stomp" and d.error is None
    assert params(d)["stomp.body"] == "\xff\x00\xfe"  # latin-1 view of non-UTF-8 bytes
    d = dec("stomp", b"\x89PNG\r\n\x1a\n", binary=True)
    assert d.format == "raw" and d.error is None


@pytest.mark.parametrize(
    "text, error",
    [
        ("garbage", "invalid stomp frame: unknown command"),
        ("send\ndestination:/q\n\n\x00", "invalid stomp frame: unknown command"),
        ("SEND\nno colon here\n\nbody\x00", "invalid stomp frame: header without ':'"),
        ("SEND\ncontent-length:2\n\nabc\x00", "invalid stomp frame: no NUL after content-length octets"),
        ("SEND\ncontent-length:-1\n\nabc\x00", "invalid stomp frame: content-length '-1'"),
        ("a[broken", "invalid sockjs frame"),
        ("a[1,2]", "invalid sockjs frame: non-string message"),
        ("ohno", "invalid sockjs frame"),
        ("c{}", "invalid sockjs close frame"),
    ],
)
def test_stomp_malformed(text, error):
    d = dec("stomp", text, ConnectionState())
    assert d.error == error
    assert params(d)["raw"] == text
    assert_sane(d)


def test_stomp_frames_before_a_malformed_one_are_kept():
    d = dec("stomp", stomper.send("/q", "ok") + "JUNK\n\n\x00")
    assert params(d)["stomp.body"] == "ok"
    assert d.error == "invalid stomp frame: unknown command"


def test_stomp_invalid_utf8():
    d = dec("stomp", b"SEND\ndestination:/q\n\n\xff<script>\x00")
    assert d.error == "invalid utf-8" and params(d)["stomp.body"] == "\ufffd<script>"


def test_stomp_bounds():
    many = "".join(stomper.send("/q%d" % i, "x" * 10) for i in range(50))
    limits = Limits(max_params=20)
    d = dec("stomp", many, limits=limits)
    assert d.truncated == "params"
    assert_sane(d, limits)
    deep = stomper.send("/q", "[" * 50 + "]" * 50, content_type="application/json")
    d = dec("stomp", deep, limits=Limits(max_depth=4))
    assert d.truncated == "depth"


@pytest.mark.parametrize(
    "text",
    [
        stomper.connect("u", "p", "h"),
        "\nSEND\r\ndestination:/q\r\n\r\nx\x00",
        _sockjs_server(stomper.send("/q", "x")),
        json.dumps([stomper.send("/q", "x")]),
        'a["CONNECTED\\r\\nversion:1.2\\r\\n\\r\\n\\u0000"]',
    ],
)
def test_stomp_sniffed_on_auto_routes(text):
    state = ConnectionState()
    d = auto(text, state)
    assert d.format == "stomp" and d.error is None and state.framing == "stomp"
    assert auto("\n", state).format == "stomp"  # the connection stays STOMP


@pytest.mark.parametrize(
    "text", ["SENDER\nx\x00", "hello\nSEND\n\x00", '["SEND me"]', "SEND", 'a["hi"]',
             "ERROR\nthe build failed again", '["SEND\\ndestination:/q\\n\\nno terminator"]'],
)
def test_stomp_not_sniffed(text):
    assert auto(text).format != "stomp"


# -- GraphQL over WebSocket ---------------------------------------------------------------------

CHAT_QUERY = "subscription OnChat($q: String!) { chat(filter: $q) { id text author } }"


class _Recorder(AdapterConnection):
    """An in-memory WebSocket for gql: records what the client sends, answers from a script."""

    def __init__(self, subprotocol, replies):
        super().__init__("ws://test/graphql", None)
        self.sent = []
        self._subprotocol = subprotocol
        self._replies = list(replies)

    async def connect(self):
        pass

    async def send(self, message):
        self.sent.append(message)

    async def receive(self):
        while not self._replies:
            await asyncio.sleep(0.001)
        reply = self._replies.pop(0)
        return reply(self.sent) if callable(reply) else reply

    async def close(self):
        pass

    @property
    def response_headers(self):
        return {"Sec-WebSocket-Protocol": self._subprotocol} if self._subprotocol else {}


class _GQLTransport(WebsocketsProtocolTransportBase):
    def __init__(self, adapter, **kwargs):
        self.adapter = adapter
        super().__init__(adapter=adapter, **kwargs)


def _gql_session(subprotocol, operation_name=None):
    """What gql's websockets transport sends for one subscription in ``subprotocol``."""
    data_type = "next" if subprotocol == "graphql-transport-ws" else "data"
    replies = [json.dumps({"type": "connection_ack"}),
               json.dumps({"type": data_type, "id": "1", "payload": {"data": {"chat": {"id": "1"}}}}),
               json.dumps({"type": "complete", "id": "1"})]
    adapter = _Recorder(subprotocol, replies)

    async def run():
        async with Client(transport=_GQLTransport(adapter, init_payload={"authToken": "t0k"})) as session:
            request = GraphQLRequest(CHAT_QUERY, variable_values={"q": XSS}, operation_name=operation_name)
            async for _ in session.subscribe(request):
                pass

    asyncio.run(run())
    return adapter.sent


@pytest.mark.parametrize("subprotocol, op_type", [("graphql-transport-ws", "subscribe"), ("graphql-ws", "start")])
def test_graphqlws_gql_client_messages(subprotocol, op_type):
    sent = _gql_session(subprotocol)
    init, op = sent[0], sent[1]
    d = dec("graphqlws", init)
    assert d.format == "graphqlws" and d.error is None and d.event == "connection_init"
    assert params(d)["graphql.payload.authToken"] == "t0k"
    d = dec("graphqlws", op)
    p = params(d)
    assert d.error is None and d.event == "OnChat"
    assert p["graphql.type"] == op_type and p["graphql.id"] == "1"
    assert p["graphql.query"] == graphql.print_ast(graphql.parse(CHAT_QUERY))
    assert p["graphql.variables.q"] == XSS  # the attack string is a param value
    for message in sent[2:]:  # connection_terminate (legacy) / complete
        assert dec("graphqlws", message).error is None
    # both subprotocols are sniffed on auto routes from the first client message
    state = ConnectionState()
    assert auto(init, state).format == "graphqlws" and state.framing == "graphqlws"


def test_graphqlws_operation_name_wins():
    sent = _gql_session("graphql-transport-ws", operation_name="OnChat")
    assert dec("graphqlws", sent[1]).event == "OnChat"
    msg = {"type": "subscribe", "id": "2", "payload": {
        "query": "query A { a } query B { b }", "operationName": "B",
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}, "other": "x"}}
    d = dec("graphqlws", json.dumps(msg))
    p = params(d)
    assert d.event == "B" and p["graphql.operationName"] == "B"
    assert p["graphql.extensions.persistedQuery.sha256Hash"] == "abc"
    assert p["graphql.payload.other"] == "x"


def test_graphqlws_server_messages():
    # graphql-transport-ws PROTOCOL.md (enisdenjo/graphql-ws): next/error/complete/ping/pong
    cases = [
        ({"type": "connection_ack", "payload": {"server": "v1"}}, "connection_ack", "graphql.payload.server"),
        ({"type": "next", "id": "1", "payload": {"data": {"chat": {"text": "hi"}}}}, "next",
         "graphql.payload.data.chat.text"),
        ({"type": "error", "id": "1", "payload": [{"message": "bad"}]}, "error", "graphql.payload[0].message"),
        ({"type": "ping", "payload": {"t": "1"}}, "ping", "graphql.payload.t"),
        ({"type": "ka"}, "ka", "graphql.type"),
        ({"type": "connection_error", "payload": {"message": "no"}}, "connection_error", "graphql.payload.message"),
    ]
    for msg, event, path in cases:
        d = dec("graphqlws", json.dumps(msg))
        assert d.error is None and d.event == event and path in params(d), msg


@pytest.mark.parametrize(
    "query, name",
    [
        (CHAT_QUERY, "OnChat"),
        (graphql.print_ast(graphql.parse(CHAT_QUERY)), "OnChat"),
        ("{ a }", None),
        ("query { a }", None),
        ("query ($a: Int) { a(x: $a) }", None),
        ("# leading comment\n  mutation  Save { save }", "Save"),
        ('fragment query on Q { s(x: "}{") } query Real { ...query }', "Real"),
        ('"""described""" query D { a }', "D"),
        ("query", None),
        ("", None),
        ("{ unbalanced", None),
    ],
)
def test_graphql_operation_name(query, name):
    assert operation_name(query) == name


def test_graphqlws_sniffing():
    assert auto(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": "{ a }"}})).format == "graphqlws"
    assert auto(json.dumps({"type": "ka"})).format == "graphqlws"
    # generic chat messages with a "type" are left to the JSON decoder
    assert auto(json.dumps({"type": "ping"})).format == "json"
    assert auto(json.dumps({"type": "subscribe", "channel": "x"})).format == "json"
    assert auto(json.dumps({"type": "chat", "text": "hi"})).format == "json"


@pytest.mark.parametrize(
    "text, error",
    [
        ("not json", "invalid json"),
        ("[1, 2]", "graphql-ws message is not an object"),
        ('{"type": "bogus", "payload": {"a": "b"}}', "unknown graphql-ws message type"),
        ('{"id": "1"}', "unknown graphql-ws message type"),
    ],
)
def test_graphqlws_malformed(text, error):
    d = dec("graphqlws", text)
    assert d.error == error and params(d)["raw"] == text


def test_graphqlws_binary_falls_back_like_json():
    assert dec("graphqlws", b"\xff\xfe", binary=True).format == "raw"
    msg = json.dumps({"type": "connection_init"}).encode()
    assert dec("graphqlws", msg, binary=True).format == "graphqlws"


# -- JSON-RPC --------------------------------------------------------------------------------


def test_jsonrpc_jsonrpcclient_request():
    text = jsonrpcclient.request_json("chat.send", params={"room": "lobby", "text": XSS})
    d = dec("jsonrpc", text)
    p = params(d)
    assert d.format == "jsonrpc" and d.error is None and d.event == "chat.send"
    assert p["jsonrpc.method"] == "chat.send" and p["jsonrpc.params.text"] == XSS
    assert "jsonrpc.id" in p and "jsonrpc.jsonrpc" not in p  # the "2.0" marker is no param
    d = dec("jsonrpc", jsonrpcclient.notification_json("log", params=[1, "two"]))
    assert params(d)["jsonrpc.params[1]"] == "two" and "jsonrpc.id" not in params(d)


def test_jsonrpc_batch():
    batch = json.dumps([jsonrpcclient.request("sum", params=[1, 2]), jsonrpcclient.notification("ping"),
                        jsonrpcclient.request("echo", params={"s": XSS})])
    d = dec("jsonrpc", batch)
    p = params(d)
    assert d.error is None and d.event == "sum"
    assert p["jsonrpc[0].method"] == "sum" and p["jsonrpc[0].params[1]"] == "2"
    assert p["jsonrpc[1].method"] == "ping" and p["jsonrpc[2].params.s"] == XSS
    assert auto(batch).format == "jsonrpc"


def test_jsonrpc_responses():
    # JSON-RPC 2.0 spec, section 5 (response object) and 5.1 (error object)
    ok = json.dumps({"jsonrpc": "2.0", "result": {"rows": [XSS]}, "id": 1})
    d = dec("jsonrpc", ok)
    assert d.event is None and params(d)["jsonrpc.result.rows[0]"] == XSS
    err = json.dumps([{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found",
                                                    "data": {"method": "x"}}, "id": "1"}])
    p = params(dec("jsonrpc", err))
    assert p["jsonrpc[0].error.code"] == "-32601" and p["jsonrpc[0].error.data.method"] == "x"
    assert auto(ok).format == "jsonrpc"


def test_jsonrpc_1_0_tolerated():
    d = dec("jsonrpc", json.dumps({"method": "echo", "params": ["hi"], "id": 7}))
    assert d.error is None and d.event == "echo" and params(d)["jsonrpc.params[0]"] == "hi"
    d = dec("jsonrpc", json.dumps({"result": "x", "error": None, "id": 7}))
    assert d.error is None and params(d)["jsonrpc.error"] == "null"
    assert dec("jsonrpc", json.dumps({"jsonrpc": "1.5", "method": "m"})).error is None


@pytest.mark.parametrize(
    "text, error",
    [
        ("{oops", "invalid json"),
        ("[]", "invalid json-rpc message: empty batch"),
        ('"hello"', "invalid json-rpc message: not an object or array"),
        ('{"jsonrpc": "2.0", "id": 1}', "invalid json-rpc message: no method, result or error"),
        ('{"jsonrpc": "2.0", "method": 5}', "invalid json-rpc message: method is not a string"),
        ('[{"jsonrpc": "2.0", "method": "a"}, 3]',
         "invalid json-rpc message: batch element is not an object (at [1])"),
    ],
)
def test_jsonrpc_malformed(text, error):
    d = dec("jsonrpc", text)
    assert d.error == error and params(d)["raw"] == text


def test_jsonrpc_not_sniffed():
    assert auto(json.dumps({"method": "echo", "params": []})).format == "json"  # 1.0: not claimed
    assert auto(json.dumps([{"jsonrpc": "2.0", "method": "a"}, 1])).format == "json"
    assert auto(json.dumps({"jsonrpc": "2.0"})).format == "json"


# -- ActionCable ------------------------------------------------------------------------------
# Wire format of rails/rails actioncable/app/javascript/action_cable/subscription.js:
# subscribe sends {command: "subscribe", identifier: JSON.stringify(params)}, perform(action, data)
# sends {command: "message", identifier, data: JSON.stringify({...data, action})}; the server
# (lib/action_cable/connection/base.rb, channel/base.rb) sends welcome/ping/confirm_subscription
# typed messages and broadcasts {identifier, message}.


def _cable_identifier(**params):
    return json.dumps({"channel": "ChatChannel", **params})


def test_actioncable_client_messages():
    ident = _cable_identifier(room="lobby")
    d = dec("actioncable", json.dumps({"command": "subscribe", "identifier": ident}))
    p = params(d)
    assert d.format == "actioncable" and d.error is None and d.event == "ChatChannel"
    assert p["actioncable.command"] == "subscribe"
    assert p["actioncable.identifier.channel"] == "ChatChannel" and p["actioncable.identifier.room"] == "lobby"
    message = json.dumps({"command": "message", "identifier": ident,
                          "data": json.dumps({"body": XSS, "action": "speak"})})
    d = dec("actioncable", message)
    assert d.event == "ChatChannel#speak"
    assert params(d)["actioncable.data.body"] == XSS and params(d)["actioncable.data.action"] == "speak"
    state = ConnectionState()
    assert auto(message, state).format == "actioncable" and state.framing == "actioncable"


def test_actioncable_server_messages():
    ident = _cable_identifier()
    cases = [
        ({"type": "welcome"}, "welcome"),
        ({"type": "ping", "message": 1700000000}, "ping"),
        ({"type": "confirm_subscription", "identifier": ident}, "ChatChannel"),
        ({"type": "disconnect", "reason": "unauthorized", "reconnect": False}, "disconnect"),
        ({"identifier": ident, "message": {"user": "bob", "body": XSS}}, "ChatChannel"),
    ]
    for msg, event in cases:
        d = dec("actioncable", json.dumps(msg))
        assert d.error is None and d.event == event, msg
    assert params(d)["actioncable.message.body"] == XSS


def test_actioncable_malformed():
    text = json.dumps({"command": "message", "identifier": "{not json", "data": "%3Cscript%3E"})
    d = dec("actioncable", text)
    p = params(d)
    assert d.error == "actioncable identifier is not a JSON string"
    assert p["actioncable.identifier"] == "{not json"
    assert p["actioncable.data<url>"] == "<script>"  # kept as a string, nested encodings followed
    assert dec("actioncable", "[1]").error == "actioncable message is not an object"
    assert dec("actioncable", "nope").error == "invalid json"


# -- Phoenix channels ------------------------------------------------------------------------


def _absinthe_session():
    """What gql's Phoenix channel (Absinthe) transport sends for one query: V1 objects."""
    def reply(sent):
        ref = json.loads(sent[-1])["ref"]
        return json.dumps({"topic": "__absinthe__:control", "event": "phx_reply", "ref": ref,
                           "payload": {"status": "ok", "response": {"data": {"a": 1}} if ref > 1 else {}}})

    adapter = _Recorder(None, [reply, reply])
    transport = PhoenixChannelWebsocketsTransport(url="ws://test/socket/websocket")
    transport.adapter = adapter

    async def run():
        async with Client(transport=transport) as session:
            await session.execute(GraphQLRequest("query Q($x: String) { a(x: $x) }", variable_values={"x": XSS}))

    asyncio.run(run())
    return adapter.sent


def test_phoenix_v1_from_gql_absinthe_transport():
    join, doc, leave = _absinthe_session()
    d = dec("phoenix", join)
    assert d.format == "phoenix" and d.error is None and d.event == "phx_join"
    assert params(d)["phoenix.topic"] == "__absinthe__:control" and params(d)["phoenix.ref"] == "1"
    d = dec("phoenix", doc)
    p = params(d)
    assert d.event == "doc" and p["phoenix.payload.variables.x"] == XSS
    assert p["phoenix.payload.query"].startswith("query Q(")
    assert dec("phoenix", leave).event == "phx_leave"
    assert auto(join).format == "phoenix"


def test_phoenix_v2_arrays():
    # phoenixframework/phoenix assets/js/phoenix/serializer.js: JSON.stringify([join_ref, ref,
    # topic, event, payload]); the server's replies and broadcasts have the same shape.
    push = json.dumps(["3", "4", "room:lobby", "new_msg", {"body": XSS}])
    d = dec("phoenix", push)
    assert d.params[:5] == (("phoenix.topic", "room:lobby"), ("phoenix.event", "new_msg"),
                            ("phoenix.ref", "4"), ("phoenix.join_ref", "3"), ("phoenix.payload.body", XSS))
    assert d.event == "new_msg" and d.error is None
    heartbeat = json.dumps([None, "5", "phoenix", "heartbeat", {}])
    d = dec("phoenix", heartbeat)
    assert "phoenix.join_ref" not in params(d) and d.event == "heartbeat"
    broadcast = json.dumps([None, None, "room:lobby", "new_msg", {"body": "hi"}])
    state = ConnectionState()
    for text in (push, heartbeat, broadcast):
        assert auto(text, state).format == "phoenix"


@pytest.mark.parametrize(
    "obj",
    [
        ["a", "b", "c", "d", "e"],
        ["1", "2", "t", 5, {}],
        [1, 2, "t", "e", {}],
        ["1", "2", "t", "e"],
        {"topic": "t", "event": "e"},
        {"event": "e", "payload": {}, "ref": None},
    ],
)
def test_phoenix_not_sniffed(obj):
    assert auto(json.dumps(obj)).format == "json"


@pytest.mark.parametrize(
    "text, error",
    [
        ('["1", "2", "t", 5, {}]', "invalid phoenix message"),
        ('{"event": "e"}', "invalid phoenix message: missing topic or payload"),
        ('"x"', "invalid phoenix message"),
        ("[", "invalid json"),
    ],
)
def test_phoenix_malformed(text, error):
    d = dec("phoenix", text)
    assert d.error == error and params(d)["raw"] == text


# -- through the real inspection pipeline ----------------------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    from wsfw import config_ini
    from wsfw.inspection.audit import Audit
    from wsfw.inspection.pipeline import build_pipelines

    config = config_ini.load("(defaults)", "[listen:x]\nendpoint = tcp:0\n[route:r]\nupstream = ws://127.0.0.1:1\n")
    return next(iter(build_pipelines(config, Audit(None)).values()))


def _verdict(pipeline, text, subprotocol):
    from wsfw.hook import MessageView

    view = MessageView(conn_id="c1", route="r", peer="127.0.0.1:1", direction="client", index=1,
                       payload=text.encode(), is_binary=False, subprotocol=subprotocol, path="/ws")
    try:
        return pipeline.inspect_message(view)
    finally:
        pipeline.connection_closed("c1")


@pytest.mark.parametrize(
    "text, subprotocol",
    [
        (stomper.send("/queue/chat", XSS), "v12.stomp"),
        (json.dumps({"type": "subscribe", "id": "1", "payload": {"query": CHAT_QUERY, "variables": {"q": XSS}}}),
         "graphql-transport-ws"),
        (json.dumps({"command": "message", "identifier": _cable_identifier(),
                     "data": json.dumps({"action": "speak", "body": XSS})}), "actioncable-v1-json"),
        (jsonrpcclient.request_json("say", params=[XSS]), None),
        (json.dumps(["1", "2", "room:1", "msg", {"body": XSS}]), None),
    ],
)
def test_pipeline_blocks_attack_in_framework_field(pipeline, text, subprotocol):
    assert _verdict(pipeline, text, subprotocol).action == "close"


@pytest.mark.parametrize(
    "text, subprotocol",
    [
        (json.dumps({"type": "subscribe", "id": "1", "payload": {"query": CHAT_QUERY, "variables": {"q": "hi"}}}),
         "graphql-transport-ws"),
        (json.dumps({"command": "message", "identifier": _cable_identifier(),
                     "data": json.dumps({"action": "speak", "body": "hi"})}), "actioncable-v1-json"),
        (jsonrpcclient.request_json("say", params=["hi"]), None),
        (json.dumps(["1", "2", "room:1", "msg", {"body": "hi"}]), None),
    ],
)
def test_pipeline_forwards_benign_framework_messages(pipeline, text, subprotocol):
    assert _verdict(pipeline, text, subprotocol).action == "forward"


def test_pipeline_forwards_benign_stomp(pipeline):
    assert _verdict(pipeline, stomper.send("/queue/chat", "hello there"), "v12.stomp").action == "forward"


# -- fuzzing: no exception escapes decode(), params stay well-formed and bounded -------------
# One test per decoder; each example is either random bytes (text or binary messages) or
# structure-aware messages of the decoder's protocol, split or not, with random Limits.

_limits = st.builds(Limits, max_depth=st.integers(0, 6), max_params=st.integers(1, 40),
                    max_expanded_bytes=st.integers(0, 400)) | st.just(LIMITS)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
_text = st.text(max_size=30)
_random_bytes = st.tuples(st.lists(st.binary(max_size=60), min_size=1, max_size=3), st.booleans())
_header = st.tuples(st.sampled_from(["destination", "content-type", "content-length", "x:y", "a\\cb", "id"])
                    | _text, _text)


@st.composite
def _stomp_stream(draw):
    out = []
    for _ in range(draw(st.integers(1, 3))):
        command = draw(st.sampled_from(["SEND", "MESSAGE", "CONNECT", "SUBSCRIBE", "ERROR", "BOGUS"]))
        headers = draw(st.lists(_header, max_size=4))
        body = draw(st.binary(max_size=30) | _text.map(lambda s: s.encode("utf-8", "surrogatepass")))
        if draw(st.booleans()):
            headers.append(("content-type", draw(st.sampled_from(["application/json", "text/plain"]))))
        if draw(st.booleans()):
            headers.append(("content-length", str(len(body) + draw(st.integers(-2, 2)))))
        eol = draw(st.sampled_from([b"\n", b"\r\n"]))
        head = eol.join([command.encode()] + [(k + ":" + v).encode("utf-8", "surrogatepass") for k, v in headers])
        out.append(head + eol + eol + body + b"\x00" + draw(st.sampled_from([b"", b"\n", b"\r\n\n"])))
    stream = b"".join(out)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=3)))
    pieces = [stream[i:j] for i, j in zip([0] + cuts, cuts + [len(stream)])]
    if draw(st.booleans()):  # SockJS client framing around every piece
        pieces = [json.dumps([p.decode("utf-8", "replace")]).encode() for p in pieces]
    return pieces


def _json_messages(strategy):
    return strategy.map(lambda obj: [json.dumps(obj).encode()])


_graphql_message = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "start", "next", "connection_init", "ka", "bogus"]) | _json},
    optional={"id": _json, "payload": st.fixed_dictionaries(
        {}, optional={"query": st.sampled_from([CHAT_QUERY, "{ a }", "query {"]) | _text,
                      "operationName": _json, "variables": _json, "extensions": _json, "x": _json}) | _json},
)
_jsonrpc_message = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0"]) | _json},
    optional={"method": _text | _json, "params": _json, "id": _json, "result": _json, "error": _json},
)
_cable_message = st.fixed_dictionaries(
    {"command": st.sampled_from(["subscribe", "message"]) | _json},
    optional={"identifier": _json.map(json.dumps) | _text | _json, "data": _json.map(json.dumps) | _text,
              "type": _text, "message": _json},
)
_phoenix_message = st.tuples(st.none() | st.integers(0, 99).map(str) | _json, st.none() | _text,
                             _text, _text, _json).map(list) | st.fixed_dictionaries(
    {"topic": _text | _json, "event": _text | _json, "payload": _json, "ref": _json}, optional={"join_ref": _json})

_STRUCTURED = {
    "stomp": _stomp_stream(),
    "graphqlws": _json_messages(_graphql_message | st.lists(_graphql_message, max_size=2)),
    "jsonrpc": _json_messages(_jsonrpc_message | st.lists(_jsonrpc_message | _json, max_size=3)),
    "actioncable": _json_messages(_cable_message),
    "phoenix": _json_messages(_phoenix_message),
}


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=200, deadline=None)
@given(data=st.data(), limits=_limits)
def test_fuzz(name, data, limits):
    chunks, binary = data.draw(_random_bytes | _STRUCTURED[name].map(lambda chunks: (chunks, False)))
    decoder = DEC[name]
    state = ConnectionState()
    for chunk in chunks:
        for s in (state, None):
            assert_sane(decoder.decode(chunk, binary, limits, s), limits)
    # sniffing hands a parsed object to decode_json(): no "decoder error" from there either
    d = decode_message(chunks[0], binary, "auto", limits, ConnectionState())
    assert_sane(d, limits)
    assert d.error is None or not d.error.startswith("decoder error"), d.error
