"""Message decoders: sample files per wire format, bombs, malformed input, a seeded fuzz loop."""

from __future__ import annotations

import json
import os
import random
import time

import pytest
from zope.interface.verify import verifyObject

from wsfw.decoders import (
    ConnectionState,
    Decoded,
    IDecoder,
    Limits,
    decode_message,
    decode_polling,
    registry,
    select,
)
from tests.unit.decoded_checks import assert_sane

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "decoders")
LIMITS = Limits()


def _load(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


MESSAGES = _load("messages.json")
SEQUENCES = _load("sequences.json")
POLLING = _load("polling.json")


def _payload(msg):
    return msg["text"].encode("latin-1") if msg.get("binary") else msg["text"].encode("utf-8")


def _check(d, exp):
    assert d.format == exp["format"]
    assert d.event == exp["event"]
    assert d.truncated == exp["truncated"]
    assert (d.error is not None) == exp["error"], d.error
    assert [list(p) for p in d.params] == exp["params"]


@pytest.mark.parametrize("case", MESSAGES, ids=[c["id"] for c in MESSAGES])
def test_message_samples(case):
    """Each sample message decodes to exactly the params recorded in messages.json."""
    d = decode_message(case["text"].encode("utf-8"), False, case["framing"], LIMITS, ConnectionState())
    _check(d, case)
    assert_sane(d)


@pytest.mark.parametrize("case", SEQUENCES, ids=[c["id"] for c in SEQUENCES])
def test_binary_attachment_sequences(case):
    """Binary messages after a 5x-/6x- packet are decoded in that event's context."""
    state = ConnectionState()
    for msg, exp in zip(case["messages"], case["expect"], strict=True):
        d = decode_message(_payload(msg), bool(msg.get("binary")), case["framing"], LIMITS, state)
        _check(d, exp)


@pytest.mark.parametrize("case", POLLING, ids=[c["id"] for c in POLLING])
def test_polling_samples(case):
    """Polling bodies split on \\x1e, including base64 binary packets, decode packet by packet."""
    ds = decode_polling(case["body"].encode("utf-8"), "text/plain;charset=UTF-8", LIMITS)
    assert len(ds) == len(case["expect"])
    for d, exp in zip(ds, case["expect"]):
        _check(d, exp)


def test_registry_decoders_provide_idecoder():
    """The registry holds the four built-in decoders, each verifying against IDecoder."""
    reg = registry()
    assert set(reg) >= {"text", "json", "socketio", "raw"}
    for name, dec in reg.items():
        assert verifyObject(IDecoder, dec)
        assert dec.name == name


@pytest.mark.parametrize(
    "framing, path, query, sub, expected",
    [
        ("auto", "/socket.io/", "EIO=4&transport=websocket", None, "socketio"),
        ("auto", "/chat/socket.io/", "", None, "socketio"),
        ("auto", "/custom", "EIO=4&transport=websocket", None, "socketio"),
        ("auto", "/ws", "", None, "auto"),
        ("auto", "/ws", "", "graphql-transport-ws", "graphqlws"),
        ("json", "/socket.io/", "EIO=4", None, "json"),
        ("raw", "/x", "", None, "raw"),
    ],
)
def test_select(framing, path, query, sub, expected):
    """select() keeps an explicit framing and guesses Socket.IO from the path or EIO=4."""
    assert select(framing, path, query, sub) == expected


def test_auto_binary_is_raw_latin1():
    """A binary message in auto mode is one raw param: UTF-8 if valid, else latin-1."""
    d = decode_message(b"\xff\x00abc", True, "auto", LIMITS)
    assert d == Decoded("raw", None, (("raw", "\xff\x00abc"),))
    d = decode_message("é".encode(), True, "auto", LIMITS)
    assert d.params == (("raw", "é"),)


def test_invalid_utf8_text_reports_error():
    """Invalid UTF-8 in a text message is decoded with replacement and reported."""
    for framing in ("auto", "text", "json", "socketio", "raw"):
        d = decode_message(b'42["a","\xff"]', False, framing, LIMITS, ConnectionState())
        assert_sane(d)
        if framing != "raw":
            assert d.error is not None or framing == "auto" or framing == "text"


def test_unknown_framing_is_raw_with_error():
    """An unknown framing name falls back to the raw text with an error."""
    d = decode_message(b"hello", False, "no-such-framing", LIMITS)
    assert d.format == "raw" and d.params == (("raw", "hello"),) and d.error


def test_big_int_and_float_keep_working():
    """Ints beyond Python's 4300-digit conversion limit and huge floats still decode."""
    d = decode_message(b'{"a":' + b"9" * 5000 + b',"b":1e400,"c":"x"}', False, "json", LIMITS)
    assert d.error is None
    values = dict(d.params)
    assert values["json.a"] == "9" * 5000
    assert values["json.c"] == "x"


# --- bounds -----------------------------------------------------------------------------

BOMBS = {
    "deep-array-10k": (b"[" * 10_000 + b"]" * 10_000, "json", "depth"),
    "deep-object-10k": (b'{"a":' * 10_000 + b'"x"' + b"}" * 10_000, "json", "depth"),
    "deep-socketio-10k": (b'42["evt",' + b"[" * 10_000 + b"]" * 10_000 + b"]", "socketio", "depth"),
    "deep-auto-10k": (b"[" * 10_000 + b"]" * 10_000, "auto", "depth"),
    "wide-array-1e6": (b"[" + b"0," * 999_999 + b"0]", "json", "params"),
    "wide-empty-arrays-1e6": (b"[" + b"[]," * 999_999 + b"[]]", "json", "params"),
    "wide-object-1e6": (
        b"{" + b",".join(b'"k%d":1' % i for i in range(1_000_000)) + b"}",
        "json",
        "params",
    ),
    "wide-socketio-1e6": (b'42["evt",' + b"0," * 999_999 + b"0]", "socketio", "params"),
    "deep-then-wide": (b"[" * 2000 + b"0," * 1_000_000 + b"0" + b"]" * 2000, "json", "depth"),
    "wide-json-in-string": (
        b'["[' + b'\\"a\\",' * 999_999 + b'\\"a\\"]"]',
        "json",
        "size",
    ),
    "long-string": (b'["' + b"a" * (2 << 20) + b'"]', "json", "size"),
    "nested-percent-layers": (
        b'{"q":"' + b"%25" * 0 + b"%2525252525252525252525253C" + b'"}',
        "json",
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_stay_bounded(name):
    """JSON / Socket.IO bombs produce bounded params, set truncated, and return quickly."""
    payload, framing, truncated = BOMBS[name]
    t0 = time.process_time()
    d = decode_message(payload, False, framing, LIMITS, ConnectionState())
    elapsed = time.process_time() - t0
    assert_sane(d)
    assert d.truncated == truncated
    if framing == "socketio":
        assert d.event == "evt"
    # A liveness guard against quadratic or exponential behaviour (CPU time, so machine load
    # cannot fail it), not a speed benchmark.
    assert elapsed < 5.0


def test_small_limits_are_respected():
    """Tiny limits cap params, expanded size and depth exactly."""
    lim = Limits(max_depth=2, max_params=3, max_expanded_bytes=10)
    d = decode_message(b'{"a":{"b":{"c":1}}}', False, "json", lim)
    assert d.truncated == "depth" and d.params[-1][0] == "raw"
    d = decode_message(b"[1,2,3,4,5]", False, "json", lim)
    assert d.truncated == "params" and len(d.params) == 4
    d = decode_message(b'["abcdefghijklmnop"]', False, "json", lim)
    assert d.truncated == "size" and d.params[0] == ("json[0]", "abcdefghij")
    d = decode_message(b'42/ns,1["e","x"]', False, "socketio", Limits(max_params=2))
    assert d.truncated == "params" and len(d.params) == 3


def test_nested_decoding_respects_depth():
    """Nested encodings stop at max_depth: each layer counts one level."""
    layered = "<b>"
    for _ in range(12):
        layered = layered.replace("%", "%25").replace("<", "%3C").replace(">", "%3E")
    d = decode_message(json.dumps({"q": layered}).encode(), False, "json", Limits(max_depth=4))
    url_paths = [p for p, _ in d.params if p.startswith("json.q<url>")]
    assert 0 < len(url_paths) <= 3


def test_polling_packet_count_is_bounded():
    """A polling body with more packets than max_params ends with one truncated raw Decoded."""
    body = b"\x1e".join([b"2"] * 5000)
    ds = decode_polling(body, "text/plain", Limits(max_params=100))
    assert len(ds) == 101
    assert ds[-1].truncated == "params" and ds[-1].format == "raw"


# --- malformed input and fuzzing -------------------------------------------------------

MALFORMED = [
    b"",
    b"4",
    b"42[",
    b"42",
    b"42/",
    b"42/ns",
    b"42/ns,",
    b"4212",
    b"45-[]",
    b"45999999999999-[]",
    b"451-",
    b'451-["x",{"_placeholder":true,"num":"0"}]',
    b'451-["x",{"_placeholder":true,"num":-1}]',
    b"40[1,2]",
    b'40"str"',
    b"44",
    b'{"a":',
    b'{"a" 1}',
    b"[1,]",
    b'["\\ud800"]',
    b'["\\u12"]',
    b"[NaN, Infinity, -Infinity]",
    b"\xff\xfe\xfd",
    b"\xc3\x28",
    b"\x00" * 64,
    b"0{",
    b"0" + b"{" * 5000,
    b"42[" + b'"' * 1000,
    b"[" * 100_000,
    b"]" * 1000,
    b'"' + b"\\" * 999,
    b"b",
    b"b====",
]


@pytest.mark.parametrize("framing", ["auto", "text", "json", "socketio", "raw"])
@pytest.mark.parametrize("binary", [False, True])
def test_malformed_never_raises(framing, binary):
    """Every malformed sample, text or binary, under every framing, returns a sane Decoded."""
    state = ConnectionState()
    for payload in MALFORMED:
        assert_sane(decode_message(payload, binary, framing, LIMITS, state))


def test_random_bytes_never_raise():
    """Seeded random byte strings never make any decoder or the polling decoder raise."""
    rng = random.Random(1234)
    state = ConnectionState()
    for _ in range(500):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
        for framing in ("auto", "json", "socketio", "text"):
            assert_sane(decode_message(payload, rng.random() < 0.3, framing, LIMITS, state))
        for d in decode_polling(payload, None, LIMITS):
            assert_sane(d)


def _seeds():
    out = [c["text"].encode("utf-8") for c in MESSAGES]
    for c in SEQUENCES:
        out.extend(_payload(m) for m in c["messages"])
    out.extend(c["body"].encode("utf-8") for c in POLLING)
    return out


_ALPHABET = b'[]{}",:\\/-0123456789%&;#xu=+ab\x1e\x00\xff\xc3'


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a byte
            data[min(pos, len(data) - 1)] = rng.getrandbits(8)
        elif op == 1:  # insert a structural byte
            data[pos:pos] = bytes([rng.choice(_ALPHABET)])
        elif op == 2 and data:  # delete a slice
            del data[pos : pos + rng.randrange(1, 8)]
        elif op == 3:  # duplicate a slice
            data[pos:pos] = data[pos : pos + rng.randrange(1, 32)] * rng.randrange(1, 4)
        elif op == 4:  # truncate
            del data[pos:]
        else:  # splice in nesting
            data[pos:pos] = rng.choice([b"[", b"{", b'{"a":', b'"', b"%25", b"&amp;"]) * rng.randrange(1, 50)
    return bytes(data)


def test_fuzz_mutations_never_raise():
    """A few thousand seeded mutations of the valid samples never raise and stay within limits."""
    rng = random.Random(20240601)
    seeds = _seeds()
    limits = Limits(max_depth=6, max_params=200, max_expanded_bytes=4096)
    state = ConnectionState()
    for _ in range(3000):
        payload = _mutate(rng, rng.choice(seeds))
        framing = rng.choice(("auto", "json", "socketio", "socketio", "text"))
        d = decode_message(payload, rng.random() < 0.15, framing, limits, state)
        assert_sane(d, limits)
        if rng.random() < 0.2:
            for dp in decode_polling(payload, "text/plain", limits):
                assert_sane(dp, limits)


def test_auto_sniffs_socketio_on_any_path():
    """With framing auto, a Socket.IO packet is recognised by content (servers mount it on any path)."""
    from wsfw.decoders import ConnectionState, Limits, decode_message

    decoded = decode_message(b'42/chat,7["say","hi <b>"]', False, "auto", Limits(), ConnectionState())
    assert (decoded.format, decoded.event) == ("socketio", "say")
    assert ("socketio.args[0]", "hi <b>") in decoded.params
    assert decode_message(b"42 is the answer", False, "auto", Limits(), None).format == "text"


def test_route_framings_are_the_registered_decoders():
    """Every ``framing =`` value the config accepts names a decoder, and every decoder is accepted."""
    from wsfw.config import FRAMINGS

    assert set(FRAMINGS) == {"auto"} | set(registry())


@pytest.mark.parametrize("subprotocol,expected", [
    ("v12.stomp", "stomp"), ("wamp.2.json", "wamp"), ("wamp.2.msgpack.batched", "wamp-msgpack"),
    ("wamp.2.cbor", "wamp-cbor"), ("graphql-transport-ws", "graphqlws"), ("graphql-ws", "graphqlws"),
    ("MQTT", "mqtt"), ("actioncable-v1-json", "actioncable"),
])
def test_negotiated_subprotocol_wins_over_route_framing(subprotocol, expected):
    """Selection order: the negotiated subprotocol, then the route's framing, then sniffing."""
    assert select("json", "/ws", "", subprotocol) == expected
    assert select("json", "/ws", "", "chat.v1") == "json"
    assert select("auto", "/ws", "", "chat.v1") == "auto"


def test_non_utf8_socketio_attachment_is_opaque():
    """A binary attachment that is not text is "binary" (size caps only), in its event's context;
    the next attachment of the same packet is still decoded as text."""
    state = ConnectionState()
    head = decode_message(b'452-["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', False,
                          "socketio", LIMITS, state)
    assert head.event == "upload"
    png = decode_message(b"\x89PNG\r\n\x1a\n\x00\r\xff", True, "socketio", LIMITS, state)
    assert (png.format, png.event) == ("binary", "upload")
    text = decode_message("<svg onload=alert(1)>".encode(), True, "socketio", LIMITS, state)
    assert ("socketio.args[1]<binary>", "<svg onload=alert(1)>") in text.params


def test_auto_connection_settles_on_its_first_message():
    """Frameworks announce themselves in their first message; a connection whose first message
    no framework claims is sniffed as Socket.IO / JSON / text from then on."""
    stomp = b"SEND\ndestination:/queue/a\n\n<b>x</b>\x00"
    claimed = ConnectionState()
    assert decode_message(b"CONNECT\naccept-version:1.2\n\n\x00", False, "auto", LIMITS, claimed).format == "stomp"
    assert decode_message(stomp, False, "auto", LIMITS, claimed).event == "/queue/a"
    generic = ConnectionState()
    assert decode_message(b'{"type":"chat","text":"hi"}', False, "auto", LIMITS, generic).format == "json"
    later = decode_message(stomp, False, "auto", LIMITS, generic)
    assert later.format == "text" and ("text", stomp.decode()) in later.params  # still inspected, as text
    assert decode_message(b'42["chat message","x"]', False, "auto", LIMITS, generic).format == "socketio"


@pytest.mark.parametrize("limits", [LIMITS, Limits(max_depth=1, max_params=3, max_expanded_bytes=40),
                                    Limits(max_depth=0), Limits(max_params=1)])
def test_flat_object_fast_path_equals_the_walk(limits):
    """The fast path for flat objects of scalars emits exactly what the bounded walk emits."""
    from hypothesis import given, settings, strategies as st

    from wsfw.decoders import _walk

    scalars = st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.booleans(), st.none(), st.sampled_from(["%3Cb%3E", "a&amp;b", "{\"x\":1}", "QUJDREVGR0hJSktMTU5PUA=="]))
    keys = st.one_of(st.sampled_from(["type", "text", "user", "_id", "constructor", "a b", "$ne"]), st.text(max_size=8))

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(keys, scalars, max_size=6))
    def check(obj):
        fast = _walk.flat_params("json", obj, limits)
        ctx = _walk.Ctx(limits)
        try:
            _walk.walk(ctx, obj, "json", 0)
        except _walk.Stop:
            pass
        if fast is not None:
            assert fast == ctx.params and ctx.truncated is None

    check()
