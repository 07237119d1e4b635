"""MQTT 3.1 / 3.1.1 / 5.0 over WebSocket (binary messages carrying MQTT control packets).

"A single WebSocket data frame can contain multiple or partial MQTT Control Packets"
(MQTT 3.1.1 section 6): packets are framed by their fixed header (type, flags, VarInt
remaining length) across messages; an incomplete trailing packet is kept in
``state.extra["mqtt"]`` (at most ``Limits.max_expanded_bytes``; pieces are joined once, when
the packet can be complete) and decoded in full with the message that completes it; a longer one
is skipped by its length (``truncated="size"``) so the stream stays in sync. After a params
bound the rest of the message is not framed and buffering restarts with the next message.

Params, per packet; the first packet of a message is unprefixed (``mqtt.topic``), the i-th
(i >= 1) is ``mqtt[i]`` (``mqtt[1].topic``):

- ``mqtt.type`` (CONNECT, CONNACK, PUBLISH, PUBACK, ... AUTH), ``mqtt.packet_id``,
  ``mqtt.qos`` (PUBLISH), ``mqtt.reason_code`` (MQTT 5 acks, CONNACK, DISCONNECT, AUTH).
- CONNECT: ``mqtt.protocol_name``, ``mqtt.protocol_level``, ``mqtt.client_id``,
  ``mqtt.username``, ``mqtt.password``, ``mqtt.will.topic``, ``mqtt.will.payload...``,
  ``mqtt.will.properties.*``. The password is emitted (injection can ride in it like in any
  field); detectors' audit excerpts may therefore quote up to ~80 characters of a password
  that matched a signature, which the raw param exposes anyway.
- PUBLISH: ``mqtt.topic``, ``mqtt.payload...``: a UTF-8 payload that is a JSON object /
  array is walked like JSON (``mqtt.payload.user.name``), other UTF-8 text is one param (plus
  nested decodings); a non-UTF-8 payload is skipped (only ``raw`` shows it).
- SUBSCRIBE / UNSUBSCRIBE: ``mqtt.filters[i]``.
- ``mqtt.partial``: the part of this message that starts a packet not complete yet (text
  view), so every byte of a message is in some param; ``mqtt.body``: the body of a packet
  that does not parse (text view).
- MQTT 5 properties: ``mqtt.properties.<name>`` (``content_type``, ``response_topic``,
  ``correlation_data``, ``reason_string`` ...), user properties (attacker-chosen pairs) as
  ``mqtt.properties.user.<key>`` with the JSON key convention (``user["x y"]`` + ``<key>``).

Decoded.event: the topic of the first PUBLISH, else the first SUBSCRIBE / UNSUBSCRIBE filter.

The protocol level (which decides whether packets carry properties) comes from CONNECT on
the client's side and from CONNACK's length on the server's (2 bytes in 3.1.1, more in 5);
without either, a packet is read as MQTT 5 if it parses strictly as such, else as 3.1.1.
"""

from __future__ import annotations

from zope.interface import implementer

from ._binval import Pending, record_path, resume_record, varint
from ._walk import Ctx, Stop, is_plain_key, json_root, key_path, walk
from .base import IDecoder
from .socketio import bytes_text

TYPES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
#: MQTT 5 property identifier -> (param name, value kind).
PROPERTIES = {
    1: ("payload_format_indicator", _BYTE),
    2: ("message_expiry_interval", _U32),
    3: ("content_type", _STR),
    8: ("response_topic", _STR),
    9: ("correlation_data", _BIN),
    11: ("subscription_identifier", _VARINT),
    17: ("session_expiry_interval", _U32),
    18: ("assigned_client_identifier", _STR),
    19: ("server_keep_alive", _U16),
    21: ("authentication_method", _STR),
    22: ("authentication_data", _BIN),
    23: ("request_problem_information", _BYTE),
    24: ("will_delay_interval", _U32),
    25: ("request_response_information", _BYTE),
    26: ("response_information", _STR),
    28: ("server_reference", _STR),
    31: ("reason_string", _STR),
    33: ("receive_maximum", _U16),
    34: ("topic_alias_maximum", _U16),
    35: ("topic_alias", _U16),
    36: ("maximum_qos", _BYTE),
    37: ("retain_available", _BYTE),
    38: ("user", _PAIR),
    39: ("maximum_packet_size", _U32),
    40: ("wildcard_subscription_available", _BYTE),
    41: ("subscription_identifier_available", _BYTE),
    42: ("shared_subscription_available", _BYTE),
}
_PROTOCOLS = {(b"MQTT", 4), (b"MQTT", 5), (b"MQIsdp", 3)}


class Malformed(ValueError):
    """A packet body that does not parse."""


class _Key(str):
    """A map key emitted as its own param (no nested decoding), as the JSON walker does."""

    __slots__ = ()


class _Payload(bytes):
    """An application payload: JSON / text / skipped."""

    __slots__ = ()


class _Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.end = len(data)

    def left(self):
        return self.end - self.pos

    def take(self, k):
        p = self.pos
        if p + k > self.end:
            raise Malformed("packet body ends early")
        self.pos = p + k
        return self.data[p:p + k]

    def u8(self):
        if self.pos >= self.end:
            raise Malformed("packet body ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u32(self):
        return int.from_bytes(self.take(4), "big")

    def varint(self):
        value = shift = 0
        for _ in range(4):
            b = self.u8()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
        raise Malformed("variable byte integer longer than 4 bytes")

    def bin(self):
        return self.take(self.u16())

    def str(self):
        return self.bin().decode("utf-8", "replace")


def _properties(r, prefix, out):
    """MQTT 5 properties (length-prefixed) as (path, value) fields appended to ``out``."""
    length = r.varint()
    if length > r.left():
        raise Malformed("properties longer than the packet")
    end = r.pos + length
    while r.pos < end:
        ident = r.varint()
        spec = PROPERTIES.get(ident)
        if spec is None:
            raise Malformed("unknown property identifier %d" % ident)
        name, kind = spec
        if kind == _STR:
            v = r.str()
        elif kind == _BIN:
            v = r.bin()
        elif kind == _BYTE:
            v = r.u8()
        elif kind == _U16:
            v = r.u16()
        elif kind == _U32:
            v = r.u32()
        elif kind == _VARINT:
            v = r.varint()
        else:  # a user property: a string pair
            k = r.str()
            v = r.str()
            base = prefix + ".user"
            if is_plain_key(k):
                out.append((base + "." + k, v))
            else:
                p = key_path(base, k)
                out.append((p + "<key>", _Key(k)))
                out.append((p, v))
            continue
        out.append((prefix + "." + name, v))
    if r.pos != end:
        raise Malformed("property runs past the properties length")


def _connect(r, flags, v5, out):
    name = r.bin()
    level = r.u8()
    cflags = r.u8()
    r.u16()  # keep alive
    v5 = level == 5  # CONNECT carries its own protocol level
    out.append(("protocol_name", name.decode("utf-8", "replace")))
    out.append(("protocol_level", level))
    if v5:
        _properties(r, "properties", out)
    out.append(("client_id", r.str()))
    if cflags & 0x04:
        if v5:
            _properties(r, "will.properties", out)
        out.append(("will.topic", r.str()))
        out.append(("will.payload", _Payload(r.bin())))
    if cflags & 0x80:
        out.append(("username", r.str()))
    if cflags & 0x40:
        out.append(("password", r.bin()))
    return level


def _connack(r, flags, v5, out):
    r.u8()  # acknowledge flags
    out.append(("reason_code", r.u8()))
    if v5:
        _properties(r, "properties", out)


def _publish(r, flags, v5, out):
    qos = (flags >> 1) & 3
    if qos == 3:
        raise Malformed("PUBLISH with QoS 3")
    out.append(("topic", r.str()))
    out.append(("qos", qos))
    if qos:
        out.append(("packet_id", r.u16()))
    if v5:
        _properties(r, "properties", out)
    out.append(("payload", _Payload(r.take(r.left()))))


def _ack(r, flags, v5, out):
    """PUBACK, PUBREC, PUBREL, PUBCOMP."""
    out.append(("packet_id", r.u16()))
    if v5 and r.left():
        out.append(("reason_code", r.u8()))
        if r.left():
            _properties(r, "properties", out)


def _subscribe(r, flags, v5, out, options=True):
    out.append(("packet_id", r.u16()))
    if v5:
        _properties(r, "properties", out)
    if not r.left():
        raise Malformed("no topic filter")
    i = 0
    while r.left():
        out.append(("filters[%d]" % i, r.str()))
        if options:
            r.u8()
        i += 1


def _unsubscribe(r, flags, v5, out):
    _subscribe(r, flags, v5, out, options=False)


def _suback(r, flags, v5, out):
    """SUBACK, UNSUBACK: reason codes only."""
    out.append(("packet_id", r.u16()))
    if v5:
        _properties(r, "properties", out)
    r.take(r.left())


def _empty(r, flags, v5, out):
    pass


def _disconnect(r, flags, v5, out):
    """DISCONNECT, AUTH (MQTT 5: optional reason code and properties)."""
    if v5 and r.left():
        out.append(("reason_code", r.u8()))
        if r.left():
            _properties(r, "properties", out)


_PARSERS = {
    1: _connect, 2: _connack, 3: _publish, 4: _ack, 5: _ack, 6: _ack, 7: _ack,
    8: _subscribe, 9: _suback, 10: _unsubscribe, 11: _suback, 12: _empty, 13: _empty,
    14: _disconnect, 15: _disconnect,
}


def _parse(ptype, flags, body, v5):
    out = []
    r = _Reader(body)
    level = _PARSERS[ptype](r, flags, v5, out)
    if r.left():
        raise Malformed("%d bytes after the %s packet" % (r.left(), TYPES[ptype]))
    return out, level


class _State:
    """Per-connection MQTT state (``state.extra["mqtt"]``)."""

    __slots__ = ("level", "data", "skip")

    def __init__(self):
        self.level = None  # protocol level: 3, 4 (3.1.1) or 5
        self.data = Pending()  # incomplete packet
        self.skip = 0  # bytes of an oversized packet still to come


def _remaining_length(data, pos):
    """The fixed header's remaining length: a VarInt of at most four bytes."""
    return varint(data, pos, 4)


@implementer(IDecoder)
class MQTTDecoder:
    """MQTT control packets in WebSocket messages."""

    name = "mqtt"
    #: A PUBLISH payload that is not UTF-8 is not a param: only ``raw`` shows it.
    complete = False

    def decode(self, payload, is_binary, limits, state):
        raw = bytes_text(payload) if is_binary else payload.decode("utf-8", "replace")
        st = None
        if state is not None:
            st = state.extra.get("mqtt")
            if st is None:
                st = state.extra["mqtt"] = _State()
        ctx = Ctx(limits)
        error, event = _decode(ctx, payload, limits, st)
        return ctx.result("mqtt", event, raw, error)

    def sniff_binary(self, payload):
        """A CONNECT packet: the first thing an MQTT client sends."""
        if len(payload) < 12 or payload[0] != 0x10:
            return False
        length, k = _remaining_length(payload, 1)
        if length is None or k + length > len(payload) or length < 10:
            return False
        n = int.from_bytes(payload[k:k + 2], "big")
        if n not in (4, 6) or k + 3 + n > len(payload):
            return False
        return (payload[k + 2:k + 2 + n], payload[k + 2 + n]) in _PROTOCOLS


def _decode(ctx, data, limits, st):
    cap = limits.max_expanded_bytes
    error = event = None
    if st is not None:
        data, complete = resume_record(st, data, ctx, lambda head: _remaining_length(head, 1), 5)
        if not complete:
            _partial(ctx, data)
            return None, None
    n = len(data)
    pos = 0
    index = 0
    topic = None  # the first PUBLISH topic, else the first filter: the event
    try:
        while pos < n:
            ptype = data[pos] >> 4
            if ptype == 0:
                return error or "reserved mqtt packet type 0 at byte %d" % pos, topic or event
            length, k = _remaining_length(data, pos + 1)
            if length is None:
                if k < 0:
                    return error or "invalid mqtt remaining length at byte %d" % pos, topic or event
                break  # incomplete header: buffer
            if length > cap:
                ctx.trunc("size")
                if st is not None:
                    st.skip = max(0, k + length - n)
                return error or "mqtt packet of %d bytes exceeds %d" % (length, cap), topic or event
            if k + length > n:
                break
            if index >= limits.max_params:
                ctx.trunc("params")
                return error, topic or event
            e, t, f = _packet(ctx, ptype, data[pos] & 0x0F, data[k:k + length],
                              record_path("mqtt", index), st, limits)
            index += 1
            pos = k + length
            error = error or e
            topic = topic or t
            event = event or f
    except Stop:
        return error, topic or event
    if pos < n:
        if st is not None:
            st.data.add(data[pos:])
        else:
            error = error or "incomplete mqtt packet"
        _partial(ctx, data[pos:])
    return error, topic or event


def _partial(ctx, fragment):
    """The part of this message that starts a packet not complete yet: shown now (its bytes
    are in no other param), decoded in full once the packet completes."""
    try:
        walk(ctx, bytes_text(fragment), "mqtt.partial", 0)
    except Stop:
        pass


def _packet(ctx, ptype, flags, body, prefix, st, limits):
    """Emit one packet; returns (error, PUBLISH topic, first topic filter)."""
    ctx.add(prefix + ".type", TYPES[ptype])
    level = st.level if st is not None else None
    if ptype == 2 and level is None:
        level = 4 if len(body) == 2 else 5
        if st is not None:
            st.level = level
    try:
        if level is None and ptype != 1:
            try:
                fields, _ = _parse(ptype, flags, body, True)
            except Malformed:
                fields, _ = _parse(ptype, flags, body, False)
        else:
            fields, new_level = _parse(ptype, flags, body, level == 5)
            if ptype == 1 and st is not None:
                st.level = new_level
    except Malformed as e:
        walk(ctx, bytes_text(body), prefix + ".body", 0)
        return "invalid mqtt %s packet: %s" % (TYPES[ptype], e), None, None
    topic = first_filter = None
    for name, v in fields:
        path = prefix + "." + name
        t = type(v)
        if t is str:
            if name == "topic":
                topic = v
            elif name == "filters[0]":
                first_filter = v
            walk(ctx, v, path, 1)
        elif t is int:
            ctx.add(path, str(v))
        elif t is _Payload:
            _payload(ctx, v, path, limits)
        elif t is _Key:
            ctx.add(path, str(v))
        else:  # binary data: password, correlation / authentication data
            walk(ctx, bytes_text(v), path, 1)
    return None, topic, first_filter


def _payload(ctx, data, path, limits):
    if not data:
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    obj = json_root(text, limits)
    walk(ctx, text if obj is None else obj, path, 1)


DECODERS = [MQTTDecoder()]
SUBPROTOCOLS = {"mqtt": "mqtt", "mqttv3.1": "mqtt"}
