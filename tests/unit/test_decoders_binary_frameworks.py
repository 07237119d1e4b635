"""Framework decoders for SignalR, WAMP, MQTT and raw MessagePack / CBOR / BSON messages.

Frames come from the real client libraries: signalrcore's JSON and MessagePack hub protocols,
Autobahn's WAMP serializers (batched too) over its real message classes, and the bytes a real
paho-mqtt client writes to a loopback socket; msgpack.packb, cbor2.dumps and bson.encode for
the plain binary formats. Hand-built bytes are used only for malformed input and bombs.
"""

from __future__ import annotations

import datetime
import decimal
import json
import socket
import threading
import time
import uuid

import bson
import cbor2
import msgpack
import paho.mqtt.client as paho
import pytest
import txaio
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from signalrcore.messages.cancel_invocation_message import CancelInvocationMessage
from signalrcore.messages.close_message import CloseMessage
from signalrcore.messages.completion_message import CompletionMessage
from signalrcore.messages.invocation_message import InvocationMessage
from signalrcore.messages.ping_message import PingMessage
from signalrcore.messages.stream_invocation_message import StreamInvocationMessage
from signalrcore.messages.stream_item_message import StreamItemMessage
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from zope.interface.verify import verifyObject

from wsfw.decoders import ConnectionState, IDecoder, Limits, decode_message, registry, select
from wsfw.decoders import _binparse
from wsfw.decoders.wamp import SHAPES as WAMP_SHAPES
from tests.unit.decoded_checks import assert_sane

try:
    txaio.use_twisted()
except RuntimeError:  # another framework was chosen first: the serializers work either way
    pass

from autobahn.wamp import message as wamp_msg  # noqa: E402  (needs txaio's framework)
from autobahn.wamp import role as wamp_role  # noqa: E402
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer  # noqa: E402

LIMITS = Limits()
SQLI = "' OR 1=1--"
XSS = "<script>alert(1)</script>"
NAMES = ("signalr", "signalr-msgpack", "wamp", "wamp-msgpack", "wamp-cbor", "mqtt", "msgpack", "cbor", "bson")
DEC = {name: registry()[name] for name in NAMES}


def dec(name, payload, binary=True, state=None, limits=LIMITS):
    d = DEC[name].decode(payload, binary, limits, state)
    assert_sane(d, limits)
    return d


def auto(payload, binary, state):
    d = decode_message(payload, binary, "auto", LIMITS, state)
    assert_sane(d)
    return d


def params(d):
    return dict(d.params)


def has_raw(d, payload, binary=True):
    """``raw`` is present, or left out because the one other param already equals it."""
    text = payload.decode("latin-1" if binary else "utf-8", "replace")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    p = params(d)
    return p.get("raw") == text or list(p.values()) == [text]


# -- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registered_decoders_provide_the_interface(name):
    assert verifyObject(IDecoder, DEC[name])
    assert DEC[name].name == name


@pytest.mark.parametrize("subprotocol, name", [
    ("wamp.2.json", "wamp"), ("wamp.2.json.batched", "wamp"), ("WAMP.2.MSGPACK", "wamp-msgpack"),
    ("wamp.2.msgpack.batched", "wamp-msgpack"), ("wamp.2.cbor", "wamp-cbor"),
    ("wamp.2.cbor.batched", "wamp-cbor"), ("mqtt", "mqtt"), ("mqttv3.1", "mqtt"),
])
def test_subprotocol_selects_the_decoder(subprotocol, name):
    assert select("auto", "/ws", "", subprotocol) == name
    assert select("json", "/ws", "", subprotocol) == name  # the negotiated subprotocol wins


# -- MessagePack / CBOR / BSON ------------------------------------------------------------------

DOC = {
    "user": {"name": SQLI, "tags": ["a", XSS]},
    "q": json.dumps({"x": "1 union select 1"}),  # JSON in a string: followed
    "blob": "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",  # base64 text: followed
    "n": 42,
    "f": 1.5,
    "ok": True,
    "none": None,
}


@pytest.mark.parametrize("name, encode", [
    ("msgpack", msgpack.packb), ("cbor", cbor2.dumps), ("bson", bson.encode),
])
def test_binary_formats_are_walked_like_json(name, encode):
    d = dec(name, encode(DOC))
    p = params(d)
    assert d.format == name and d.error is None and d.truncated is None
    assert p[name + ".user.name"] == SQLI
    assert p[name + ".user.tags[1]"] == XSS
    assert p[name + ".q<json>.x"] == "1 union select 1"
    assert p[name + ".blob<b64>"] == XSS
    assert p[name + ".n"] == "42" and p[name + ".f"] == "1.5"
    assert p[name + ".ok"] == "true" and p[name + ".none"] == "null"
    assert "raw" in p


def test_msgpack_bytes_ext_and_non_string_keys():
    payload = msgpack.packb({1: b"text bytes", b"k": b"\xff\x00", "e": msgpack.ExtType(5, XSS.encode()),
                             "t": msgpack.Timestamp(1, 5), "dup": 1}, use_bin_type=True)
    p = params(dec("msgpack", payload))
    assert p['msgpack["1"]<key>'] == "1" and p['msgpack["1"]'] == "text bytes"
    assert p["msgpack.k"] == "\xff\x00"  # bytes: UTF-8 when valid, else latin-1
    assert p["msgpack.e"] == XSS and p["msgpack.t"] == "1.000000005"


def test_msgpack_duplicate_keys_stay_visible():
    # {"a": "benign", "a": <attack>}: a dict would keep one of them
    payload = b"\x82\xa1a\xa6benign\xa1a" + msgpack.packb(SQLI)
    assert [v for k, v in dec("msgpack", payload).params if k == "msgpack.a"] == ["benign", SQLI]


def test_cbor_tags_become_plain_values_and_run_nothing():
    value = [datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc), decimal.Decimal("1.5"),
             uuid.UUID(int=1), cbor2.CBORTag(35, "(a+)+$"), cbor2.CBORTag(36, "Content-Type: text/plain\n\nhi"),
             cbor2.CBORTag(9999, XSS), 2 ** 80]
    p = params(dec("cbor", cbor2.dumps(value, datetime_as_timestamp=False)))
    assert p["cbor[0]"] == "2024-01-02T00:00:00Z"
    assert p["cbor[1][0]"] == "-1" and p["cbor[1][1]"] == "15"
    assert p["cbor[3]"] == "(a+)+$"  # tag 35 (regex) is not compiled
    assert p["cbor[4]"].startswith("Content-Type")  # tag 36 (MIME) is not parsed
    assert p["cbor[5]"] == XSS  # unknown tag: its value
    # value sharing that would build a cycle (tag 28 around an array holding a tag-29 ref)
    d = dec("cbor", bytes.fromhex("d81c81d81d00"))
    assert d.error is None and params(d)["cbor[0]"] == "0"


def test_bson_types_become_text():
    oid = bson.ObjectId()
    doc = {"id": oid, "code": bson.Code("alert(1)"), "re": bson.Regex("^a.*", "i"), "i": bson.Int64(7),
           "bin": bson.Binary(XSS.encode(), 0), "d": datetime.datetime(2024, 1, 2),
           "dec": bson.Decimal128("1.25"), "ref": bson.DBRef("users", SQLI)}
    p = params(dec("bson", bson.encode(doc)))
    assert p["bson.id"] == str(oid) and p["bson.code"] == "alert(1)" and p["bson.re"] == "^a.*"
    assert p["bson.i"] == "7" and p["bson.bin"] == XSS and p["bson.d"] == "2024-01-02T00:00:00"
    assert p["bson.dec"] == "1.25" and p['bson.ref["$id"]'] == SQLI


def test_large_payloads_use_the_bounded_reader_with_the_same_params(monkeypatch):
    doc = {"items": [{"id": i, "text": "%d %s" % (i, XSS), "raw": b"\x00\x01"} for i in range(300)]}
    for name, payload in (("msgpack", msgpack.packb(doc)), ("cbor", cbor2.dumps(doc))):
        assert len(payload) > _binparse.SMALL
        by_reader = dec(name, payload).params
        monkeypatch.setattr(_binparse, "SMALL", 1 << 30)
        by_c = dec(name, payload).params
        monkeypatch.undo()
        assert by_reader == by_c


def test_text_message_on_a_binary_route_is_text():
    d = dec("msgpack", json.dumps({"a": XSS}).encode(), binary=False)
    assert d.error is None and params(d)["text<json>.a"] == XSS


@pytest.mark.parametrize("name, payload", [
    ("msgpack", b"\x93\x01\x02"),  # array of 3 with 2 items
    ("msgpack", b"\x92\x01\x02\x03"),  # extra data
    ("msgpack", b"\xc1"),  # never-used byte
    ("cbor", b"\x83\x01\x02"),
    ("cbor", b"\x1c"),  # reserved additional info
    ("bson", b"\x10\x00\x00\x00\x02a\x00\x05\x00\x00\x00abcd\x00"),  # prefix says 16, is 15
    ("bson", b"\x0d\x00\x00\x00\x02a\x00\xff\xff\xff\x7f\x00\x00\x00"),  # string longer than the doc
])
def test_malformed_binary_gives_an_error_and_raw(name, payload):
    d = dec(name, payload)
    assert d.error and d.error.startswith("invalid " + name)
    assert d.params == (("raw", payload.decode("latin-1")),) and has_raw(d, payload)


@pytest.mark.parametrize("name, payload", [
    ("msgpack", b"\xdd\xff\xff\xff\xff\x01"),  # array32 claiming 2**32-1 elements
    ("msgpack", b"\xdf\xff\xff\xff\xff\x01\x01"),  # map32 claiming 2**32-1 pairs
    ("msgpack", b"\xdb\xff\xff\xff\xffabc"),  # str32 claiming 4 GiB
    ("cbor", b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00\x01"),  # array of 2**32 elements
    ("cbor", b"\x7b\xff\xff\xff\xff\xff\xff\xff\xffabc"),  # text of 2**64-1 bytes
    ("bson", b"\xff\xff\xff\x7f\x03a\x00"),  # length prefix of 2 GiB
])
def test_length_bombs_fail_fast(name, payload):
    started = time.process_time()
    d = dec(name, payload)
    # A liveness guard (CPU time, so machine load cannot fail it): materialising the claimed
    # length would take many seconds and gigabytes; refusing it takes microseconds.
    assert time.process_time() - started < 5.0
    assert d.error and has_raw(d, payload)


@pytest.mark.parametrize("name, payload", [
    ("msgpack", b"\x91" * 200_000 + b"\x00"),  # deep nesting
    ("msgpack", b"\xdd\x00\x0f\x42\x40" + b"\x80" * 1_000_000),  # a million empty maps
    ("msgpack", b"\xdd\x00\x07\xa1\x20" + b"\x91\x00" * 500_000),
    ("cbor", b"\x81" * 200_000 + b"\x00"),
    ("cbor", b"\x9a\x00\x0f\x42\x40" + b"\xa0" * 1_000_000),
    ("cbor", b"\x9f" * 500_000),  # nested indefinite arrays, never closed
    ("cbor", b"\xc6" * 500_000 + b"\x00"),  # a chain of tags
])
def test_structure_bombs_stay_within_limits(name, payload):
    started = time.process_time()
    d = dec(name, payload)
    # A liveness guard in CPU time (see above), not a speed benchmark.
    assert time.process_time() - started < 5.0
    assert d.truncated is not None or d.error is not None


def test_payload_over_the_decode_cap_is_truncated_raw():
    limits = Limits(max_expanded_bytes=1000)
    d = dec("msgpack", msgpack.packb(["x" * 600, "y" * 600]), limits=limits)
    assert d.truncated == "size" and d.error is None and [p for p, _ in d.params] == ["raw"]


def test_deep_values_are_cut_at_max_depth():
    value = XSS
    for _ in range(20):
        value = [value]
    d = dec("msgpack", msgpack.packb(value))
    assert d.truncated == "depth" and d.error is None
    # deeper than the C decoders go (msgpack 1024 levels, our cbor2 cap 256) in a small payload
    for name, payload in (("msgpack", b"\x91" * 2000 + b"\xa3abc"), ("cbor", b"\x81" * 2000 + b"\x63abc")):
        d = dec(name, payload)
        assert d.truncated == "depth" and d.error is None


def test_binary_sniffing():
    assert auto(bson.encode({"a": SQLI}), True, ConnectionState()).format == "bson"
    assert auto(msgpack.packb({"a": SQLI}), True, ConnectionState()).format == "msgpack"
    assert auto(cbor2.dumps({"a": SQLI}), True, ConnectionState()).format == "cbor"
    assert auto(b"\xd9\xd9\xf7" + cbor2.dumps([SQLI]), True, ConnectionState()).format == "cbor"
    # b"\x80" is {} in MessagePack and [] in CBOR: MessagePack is preferred (see binary.py)
    assert auto(b"\x80", True, ConnectionState()).format == "msgpack"
    # not claimed: a scalar root, text in a binary frame, random bytes, a PNG header
    for payload in (msgpack.packb("just a string"), b'{"a": 1}', b"hello world",
                    bytes(range(256)), b"\x89PNG\r\n\x1a\n" + bytes(100)):
        assert auto(payload, True, ConnectionState()).format == "raw"
    # the claim sticks to the connection
    state = ConnectionState()
    auto(msgpack.packb([1, "a"]), True, state)
    assert state.framing == "msgpack"
    assert params(auto(msgpack.packb({"q": XSS}), True, state))["msgpack.q"] == XSS


# -- SignalR --------------------------------------------------------------------------------

JSON_HUB = JsonHubProtocol()
MP_HUB = MessagePackHubProtocol()


def _hub_messages():
    return [
        InvocationMessage("7", "SendMessage", ["alice", SQLI], headers={"trace": XSS}),
        StreamInvocationMessage("8", "Counter", [10, {"filter": XSS}], headers={}),
        StreamItemMessage("8", {"n": SQLI}, headers={}),
        CompletionMessage("7", {"ok": XSS}, None, headers={}),
        CancelInvocationMessage("8", headers={}),
        PingMessage(),
        CloseMessage(SQLI, allow_reconnect=True),
    ]


def test_signalr_json_records_from_signalrcore():
    text = "".join(JSON_HUB.encode(m) for m in _hub_messages())
    d = dec("signalr", text.encode(), binary=False)
    p = params(d)
    assert d.error is None and d.event == "SendMessage"
    assert p["signalr.type"] == "Invocation" and p["signalr.target"] == "SendMessage"
    assert p["signalr.arguments[1]"] == SQLI and p["signalr.invocationId"] == "7"
    assert p["signalr.headers.trace"] == XSS
    assert p["signalr[1].type"] == "StreamInvocation" and p["signalr[1].arguments[1].filter"] == XSS
    assert p["signalr[2].type"] == "StreamItem" and p["signalr[2].item.n"] == SQLI
    assert p["signalr[3].type"] == "Completion" and p["signalr[3].result.ok"] == XSS
    assert p["signalr[4].type"] == "CancelInvocation" and p["signalr[5].type"] == "Ping"
    assert p["signalr[6].type"] == "Close" and p["signalr[6].error"] == SQLI


def test_signalr_completion_error_from_json():
    d = dec("signalr", (json.dumps({"type": 3, "invocationId": "1", "error": XSS}) + "\x1e").encode(), False)
    assert params(d)["signalr.error"] == XSS


def test_signalr_msgpack_records_from_signalrcore():
    payload = b"".join(MP_HUB.encode(m) for m in _hub_messages())
    d = dec("signalr-msgpack", payload)
    p = params(d)
    assert d.error is None and d.event == "SendMessage"
    assert p["signalr.type"] == "Invocation" and p["signalr.headers.trace"] == XSS
    assert p["signalr.invocationId"] == "7" and p["signalr.arguments[1]"] == SQLI
    assert p["signalr[1].arguments[1].filter"] == XSS and p["signalr[2].item.n"] == SQLI
    # signalrcore 1.0.2 writes Completion as [3, headers, id, result] (no ResultKind) and Close
    # as [7, headers] (its field list has no "error"): off-spec, still fully shown
    assert p["signalr[3].type"] == "Completion" and XSS in [v for k, v in d.params if k.startswith("signalr[3].")]
    assert p["signalr[5].type"] == "Ping" and p["signalr[6].type"] == "Close"


def test_signalr_msgpack_spec_examples():
    # from HubProtocol.md: Completion with an error, non-blocking Invocation, Completion with a
    # result, Close allowing reconnects
    d = dec("signalr", b"\x0e\x95\x03\x80\xa3xyz\x01\xa5Error" + b"\x0e\x96\x01\x80\xc0\xa6method\x91\x2a\x90"
            + b"\x09\x95\x03\x80\xa3xyz\x03\x2a" + b"\x07\x93\x07\xa3xyz\xc3")
    p = params(d)
    assert p["signalr[2].resultKind"] == "3" and p["signalr[2].result"] == "42"
    assert p["signalr[3].type"] == "Close" and p["signalr[3].error"] == "xyz" and p["signalr[3].allowReconnect"] == "true"
    assert p["signalr.type"] == "Completion" and p["signalr.error"] == "Error" and p["signalr.invocationId"] == "xyz"
    assert p["signalr[1].target"] == "method" and p["signalr[1].arguments[0]"] == "42"
    assert "signalr[1].invocationId" not in p  # nil: skipped
    assert d.event == "method"


def test_signalr_handshake_then_msgpack_binary_on_one_connection():
    client = ConnectionState()
    handshake = MP_HUB.encode(MP_HUB.handshake_message()).encode()
    d = auto(handshake, False, client)
    assert d.format == "signalr" and params(d)["signalr.type"] == "HandshakeRequest"
    assert params(d)["signalr.protocol"] == "messagepack"
    assert client.framing == "signalr" and client.extra["signalr"].protocol == "messagepack"
    d = auto(MP_HUB.encode(InvocationMessage("1", "Send", [XSS], headers={})), True, client)
    assert d.format == "signalr" and d.event == "Send" and params(d)["signalr.arguments[0]"] == XSS
    # the server's direction: "{}" then binary records
    server = ConnectionState()
    assert params(auto(b"{}\x1e", False, server))["signalr.type"] == "HandshakeResponse"
    body = msgpack.packb([3, {}, "1", 3, SQLI])  # a spec Completion (signalrcore omits ResultKind)
    d = auto(bytes([len(body)]) + body, True, server)
    assert params(d)["signalr.result"] == SQLI


def test_signalr_json_protocol_in_binary_frames():
    state = ConnectionState()
    dec("signalr", b'{"protocol":"json","version":1}\x1e', binary=True, state=state)
    assert state.extra["signalr"].protocol == "json"
    d = dec("signalr", JSON_HUB.encode(InvocationMessage("1", "Send", [XSS])).encode(), binary=True, state=state)
    assert params(d)["signalr.arguments[0]"] == XSS


def test_signalr_binary_frame_with_handshake_response_and_records():
    payload = b"{}\x1e" + MP_HUB.encode(InvocationMessage("1", "Send", [SQLI], headers={}))
    d = dec("signalr", payload)
    p = params(d)
    assert d.error is None and p["signalr.type"] == "HandshakeResponse"
    assert p["signalr[1].arguments[0]"] == SQLI


def test_signalr_record_split_across_messages():
    text = JSON_HUB.encode(InvocationMessage("1", "Send", ["x" * 10 + SQLI]))
    cut = text.index(SQLI) + 3  # the attack is split between the two messages
    state = ConnectionState()
    first = dec("signalr", text[:cut].encode(), binary=False, state=state)
    # the fragment is shown (raw is left out: it is the same text) and buffered
    assert first.error is None and first.params == (("signalr.partial", text[:cut]),)
    second = dec("signalr", (text[cut:] + text).encode(), binary=False, state=state)
    assert params(second)["signalr.arguments[0]"] == "x" * 10 + SQLI
    assert params(second)["signalr[1].arguments[0]"] == "x" * 10 + SQLI
    # MessagePack, trickled byte by byte
    payload = MP_HUB.encode(InvocationMessage("1", "Send", [XSS], headers={})) * 2
    state = ConnectionState()
    found = []
    for i in range(len(payload)):
        found += [v for k, v in dec("signalr", payload[i:i + 1], state=state).params if k != "raw"]
    assert found.count(XSS) == 2


def test_signalr_oversized_records_are_skipped_in_sync():
    limits = Limits(max_expanded_bytes=200)
    big = MP_HUB.encode(InvocationMessage("1", "Big", ["y" * 500], headers={}))
    small = MP_HUB.encode(InvocationMessage("2", "Send", [SQLI], headers={}))
    state = ConnectionState()
    d = dec("signalr", big[:100], state=state, limits=limits)
    assert d.truncated == "size" and d.error
    d = dec("signalr", big[100:] + small, state=state, limits=limits)
    assert params(d)["signalr.arguments[0]"] == SQLI
    # JSON: an over-long record is dropped up to its terminator
    state = ConnectionState()
    dec("signalr", b'{"type":1,"target":"Big","arguments":["' + b"y" * 150, False, state, limits)
    d = dec("signalr", b"y" * 150, False, state, limits)
    assert d.truncated == "size" and d.error
    d = dec("signalr", b'"]}\x1e' + JSON_HUB.encode(InvocationMessage("2", "Send", [SQLI])).encode(),
            False, state, limits)
    assert params(d)["signalr.arguments[0]"] == SQLI


@pytest.mark.parametrize("payload, binary, error", [
    (b'{"type":1,"target":\x1e', False, "invalid signalr record"),
    (b'[1,2]\x1e', False, "not a JSON object"),
    (b'{"type":42}\x1e', False, "unknown signalr message type"),
    (b'{"type":1,"target":"x"}', False, "no 0x1e terminator"),
    (b"\x05\x93\x01\x80", True, "incomplete signalr record"),
    (b"\xff\xff\xff\xff\xff\xff\x01", True, "invalid signalr length prefix"),
    (b"\x02\xc1\xc1", True, "invalid signalr record"),
    (b"\x02\x91\x2a", True, "unknown signalr message type 42"),
    (b"\x02\x92\x01", True, "invalid signalr record"),
    (b"\x03\x92\x01\x80", True, "short signalr Invocation record"),
])
def test_signalr_malformed(payload, binary, error):
    d = dec("signalr", payload, binary)
    assert error in d.error and has_raw(d, payload, binary)


def test_signalr_sniffing():
    record = JSON_HUB.encode(InvocationMessage("1", "Send", [SQLI])).encode()
    assert auto(record, False, ConnectionState()).format == "signalr"
    assert auto(b'{"protocol":"json","version":1}\x1e', False, ConnectionState()).format == "signalr"
    for text in (b'{"type":1,"target":"Send"}', b'{"type":"chat"}\x1e', b'{"type":12}\x1e', b'{"protocol":"x"}\x1e',
                 b'[1,2]\x1e', b'{"error":"x","more":1}\x1e'):
        assert auto(text, False, ConnectionState()).format != "signalr", text
    # binary: a binary-frame handshake, or MessagePack records that all decode
    assert auto(b'{"protocol":"messagepack","version":1}\x1e', True, ConnectionState()).format == "signalr"
    assert auto(MP_HUB.encode(PingMessage()), True, ConnectionState()).format == "signalr"


# -- WAMP -----------------------------------------------------------------------------------

def _wamp_messages():
    return [
        wamp_msg.Hello("realm1", {"caller": wamp_role.RoleCallerFeatures()}, authid=SQLI),
        wamp_msg.Call(1, "com.app.add", args=[1, SQLI], kwargs={"note": {"html": XSS}}),
        wamp_msg.Publish(2, "com.app.chat", args=[XSS], acknowledge=True),
        wamp_msg.Subscribe(3, "com.app.chat", match="prefix"),
        wamp_msg.Register(4, "com.app.proc"),
        wamp_msg.Yield(5, args=[SQLI]),
        wamp_msg.Error(48, 1, "com.app.error", args=[XSS]),
        wamp_msg.Event(6, 7, args=["e"], kwargs={"k": SQLI}),
        wamp_msg.Goodbye(),
    ]


WAMP_CASES = [
    (JsonSerializer, "wamp.2.json", False), (JsonSerializer, "wamp.2.json.batched", True),
    (MsgPackSerializer, "wamp.2.msgpack", False), (MsgPackSerializer, "wamp.2.msgpack.batched", True),
    (CBORSerializer, "wamp.2.cbor", False), (CBORSerializer, "wamp.2.cbor.batched", True),
]


@pytest.mark.parametrize("serializer, subprotocol, batched", WAMP_CASES)
def test_wamp_messages_from_autobahn(serializer, subprotocol, batched):
    s = serializer(batched=batched)
    name = select("auto", "/ws", "", subprotocol)
    frames = [s.serialize(m) for m in _wamp_messages()]
    is_binary = frames[0][1]
    call = decode_message(frames[1][0], is_binary, name, LIMITS, ConnectionState())
    p = params(call)
    assert call.format == "wamp" and call.error is None and call.event == "com.app.add"
    assert p["wamp.type"] == "CALL" and p["wamp.request"] == "1" and p["wamp.procedure"] == "com.app.add"
    assert p["wamp.args[1]"] == SQLI and p["wamp.kwargs.note.html"] == XSS
    hello = params(decode_message(frames[0][0], is_binary, name, LIMITS, None))
    assert hello["wamp.realm"] == "realm1" and hello["wamp.details.authid"] == SQLI
    if batched:  # one WebSocket message carrying the whole batch
        d = decode_message(b"".join(f for f, _ in frames), is_binary, name, LIMITS, ConnectionState())
        p = params(d)
        assert d.error is None and d.event == "com.app.add"
        assert p["wamp.type"] == "HELLO" and p["wamp[1].args[1]"] == SQLI
        assert p["wamp[2].topic"] == "com.app.chat" and p["wamp[2].args[0]"] == XSS
        assert p["wamp[3].options.match"] == "prefix" and p["wamp[4].procedure"] == "com.app.proc"
        assert p["wamp[5].type"] == "YIELD" and p["wamp[5].args[0]"] == SQLI
        assert p["wamp[6].request_type"] == "CALL" and p["wamp[6].uri"] == "com.app.error"
        assert p["wamp[7].subscription"] == "6" and p["wamp[7].kwargs.k"] == SQLI
        assert p["wamp[8].type"] == "GOODBYE"


def test_wamp_json_binary_values_are_decoded():
    frame, _ = JsonSerializer().serialize(wamp_msg.Call(1, "p", args=[XSS.encode()]))
    assert b"\\u0000" in frame
    assert params(dec("wamp", frame, binary=False))["wamp.args[0]"] == XSS


def test_wamp_json_batch_with_the_spec_separator():
    frames = [JsonSerializer().serialize(m)[0] for m in _wamp_messages()[1:3]]
    d = dec("wamp", b"\x1e".join(frames) + b"\x1e", binary=False)
    assert params(d)["wamp[1].args[0]"] == XSS and d.error is None


def test_wamp_sniffing_is_strict():
    frame, _ = JsonSerializer().serialize(_wamp_messages()[1])
    state = ConnectionState()
    d = auto(frame, False, state)
    assert d.format == "wamp" and state.framing == "wamp" and params(d)["wamp.args[1]"] == SQLI
    for text in ('[48, "1", {}, "p"]', '[48, 1, {}, 5]', "[1, 2, 3]", '[16, 1, {}, "t", [], {}, 7]',
                 '["phx_join", "1", "room:lobby", "phx_join", {}]', '[1, "realm"]', "[]"):
        assert auto(text.encode(), False, ConnectionState()).format != "wamp", text


@pytest.mark.parametrize("name, payload, error", [
    ("wamp", b'[48, 1, {}, "p"', "invalid WAMP message"),
    ("wamp", b'{"a": 1}', "not a WAMP message"),
    ("wamp", b'[99, 1]', "unknown WAMP message code 99"),
    ("wamp", b'[48, 1]', "short WAMP CALL"),
    ("wamp", b'[48, 1, [], "p"]', "options has the wrong type"),
    ("wamp", b'[48, 1, {}, "p"]\x18[48, 2\x18', "invalid WAMP message"),
    ("wamp-msgpack", b"\x00\x00\x00\x10\x94\x30", "exceeds the data"),
    ("wamp-msgpack", b"\x00\x00", "truncated length prefix"),
    ("wamp-msgpack", b"\x94\x30\x01\x80", "invalid WAMP message"),
    ("wamp-cbor", b"\x84\x18\x30\x01\xa0", "invalid WAMP message"),
])
def test_wamp_malformed(name, payload, error):
    d = dec(name, payload, binary=name != "wamp")
    assert error in d.error and has_raw(d, payload, name != "wamp")


# -- MQTT -----------------------------------------------------------------------------------


def _paho_capture(protocol, actions):
    """The bytes a real paho-mqtt client writes: it talks to a loopback server that answers
    CONNECT and records everything until the client disconnects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = bytearray()

    def serve():
        conn, _ = server.accept()
        conn.settimeout(5)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                if not received:  # CONNACK: 3.1.1 has no properties, 5 has an empty set
                    conn.sendall(b"\x20\x03\x00\x00\x00" if protocol == paho.MQTTv5 else b"\x20\x02\x00\x00")
                received.extend(data)
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sensor-" + SQLI, protocol=protocol)
    client.username_pw_set("alice", "s3cret")
    will_props = None
    connect_props = None
    if protocol == paho.MQTTv5:
        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.UserProperty = [("w", XSS)]
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = 60
    client.will_set("status/sensor", '{"state": "gone"}', properties=will_props)
    client.connect("127.0.0.1", server.getsockname()[1], properties=connect_props)
    actions(client)
    for _ in range(5):
        client.loop(0.01)
    client.disconnect()
    client.loop(0.01)
    thread.join(10)
    server.close()
    return bytes(received)


def _v5_actions(client):
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("trace", XSS), ("x y", SQLI)]
    props.ContentType = "application/json"
    props.ResponseTopic = "replies/" + SQLI
    client.publish("sensors/temp", json.dumps({"v": 21.5, "note": SQLI}), qos=1, properties=props)
    client.subscribe([("cmd/#", 0), ("cfg/" + XSS, 1)])
    client.unsubscribe("cmd/#")


def _v3_actions(client):
    client.publish("chat/room1", "hello " + XSS, qos=0)
    client.publish("bin/blob", bytes(range(128, 256)), qos=2)
    client.subscribe("chat/#")


@pytest.fixture(scope="module")
def paho_v5():
    return _paho_capture(paho.MQTTv5, _v5_actions)


@pytest.fixture(scope="module")
def paho_v311():
    return _paho_capture(paho.MQTTv311, _v3_actions)


def test_mqtt5_packets_from_paho(paho_v5):
    d = dec("mqtt", paho_v5, state=ConnectionState())
    p = params(d)
    assert d.error is None and d.event == "sensors/temp"
    assert p["mqtt.type"] == "CONNECT" and p["mqtt.protocol_level"] == "5"
    assert p["mqtt.client_id"] == "sensor-" + SQLI
    assert p["mqtt.username"] == "alice" and p["mqtt.password"] == "s3cret"
    assert p["mqtt.properties.session_expiry_interval"] == "60"
    assert p["mqtt.will.topic"] == "status/sensor" and p["mqtt.will.payload.state"] == "gone"
    assert p["mqtt.will.properties.user.w"] == XSS
    assert p["mqtt[1].type"] == "PUBLISH" and p["mqtt[1].topic"] == "sensors/temp"
    assert p["mqtt[1].qos"] == "1" and p["mqtt[1].packet_id"] == "1"
    assert p["mqtt[1].properties.content_type"] == "application/json"
    assert p["mqtt[1].properties.response_topic"] == "replies/" + SQLI
    assert p["mqtt[1].properties.user.trace"] == XSS
    assert p['mqtt[1].properties.user["x y"]<key>'] == "x y" and p['mqtt[1].properties.user["x y"]'] == SQLI
    assert p["mqtt[1].payload.note"] == SQLI and p["mqtt[1].payload.v"] == "21.5"
    assert p["mqtt[2].type"] == "SUBSCRIBE" and p["mqtt[2].filters[1]"] == "cfg/" + XSS
    assert p["mqtt[3].type"] == "UNSUBSCRIBE" and p["mqtt[3].filters[0]"] == "cmd/#"
    assert p["mqtt[4].type"] == "DISCONNECT"


def test_mqtt311_packets_split_across_messages(paho_v311):
    state = ConnectionState()
    found = []
    for i in range(0, len(paho_v311), 5):  # 5-byte WebSocket messages
        d = dec("mqtt", paho_v311[i:i + 5], state=state)
        assert d.error is None
        found += [(k, v) for k, v in d.params if k != "raw"]
    p = dict(found)
    assert p["mqtt.protocol_level"] == "4" and p["mqtt.client_id"] == "sensor-" + SQLI
    assert p["mqtt.payload"] == "hello " + XSS  # text payload, split across messages
    assert ("mqtt.topic", "bin/blob") in found and ("mqtt.qos", "2") in found
    assert ("mqtt.filters[0]", "chat/#") in found
    assert not any(k == "mqtt.payload" and v.startswith("\x80") for k, v in found)  # binary payload skipped


def test_mqtt_sniffing_and_stickiness(paho_v5, paho_v311):
    for capture in (paho_v5, paho_v311):
        state = ConnectionState()
        d = auto(capture, True, state)
        assert d.format == "mqtt" and state.framing == "mqtt"
    assert auto(b"\x30\x05\x00\x01ahi", True, ConnectionState()).format != "mqtt"  # PUBLISH first: not claimed


def test_mqtt_server_direction_learns_the_level_from_connack():
    props = b"\x03\x00\x01a"  # content type "a"
    publish5 = b"\x30" + bytes([2 + 1 + 1 + len(props) + 2]) + b"\x00\x01t" + bytes([len(props)]) + props + b"hi"
    state = ConnectionState()
    dec("mqtt", b"\x20\x03\x00\x00\x00", state=state)  # MQTT 5 CONNACK
    d = dec("mqtt", publish5, state=state)
    assert d.error is None and params(d)["mqtt.payload"] == "hi"
    publish3 = b"\x30\x06\x00\x01t\x00hi"
    state = ConnectionState()
    dec("mqtt", b"\x20\x02\x00\x00", state=state)  # 3.1.1 CONNACK
    assert params(dec("mqtt", publish3, state=state))["mqtt.payload"] == "\x00hi"


@pytest.mark.parametrize("payload, error", [
    (b"\x30\xff\xff\xff\xff\x01", "invalid mqtt remaining length"),
    (b"\x00\x00", "reserved mqtt packet type 0"),
    (b"\x30\x0a\x00\x01t", "incomplete mqtt packet"),
    (b"\x36\x03\x00\x01t", "QoS 3"),
    (b"\x82\x02\x00\x01", "no topic filter"),
    (b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x02\x63\x00\x00", "unknown property identifier 99"),
    (b"\x40\x04\x00\x01\x00\x05", "after the PUBACK packet"),
])
def test_mqtt_malformed(payload, error):
    d = dec("mqtt", payload)
    assert error in d.error and has_raw(d, payload)


def test_mqtt_oversized_packet_is_skipped_in_sync():
    limits = Limits(max_expanded_bytes=100)
    big = b"\x30\x96\x01\x00\x01t" + b"x" * 147  # remaining length 150
    small = b"\x30\x0a\x00\x01t" + SQLI[:7].encode()
    state = ConnectionState()
    d = dec("mqtt", big[:60], state=state, limits=limits)
    assert d.truncated == "size" and d.error
    d = dec("mqtt", big[60:] + small, state=state, limits=limits)
    assert d.error is None and params(d)["mqtt.payload"] == SQLI[:7]


# -- fuzzing --------------------------------------------------------------------------------

# Shallow value strategies (two levels): recursive ones cost more to generate than to decode.
_attack_text = st.sampled_from([SQLI, XSS, "%3Cscript%3E", "&lt;b&gt;", '{"a":[1]}', "PHNjcmlwdD4xPC9zY3JpcHQ+"])
_json_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats(allow_nan=False)
              | st.text(max_size=20) | _attack_text)
json_values = (_json_leaf | st.lists(_json_leaf, max_size=4)
               | st.dictionaries(st.text(max_size=6), _json_leaf | st.lists(_json_leaf, max_size=3), max_size=4))
_bin_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats() | st.text(max_size=20)
             | st.binary(max_size=20) | _attack_text)
binary_values = (_bin_leaf | st.lists(_bin_leaf | st.lists(_bin_leaf, max_size=3), max_size=4)
                 | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5) | st.binary(max_size=4),
                                   _bin_leaf | st.lists(_bin_leaf, max_size=3), max_size=4))
bson_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
bson_keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
_bson_leaf = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats() | bson_text | st.binary(
    max_size=20)
bson_docs = st.dictionaries(bson_keys, _bson_leaf | st.lists(_bson_leaf, max_size=3)
                            | st.dictionaries(bson_keys, _bson_leaf, max_size=3), max_size=4)
SMALL_LIMITS = Limits(max_depth=4, max_params=20, max_expanded_bytes=400)


def _mutate(data, cuts, flips):
    data = bytearray(data)
    for i, b in flips:
        if data:
            data[i % len(data)] = b
    out, last = [], 0
    for c in sorted(c % (len(data) + 1) for c in cuts):
        out.append(bytes(data[last:c]))
        last = c
    out.append(bytes(data[last:]))
    return out


def _feed(name, chunks, binary, limits):
    state = ConnectionState()
    for chunk in chunks:
        d = DEC[name].decode(chunk, binary, limits, state)  # decode directly: exceptions surface
        assert_sane(d, limits)


mutations = st.tuples(st.lists(st.integers(0, 10_000), max_size=3),
                      st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3))
limits_st = st.sampled_from([LIMITS, SMALL_LIMITS])


@pytest.mark.parametrize("name, structured", [
    ("msgpack", binary_values.map(msgpack.packb)),
    ("cbor", binary_values.map(cbor2.dumps)),
    ("bson", bson_docs.map(bson.encode)),
])
@settings(max_examples=200, deadline=None)
@given(data=st.data(), mut=mutations, limits=limits_st)
def test_fuzz_binary_formats(name, structured, data, mut, limits):
    payload = data.draw(st.one_of(st.binary(max_size=200), structured))
    _feed(name, _mutate(payload, *mut), True, limits)


def _signalr_record(kind, value, target, json_mode):
    if json_mode:
        return json.dumps({"type": kind, "target": target, "arguments": [value], "invocationId": "1"}) + "\x1e"
    body = msgpack.packb([kind, {}, "1", target, [value], []])
    return MP_HUB._to_varint(len(body)) + body


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.tuples(st.integers(0, 12), json_values, st.text(max_size=10)), max_size=3),
       json_mode=st.booleans(), noise=st.binary(max_size=60), mut=mutations, limits=limits_st)
def test_fuzz_signalr(records, json_mode, noise, mut, limits):
    parts = [_signalr_record(k, v, t, json_mode) for k, v, t in records]
    payload = ("".join(parts).encode() if json_mode else b"".join(parts)) + noise
    _feed("signalr" if json_mode else "signalr-msgpack", _mutate(payload, *mut), not json_mode, limits)
    _feed("signalr", [noise], not json_mode, limits)


wamp_arrays = st.tuples(st.sampled_from(sorted(WAMP_SHAPES) + [0, 99]),
                        st.lists(json_values, max_size=5)).map(lambda t: [t[0]] + t[1])


@pytest.mark.parametrize("name, encode, batch", [
    ("wamp", lambda m: json.dumps(m).encode(), lambda ms: b"\x18".join(ms) + b"\x18"),
    ("wamp-msgpack", msgpack.packb, lambda ms: b"".join(len(m).to_bytes(4, "big") + m for m in ms)),
    ("wamp-cbor", cbor2.dumps, lambda ms: b"".join(len(m).to_bytes(4, "big") + m for m in ms)),
])
@settings(max_examples=200, deadline=None)
@given(msgs=st.lists(wamp_arrays, min_size=1, max_size=3), noise=st.binary(max_size=60), mut=mutations,
       limits=limits_st, batched=st.booleans())
def test_fuzz_wamp(name, encode, batch, msgs, noise, mut, limits, batched):
    frames = [encode(m) for m in msgs]
    payload = batch(frames) if batched else frames[0]
    binary = name != "wamp"
    _feed(name, _mutate(payload, *mut), binary, limits)
    _feed(name, [noise], binary, limits)


def _mqtt_packet(ptype, flags, body):
    n = len(body)
    rl = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        rl.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([ptype << 4 | flags]) + bytes(rl) + body


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15), st.binary(max_size=40)), max_size=5),
       use_paho=st.booleans(), mut=mutations, limits=limits_st)
def test_fuzz_mqtt(packets, use_paho, mut, limits):
    payload = b"".join(_mqtt_packet(t, f, b) for t, f, b in packets)
    if use_paho:
        payload = _PAHO_SAMPLE + payload
    _feed("mqtt", _mutate(payload, *mut), True, limits)


_PAHO_SAMPLE = (  # a paho 2.2 MQTT 5 CONNECT + PUBLISH with properties, captured as in _paho_capture
    b"\x10(\x00\x04MQTT\x05\xc6\x00<\x00\x00\x03cid\x00\x00\x06will/t\x00\x03bye\x00\x04user\x00\x02pw"
    b"2*\x00\x03a/b\x00\x01\x1a\x03\x00\x10application/json&\x00\x01k\x00\x01v{\"x\": 1}"
)
