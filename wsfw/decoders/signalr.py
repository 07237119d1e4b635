"""ASP.NET Core SignalR hub protocol: JSON records (text) and MessagePack records (binary).

Spec: https://github.com/dotnet/aspnetcore/blob/main/src/SignalR/docs/specs/HubProtocol.md

Params, per record; the first record of a message is unprefixed (``signalr.target``), the
i-th (i >= 1) is ``signalr[i]`` (``signalr[1].target``), so the common one-record message has
stable names:

- ``signalr.type``: Invocation, StreamItem, Completion, StreamInvocation, CancelInvocation,
  Ping, Close, Ack, Sequence, HandshakeRequest, HandshakeResponse (the raw value if unknown).
- JSON records: every other member walked like JSON: ``signalr.target``,
  ``signalr.arguments[0].user``, ``signalr.invocationId``, ``signalr.headers.*``,
  ``signalr.streamIds[i]``, ``signalr.item``, ``signalr.result``, ``signalr.error``,
  ``signalr.allowReconnect``, ``signalr.sequenceId``, ``signalr.protocol`` (handshake) ...
  Unknown members are walked too: the spec calls them a protocol error, the WAF shows them.
- MessagePack records get the same names from their array positions (``[1, headers,
  invocationId, target, arguments, streamIds]`` ...), plus ``signalr.resultKind``; nil
  fields are skipped; elements past the spec's are ``signalr.extra[i]``.
- ``signalr.record``: a record that is not valid JSON / MessagePack, as text (not followed
  into nested encodings: that would parse the broken JSON again); a record of the wrong
  shape (not an object / not a [type, ...] array) is walked there.
- ``signalr.partial``: the part of this message that starts a record not complete yet (text
  view), so every byte of a message is in some param; the record is buffered per connection
  and decoded in full with the message that completes it.

Decoded.event is the target of the message's first Invocation / StreamInvocation.

Protocol choice: the client's handshake ``{"protocol": "messagepack", "version": 1}`` is
recorded in ``state.extra["signalr"]``; the following binary messages are MessagePack
records, text messages JSON records. Binary messages are MessagePack records unless the
handshake chose "json" (JSON sent in binary frames), so the server's direction, which never
sees the request (its response is just ``{}``), decodes too, and so does "blazorpack"
(Blazor Server's MessagePack variant). A binary frame may start with the JSON handshake
(the .NET client in binary transfer mode; a server response followed by records).

``signalr`` and ``signalr-msgpack`` are the same decoder (the frames and the handshake say
which encoding is in use); only ``signalr`` sniffs on ``framing = auto`` routes. SignalR
negotiates no WebSocket subprotocol.

Buffering: a JSON record without its 0x1e terminator, or a MessagePack record shorter than
its length prefix, is kept in the connection state (at most ``Limits.max_expanded_bytes``;
pieces are joined once, when the record can be complete) and decoded in full with the
message that completes it; a longer record is dropped up to its terminator / by its length prefix
(``truncated="size"``) so the stream stays in sync. After a params bound the rest of the
message is not framed and buffering restarts with the next message.
"""

from __future__ import annotations

from zope.interface import implementer

from ._binparse import msgpack_loads
from ._binval import Pending, error_text, record_path, resume_record, varint, walk_value
from ._walk import Ctx, Partial, Stop, is_plain_key, key_path, parse_json, walk
from .base import IDecoder, Limits
from .socketio import bytes_text

TYPES = {
    1: "Invocation",
    2: "StreamItem",
    3: "Completion",
    4: "StreamInvocation",
    5: "CancelInvocation",
    6: "Ping",
    7: "Close",
    8: "Ack",
    9: "Sequence",
}
RS = "\x1e"
_RS_BYTE = b"\x1e"
#: MessagePack record layouts after the type: field names by position, and how many fields
#: the spec requires.
_MP_FIELDS = {
    1: (("headers", "invocationId", "target", "arguments", "streamIds"), 4),
    2: (("headers", "invocationId", "item"), 3),
    3: (("headers", "invocationId", "resultKind", "result"), 3),
    4: (("headers", "invocationId", "target", "arguments", "streamIds"), 4),
    5: (("headers", "invocationId"), 2),
    6: ((), 0),
    7: (("error", "allowReconnect"), 1),
    8: (("sequenceId",), 1),
    9: (("sequenceId",), 1),
}
_INVOKE = (1, 4)
_RESPONSE_KEYS = frozenset(("error", "minorVersion"))
_JSON_SECOND = frozenset(b'"} \t\r\n')  # after "{": a JSON handshake, never a record body
_SNIFF_LIMITS = Limits()
_MAX_VARINT = 5


class _State:
    """Per-connection SignalR state (``state.extra["signalr"]``)."""

    __slots__ = ("protocol", "text", "discard", "data", "skip")

    def __init__(self):
        self.protocol = None  # from the handshake request: "json", "messagepack", ...
        self.text = Pending()  # incomplete JSON record
        self.discard = False  # dropping an over-long JSON record up to its 0x1e
        self.data = Pending()  # incomplete MessagePack record
        self.skip = 0  # bytes of an oversized MessagePack record still to come


class _Decoder:
    name = ""

    def decode(self, payload, is_binary, limits, state):
        st = None
        if state is not None:
            st = state.extra.get("signalr")
            if st is None:
                st = state.extra["signalr"] = _State()
        ctx = Ctx(limits)
        if is_binary and (st is None or st.protocol != "json"):
            raw = bytes_text(payload)
            error, event = _decode_binary(ctx, payload, limits, st)
        else:
            try:
                raw = payload.decode("utf-8")
                error = None
            except UnicodeDecodeError:
                raw = payload.decode("utf-8", "replace")
                error = "invalid utf-8"
            e, event = _decode_text(ctx, raw, limits, st, 0)
            error = error or e
        return ctx.result("signalr", event, raw, error)


def _decode_text(ctx, text, limits, st, index):
    """JSON records of a text message (or of the JSON part of a binary one)."""
    cap = limits.max_expanded_bytes
    error = None
    if st is not None:
        if st.discard:  # inside an over-long record: drop it up to its terminator
            j = text.find(RS)
            ctx.trunc("size")
            if j < 0:
                return None, None
            st.discard = False
            text = text[j + 1:]
        elif st.text.size:
            if RS not in text:
                if st.text.size + len(text) > cap:
                    return _overflow(ctx, st, cap), None
                st.text.add(text)
                _partial(ctx, text)
                return None, None
            text = st.text.take("") + text
    end = text.rfind(RS)
    tail = text[end + 1:]
    if tail.isspace():
        tail = ""
    if tail:
        if st is None:
            error = "incomplete signalr record (no 0x1e terminator)"
        elif len(tail) > cap:
            error = _overflow(ctx, st, cap)
            tail = ""
        else:
            st.text.add(tail)
    event = None
    try:
        pos = 0
        seen = 0  # records, empty ones included: bounds the loop
        while pos <= end:
            j = text.find(RS, pos)
            record = text[pos:j]
            pos = j + 1
            seen += 1
            if index >= limits.max_params or seen > 4 * limits.max_params:
                ctx.trunc("params")
                break
            if not record or record.isspace():
                continue
            e, ev = _json_record(ctx, record, record_path("signalr", index), limits, st)
            index += 1
            error = error or e
            event = event or ev
    except Stop:
        return error, event
    if tail:
        _partial(ctx, tail)
    return error, event


def _partial(ctx, fragment):
    """The part of this message that starts a record not complete yet: shown now (its bytes
    are in no other param), decoded in full once the record completes."""
    try:
        walk(ctx, fragment, "signalr.partial", 0)
    except Stop:
        pass


def _overflow(ctx, st, cap):
    st.text = Pending()
    st.discard = True
    ctx.trunc("size")
    return "signalr record longer than %d characters" % cap


def _json_record(ctx, record, prefix, limits, st):
    try:
        obj = parse_json(record, limits.max_depth, 4 * limits.max_params + 64)
    except ValueError as e:
        ctx.add(prefix + ".record", record)  # as is: nested decoding would re-parse it
        return "invalid signalr record: %s" % error_text(e), None
    if type(obj) is Partial:
        ctx.trunc("params")
        obj = obj.value
    if type(obj) is not dict:
        walk(ctx, obj, prefix + ".record", 0)
        return "signalr record is not a JSON object", None
    t = obj.get("type")
    error = event = None
    known = True
    if t is None:
        if "protocol" in obj:
            name = "HandshakeRequest"
            protocol = obj["protocol"]
            if st is not None and type(protocol) is str:
                st.protocol = protocol[:32].lower()
        else:
            name = "HandshakeResponse"
    elif type(t) is int and t in TYPES:
        name = TYPES[t]
        if t in _INVOKE:
            target = obj.get("target")
            if type(target) is str:
                event = target
            ctx.op("signalr.target", event, obj.get("arguments"), prefix + ".arguments")
    else:
        name = str(t) if type(t) is not str else t
        known = False
        error = "unknown signalr message type %s" % name[:40]
    ctx.add(prefix + ".type", name)
    for k, v in obj.items():
        if k == "type" and known:
            continue
        if is_plain_key(k):
            p = prefix + "." + k
        else:
            p = key_path(prefix, k)
            ctx.add(p + "<key>", k)
        walk(ctx, v, p, 1)
    return error, event


def _decode_binary(ctx, data, limits, st):
    """MessagePack records (VarInt length + body), possibly after a JSON handshake."""
    cap = limits.max_expanded_bytes
    error = event = None
    if st is not None:
        data, complete = resume_record(st, data, ctx, lambda head: _varint(head, 0), _MAX_VARINT)
        if not complete:
            _partial(ctx, bytes_text(data))
            return None, None
    n = len(data)
    pos = 0
    index = 0
    try:
        if n > 1 and data[0] == 0x7B and data[1] in _JSON_SECOND:
            j = data.find(_RS_BYTE)
            if j > 0:
                error, event = _decode_text(ctx, data[:j + 1].decode("utf-8", "replace"), limits, st, 0)
                index = 1
                pos = j + 1
                if st is not None and st.protocol == "json":
                    e, ev = _decode_text(ctx, data[pos:].decode("utf-8", "replace"), limits, st, 1)
                    return error or e, event or ev
        while pos < n:
            length, k = _varint(data, pos)
            if length is None:
                if k < 0:
                    return error or "invalid signalr length prefix at byte %d" % pos, event
                break  # incomplete prefix: buffer
            if length > cap:
                error = error or "signalr record of %d bytes exceeds %d" % (length, cap)
                ctx.trunc("size")
                if st is not None:
                    st.skip = max(0, k + length - n)
                return error, event
            if k + length > n:
                break  # incomplete body: buffer
            if index >= limits.max_params:
                ctx.trunc("params")
                return error, event
            e, ev = _msgpack_record(ctx, data[k:k + length], record_path("signalr", index), limits)
            index += 1
            pos = k + length
            error = error or e
            event = event or ev
    except Stop:
        return error, event
    if pos < n:
        if st is not None:
            st.data.add(data[pos:])
        else:
            error = error or "incomplete signalr record"
        _partial(ctx, bytes_text(data[pos:]))
    return error, event


def _varint(data, pos):
    """A record's length prefix: a VarInt of at most five bytes."""
    return varint(data, pos, _MAX_VARINT)


def _msgpack_record(ctx, body, prefix, limits):
    try:
        rec = msgpack_loads(body, limits)
    except (ValueError, TypeError, OverflowError, MemoryError, RecursionError) as e:
        ctx.add(prefix + ".record", bytes_text(body))
        return "invalid signalr record: %s" % error_text(e), None
    if type(rec) is Partial:
        ctx.trunc("params")
        rec = rec.value
    if type(rec) is not tuple or not rec or type(rec[0]) is not int:
        walk_value(ctx, rec, prefix + ".record", 0)
        return "signalr record is not a [type, ...] array", None
    t = rec[0]
    layout = _MP_FIELDS.get(t)
    error = event = None
    if layout is None:
        ctx.add(prefix + ".type", str(t))
        fields, required = (), 0
        error = "unknown signalr message type %d" % t
    else:
        ctx.add(prefix + ".type", TYPES[t])
        fields, required = layout
        if len(rec) - 1 < required:
            error = "short signalr %s record" % TYPES[t]
    if t in _INVOKE:
        ctx.op("signalr.target", rec[3] if len(rec) > 3 and type(rec[3]) is str else None,
               rec[4] if len(rec) > 4 else None, prefix + ".arguments")
    nf = len(fields)
    for i in range(1, len(rec)):
        v = rec[i]
        if v is None:
            continue
        f = i - 1
        if f < nf:
            name = fields[f]
            if t == 3 and f == 3 and rec[3] == 1:
                name = "error"  # ResultKind 1: the result is the error message
        else:
            name = "extra[%d]" % (f - nf)
        walk_value(ctx, v, prefix + "." + name, 1)
    if t in _INVOKE and len(rec) > 3 and type(rec[3]) is str:
        event = rec[3]
    return error, event


@implementer(IDecoder)
class SignalRDecoder(_Decoder):
    """SignalR hub protocol (JSON or MessagePack, chosen by the handshake and frame type)."""

    name = "signalr"

    def sniff_text(self, text):
        """A text message of 0x1e-terminated records whose first is a handshake or a typed
        hub message."""
        if not text.endswith(RS):
            return False
        return _first_record_is_signalr(text[: text.find(RS)])

    def sniff_binary(self, payload):
        """A binary JSON handshake, or MessagePack records that all decode strictly."""
        if payload[:1] == b"{":
            j = payload.find(_RS_BYTE)
            if j < 0:
                return False
            try:
                return _first_record_is_signalr(payload[:j].decode("utf-8"))
            except UnicodeDecodeError:
                return False
        return _all_msgpack_records(payload)


def _first_record_is_signalr(record):
    c = record.lstrip(" \t\r\n")[:1]
    if c != "{":
        return False
    try:
        obj = parse_json(record, 8)
    except ValueError:
        return False
    if type(obj) is Partial:
        obj = obj.value
    if type(obj) is not dict:
        return False
    t = obj.get("type")
    if t is None:
        if "protocol" in obj:
            return "version" in obj and type(obj["protocol"]) is str
        return obj.keys() <= _RESPONSE_KEYS
    return type(t) is int and t in TYPES


def _all_msgpack_records(data):
    n = len(data)
    if n < 2 or n > _SNIFF_LIMITS.max_expanded_bytes:
        return False
    pos = 0
    while pos < n:
        length, k = _varint(data, pos)
        if length is None or length == 0 or k + length > n:
            return False
        try:
            rec = msgpack_loads(data[k:k + length], _SNIFF_LIMITS, True)
        except (ValueError, TypeError, OverflowError, MemoryError, RecursionError):
            return False
        if type(rec) is not tuple or not rec or type(rec[0]) is not int or rec[0] not in TYPES:
            return False
        if len(rec) - 1 < _MP_FIELDS[rec[0]][1]:
            return False
        pos = k + length
    return True


@implementer(IDecoder)
class SignalRMsgPackDecoder(_Decoder):
    """The same decoder under the name for routes known to use the MessagePack protocol."""

    name = "signalr-msgpack"


DECODERS = [SignalRDecoder(), SignalRMsgPackDecoder()]
SUBPROTOCOLS: dict[str, str] = {}
