"""WAMP v2 (Web Application Messaging Protocol) over WebSocket: JSON, MessagePack and CBOR
serialisations, batched or not.

Spec: https://wamp-proto.org/spec.html (message codes, "Batched Transport").

Params, per WAMP message; in a batch the first message is unprefixed, the i-th (i >= 1) is
``wamp[i]`` (``wamp[1].procedure``):

- ``wamp.type``: HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE, GOODBYE, ERROR, PUBLISH,
  PUBLISHED, SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, UNSUBSCRIBED, EVENT, CALL, CANCEL, RESULT,
  REGISTER, REGISTERED, UNREGISTER, UNREGISTERED, INVOCATION, INTERRUPT, YIELD (the code when
  unknown).
- ids: ``wamp.request``, ``wamp.session``, ``wamp.subscription``, ``wamp.publication``,
  ``wamp.registration``; ERROR's ``wamp.request_type`` (the type name).
- URIs: ``wamp.realm`` (HELLO), ``wamp.topic`` (PUBLISH, SUBSCRIBE), ``wamp.procedure``
  (CALL, REGISTER), ``wamp.uri`` (the error / reason URI of ERROR, ABORT, GOODBYE).
- dicts, walked like JSON: ``wamp.options...``, ``wamp.details...``, ``wamp.extra...``
  (CHALLENGE / AUTHENTICATE); ``wamp.authmethod``, ``wamp.signature`` (a credential: see
  the report on audit excerpts).
- payload: ``wamp.args[i]...``, ``wamp.kwargs...``.
- anything past the spec's fields: ``wamp.extra[i]``; a message that is not a
  ``[code, ...]`` array is walked at ``wamp`` itself; an undecodable message of a batch is
  ``wamp[i].record`` (its text, not followed into nested encodings).

Decoded.event is the procedure or topic URI of the first CALL / REGISTER / PUBLISH /
SUBSCRIBE.

Batching is recognised from the bytes, so one decoder serves both subprotocols of a
serialisation: JSON messages never contain raw control characters, so a text holding 0x1e
or 0x18 is a batch (the spec says "\\30", which it calls 0x1e; Autobahn writes octal \\30 =
0x18: both are accepted); a binary message whose first byte is not an array head is a batch
of 4-byte big-endian length-prefixed messages (an unbatched message starts with its array
head, a batch with the length's high byte, 0x00 for anything under 16 MiB).
"""

from __future__ import annotations

import base64
import binascii
import re

from zope.interface import implementer

from ._binparse import TooLarge, cbor_loads, msgpack_loads
from ._binval import error_text, is_id, is_map, is_seq, record_path, walk_value
from ._walk import Ctx, Partial, Stop, parse_json, walk
from .base import NOARGS, Decoded, IDecoder
from .socketio import bytes_text

TYPES = {
    1: "HELLO", 2: "WELCOME", 3: "ABORT", 4: "CHALLENGE", 5: "AUTHENTICATE", 6: "GOODBYE",
    8: "ERROR", 16: "PUBLISH", 17: "PUBLISHED", 32: "SUBSCRIBE", 33: "SUBSCRIBED",
    34: "UNSUBSCRIBE", 35: "UNSUBSCRIBED", 36: "EVENT", 48: "CALL", 49: "CANCEL", 50: "RESULT",
    64: "REGISTER", 65: "REGISTERED", 66: "UNREGISTER", 67: "UNREGISTERED", 68: "INVOCATION",
    69: "INTERRUPT", 70: "YIELD",
}

# Field kinds.
_ID, _DICT, _URI, _STR, _LIST, _INT = range(6)
_ARGS = (("args", _LIST), ("kwargs", _DICT))
_DETAILS = (("details", _DICT),)
#: code -> (required fields, optional trailing fields), each field (param name, kind).
SHAPES = {
    1: ((("realm", _URI), ("details", _DICT)), ()),
    2: ((("session", _ID), ("details", _DICT)), ()),
    3: ((("details", _DICT), ("uri", _URI)), ()),
    4: ((("authmethod", _STR), ("extra", _DICT)), ()),
    5: ((("signature", _STR), ("extra", _DICT)), ()),
    6: ((("details", _DICT), ("uri", _URI)), ()),
    8: ((("request_type", _INT), ("request", _ID), ("details", _DICT), ("uri", _URI)), _ARGS),
    16: ((("request", _ID), ("options", _DICT), ("topic", _URI)), _ARGS),
    17: ((("request", _ID), ("publication", _ID)), ()),
    32: ((("request", _ID), ("options", _DICT), ("topic", _URI)), ()),
    33: ((("request", _ID), ("subscription", _ID)), ()),
    34: ((("request", _ID), ("subscription", _ID)), ()),
    35: ((("request", _ID),), _DETAILS),
    36: ((("subscription", _ID), ("publication", _ID), ("details", _DICT)), _ARGS),
    48: ((("request", _ID), ("options", _DICT), ("procedure", _URI)), _ARGS),
    49: ((("request", _ID), ("options", _DICT)), ()),
    50: ((("request", _ID), ("details", _DICT)), _ARGS),
    64: ((("request", _ID), ("options", _DICT), ("procedure", _URI)), ()),
    65: ((("request", _ID), ("registration", _ID)), ()),
    66: ((("request", _ID), ("registration", _ID)), ()),
    67: ((("request", _ID),), _DETAILS),
    68: ((("request", _ID), ("registration", _ID), ("details", _DICT)), _ARGS),
    69: ((("request", _ID), ("options", _DICT)), ()),
    70: ((("request", _ID), ("options", _DICT)), _ARGS),
}
#: Which field names the message's event: procedure or topic.
_EVENT_FIELD = {16: 2, 32: 2, 48: 2, 64: 2}
_CHECK = {
    _ID: is_id,
    _DICT: is_map,
    _URI: lambda v: type(v) is str,
    _STR: lambda v: type(v) is str,
    _LIST: is_seq,
    _INT: lambda v: type(v) is int,
}
_JSON_SEP = re.compile("[\x18\x1e]")
_MSGPACK_ARRAY = frozenset(list(range(0x90, 0xA0)) + [0xDC, 0xDD])
_CBOR_UNBATCHED = frozenset(range(0x80, 0xDC))  # arrays and tag heads (self-describe ...)


def fits(msg):
    """True if ``msg`` (a decoded message) has exactly the shape its code requires."""
    if not is_seq(msg) or not msg or type(msg[0]) is not int:
        return False
    shape = SHAPES.get(msg[0])
    if shape is None:
        return False
    required, optional = shape
    n = len(msg) - 1
    if n < len(required) or n > len(required) + len(optional):
        return False
    fields = required + optional
    for i in range(n):
        if not _CHECK[fields[i][1]](msg[i + 1]):
            return False
    return True


def _message(ctx, msg, prefix, walker):
    """Emit one WAMP message; returns (error, event)."""
    if type(msg) is Partial:
        ctx.trunc("params")
        msg = msg.value
    if not is_seq(msg) or not msg or type(msg[0]) is not int:
        walker(ctx, msg, prefix, 0)
        return "not a WAMP message ([code, ...] array)", None
    code = msg[0]
    shape = SHAPES.get(code)
    error = event = None
    if code in _OPS:
        _op(ctx, msg, code, prefix)
    if shape is None:
        ctx.add(prefix + ".type", str(code))
        fields = ()
        error = "unknown WAMP message code %d" % code
    else:
        ctx.add(prefix + ".type", TYPES[code])
        required, optional = shape
        fields = required + optional
        n = len(msg) - 1
        if n < len(required):
            error = "short WAMP %s message" % TYPES[code]
    nf = len(fields)
    for i in range(1, len(msg)):
        v = msg[i]
        f = i - 1
        if f < nf:
            name, kind = fields[f]
            if error is None and not _CHECK[kind](v):
                error = "WAMP %s: %s has the wrong type" % (TYPES[code], name)
            if kind == _INT and type(v) is int and v in TYPES:
                v = TYPES[v]  # ERROR's request type, by name
        else:
            name = "extra[%d]" % (f - nf)
        walker(ctx, v, prefix + "." + name, 1)
    ef = _EVENT_FIELD.get(code)
    if ef is not None and len(msg) > ef + 1 and type(msg[ef + 1]) is str:
        event = msg[ef + 1]
    return error, event


#: WAMP code -> (the field naming its URI, whether it carries Arguments / ArgumentsKw).
_OPS = {16: ("wamp.topic", True), 32: ("wamp.topic", False), 48: ("wamp.procedure", True),
        64: ("wamp.procedure", False)}


def _op(ctx, msg, code, prefix):
    """Record a PUBLISH / SUBSCRIBE / CALL / REGISTER: its URI and, for PUBLISH and CALL,
    ``{"args": Arguments or [], "kwargs": ArgumentsKw or {}}``."""
    field, carries = _OPS[code]
    uri = msg[3] if len(msg) > 3 and type(msg[3]) is str else None
    if carries:
        args = {"args": msg[4] if len(msg) > 4 else [], "kwargs": msg[5] if len(msg) > 5 else {}}
    else:
        args = NOARGS
    ctx.op(field, uri, args, prefix)


@implementer(IDecoder)
class WampJSONDecoder:
    """WAMP with JSON serialisation (``wamp.2.json``, ``wamp.2.json.batched``)."""

    name = "wamp"

    def decode(self, payload, is_binary, limits, state):
        try:
            text = payload.decode("utf-8")
            error = None
        except UnicodeDecodeError:
            text = payload.decode("utf-8", "replace")
            error = "invalid utf-8"
        ctx = Ctx(limits)
        if _JSON_SEP.search(text) is None:
            try:
                obj = parse_json(text, limits.max_depth, 4 * limits.max_params + 64)
            except ValueError as e:  # raw shows it (walking it would parse the broken JSON again)
                return ctx.result("wamp", None, text, error or "invalid WAMP message: %s" % error_text(e))
            return self.decode_json(text, obj, limits, state, error, ctx)
        event = None
        try:
            i = pos = seen = 0
            n = len(text)
            while pos < n:
                m = _JSON_SEP.search(text, pos)
                end = m.start() if m is not None else n
                part = text[pos:end]
                pos = end + 1
                seen += 1  # empty parts included: bounds the loop
                if i >= limits.max_params or seen > 4 * limits.max_params:
                    ctx.trunc("params")
                    break
                if not part.strip():
                    continue
                prefix = record_path("wamp", i)
                i += 1
                try:
                    obj = parse_json(part, limits.max_depth, 4 * limits.max_params + 64)
                except ValueError as e:
                    error = error or "invalid WAMP message: %s" % error_text(e)
                    ctx.add(prefix + ".record", part)
                    continue
                e, ev = _message(ctx, _binary_strings(obj, part), prefix, _walker(part))
                error = error or e
                event = event or ev
        except Stop:
            pass
        return ctx.result("wamp", event, text, error)

    def sniff_json(self, obj):
        return type(obj) is list and fits(obj)

    def decode_json(self, text, obj, limits, state, error, ctx=None):
        ctx = ctx or Ctx(limits)
        event = None
        try:
            e, event = _message(ctx, _binary_strings(obj, text), "wamp", _walker(text))
            error = error or e
        except Stop:
            pass
        return ctx.result("wamp", event, text, error)


#: WAMP's JSON serialisation sends binary values as "\0" + base64 (the JSON text holds the
#: NUL escaped): those are decoded to bytes and walked as such, like the binary serialisations.
_NUL_ESCAPE = "\\u0000"


def _walker(text):
    return walk_value if _NUL_ESCAPE in text else walk


def _binary_strings(obj, text, depth=0):
    """``obj`` with its "\0"-prefixed base64 strings decoded to bytes (only when the text
    holds an escaped NUL, so ordinary messages are not copied)."""
    if _NUL_ESCAPE not in text or depth > 64:
        return obj
    t = type(obj)
    if t is str:
        if obj[:1] == "\0":
            try:
                return base64.b64decode(obj[1:], validate=True)
            except (binascii.Error, ValueError):
                return obj
        return obj
    if t is list:
        return [_binary_strings(x, text, depth + 1) for x in obj]
    if t is dict:
        return {k: _binary_strings(x, text, depth + 1) for k, x in obj.items()}
    return obj


class _WampBinaryDecoder:
    name = ""
    _loads = None
    _unbatched = frozenset()

    def decode(self, payload, is_binary, limits, state):
        raw = bytes_text(payload)
        if not payload:
            return Decoded("wamp", None, (("raw", ""),), None, "empty WAMP message")
        loads = type(self)._loads
        ctx = Ctx(limits)
        error = event = None
        try:
            if payload[0] in self._unbatched:
                bodies = (payload,)
            else:
                bodies, error = _split_batch(payload, limits, ctx)
            for i, body in enumerate(bodies):
                prefix = record_path("wamp", i)
                try:
                    msg = loads(body, limits)
                except TooLarge:
                    ctx.trunc("size")
                    continue
                except (ValueError, TypeError, OverflowError, MemoryError, RecursionError) as e:
                    error = error or "invalid WAMP message: %s" % error_text(e)
                    ctx.add(prefix + ".record", bytes_text(body))
                    continue
                e, ev = _message(ctx, msg, prefix, walk_value)
                error = error or e
                event = event or ev
        except Stop:
            pass
        return ctx.result("wamp", event, raw, error)


def _split_batch(payload, limits, ctx):
    """The message bodies of a batch of 4-byte big-endian length-prefixed messages, and why
    the batch is malformed (or None)."""
    bodies = []
    n = len(payload)
    pos = 0
    while pos < n:
        if len(bodies) >= limits.max_params:
            ctx.trunc("params")
            break
        if pos + 4 > n:
            return bodies, "truncated length prefix in WAMP batch"
        length = int.from_bytes(payload[pos:pos + 4], "big")
        pos += 4
        if length > n - pos:
            ctx.add(record_path("wamp", len(bodies)) + ".record", bytes_text(payload[pos:]))
            return bodies, "batched WAMP message of %d bytes exceeds the data" % length
        bodies.append(payload[pos:pos + length])
        pos += length
    return bodies, None


@implementer(IDecoder)
class WampMsgPackDecoder(_WampBinaryDecoder):
    """WAMP with MessagePack serialisation (``wamp.2.msgpack[.batched]``)."""

    name = "wamp-msgpack"
    _loads = staticmethod(msgpack_loads)
    _unbatched = _MSGPACK_ARRAY


@implementer(IDecoder)
class WampCBORDecoder(_WampBinaryDecoder):
    """WAMP with CBOR serialisation (``wamp.2.cbor[.batched]``)."""

    name = "wamp-cbor"
    _loads = staticmethod(cbor_loads)
    _unbatched = _CBOR_UNBATCHED


DECODERS = [WampJSONDecoder(), WampMsgPackDecoder(), WampCBORDecoder()]
SUBPROTOCOLS = {
    "wamp.2.json": "wamp",
    "wamp.2.json.batched": "wamp",
    "wamp.2.msgpack": "wamp-msgpack",
    "wamp.2.msgpack.batched": "wamp-msgpack",
    "wamp.2.cbor": "wamp-cbor",
    "wamp.2.cbor.batched": "wamp-cbor",
}
