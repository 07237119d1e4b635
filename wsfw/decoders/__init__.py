"""Message decoders: every WebSocket message (or polling body) becomes named parameters.

``decode_message`` turns one message into a :class:`Decoded` whose ``params`` are
``(path, value)`` pairs (values always ``str``) for the detectors. It never raises.

Param naming
------------
- ``raw``: the whole message text, always present (omitted only when it equals the single
  decoded value, e.g. a plain text message), so a decoder gap never blinds detection.
  Binary messages are shown as UTF-8 when valid, else latin-1 (one char per byte).
- text: ``text``.
- JSON: ``json`` is the root; members ``json.user.name``; elements ``json.items[0]``.
  Keys that are not plain identifiers (plain = ASCII identifier, not starting with ``_``, not
  ``constructor``/``prototype``) are written JSON-quoted in brackets, ``json.user["$ne"]``, and
  also emitted as a param of their own whose value is the key: ``("json.user[\\"$ne\\"]<key>",
  "$ne")``, ``("json[\\"__proto__\\"]<key>", "__proto__")``. Numbers keep their source text;
  true/false/null become ``"true"``/``"false"``/``"null"``; containers produce no param of
  their own.
- Socket.IO: ``socketio.type``, ``socketio.namespace``, ``socketio.ack_id``, ``socketio.event``,
  ``socketio.args[i]`` (after the event name; walked like JSON: ``socketio.args[1].user.name``),
  ``socketio.auth.*`` (CONNECT), ``socketio.error.*`` (CONNECT_ERROR), binary attachments at
  ``<placeholder path><binary>``; Engine.IO: ``engineio.type``, ``engineio.open.*``.
- STOMP (also inside SockJS): ``stomp.command``, ``stomp.destination``, ``stomp.headers.<name>``
  (``stomp.headers["content-type"]``), ``stomp.body`` (JSON bodies walked: ``stomp.body.a``),
  ``stomp.partial``; ``stomp[i].*`` when a message holds several frames; ``sockjs.close.*``.
- GraphQL over WebSocket: ``graphql.type``, ``graphql.id``, ``graphql.query``,
  ``graphql.operationName``, ``graphql.variables.*``, ``graphql.extensions.*``,
  ``graphql.payload.*`` (other payloads).
- JSON-RPC: ``jsonrpc.method``, ``jsonrpc.id``, ``jsonrpc.params.*``, ``jsonrpc.result.*``,
  ``jsonrpc.error.*``; batches ``jsonrpc[i].method``.
- ActionCable: ``actioncable.command`` / ``.type``, the JSON-in-string identifier and data
  decoded as ``actioncable.identifier.channel``, ``actioncable.data.action``, ``actioncable.message.*``.
- Phoenix channels (V1 object, V2 array): ``phoenix.topic``, ``phoenix.event``, ``phoenix.ref``,
  ``phoenix.join_ref``, ``phoenix.payload.*``.
- Records / packets / batched messages of the formats below: the first of a message is
  unprefixed (``signalr.target``), the i-th (i >= 1) indexed (``signalr[1].target``).
- SignalR (JSON and MessagePack hub protocols): ``signalr.type`` (Invocation ...),
  ``signalr.target``, ``signalr.arguments[i]...``, ``signalr.invocationId``,
  ``signalr.headers.*``, ``signalr.streamIds[i]``, ``signalr.item...``, ``signalr.result...``,
  ``signalr.error``, ``signalr.protocol`` (handshake), ``signalr.record`` (undecodable record),
  ``signalr.partial`` (this message's part of a record completed by a later one).
- WAMP (JSON / MessagePack / CBOR, batched or not): ``wamp.type`` (CALL ...), ``wamp.request``,
  ``wamp.procedure`` / ``wamp.topic`` / ``wamp.realm`` / ``wamp.uri``, ``wamp.options...``,
  ``wamp.details...``, ``wamp.args[i]...``, ``wamp.kwargs...``.
- MQTT 3.1.1 / 5: ``mqtt.type``, ``mqtt.topic``, ``mqtt.payload...`` (JSON walked, else text),
  ``mqtt.client_id``, ``mqtt.username``, ``mqtt.password``, ``mqtt.will.*``,
  ``mqtt.filters[i]``, ``mqtt.properties.<name>``, ``mqtt.properties.user.<key>``,
  ``mqtt.partial`` (as ``signalr.partial``).
- MessagePack / CBOR / BSON messages: walked like JSON from ``msgpack`` / ``cbor`` / ``bson``;
  bytes values become text (UTF-8, else latin-1) and are followed like strings; dates,
  ObjectIds, ext types and tags become their text; non-string map keys their text.
- Nested encodings of any string value, each kept next to the original, applied recursively
  within ``Limits.max_depth``: ``<json>`` (string holding a JSON object/array, then walked:
  ``json.data<json>.a``), ``<url>`` (percent-decoding to different, valid UTF-8), ``<html>``
  (HTML entities), ``<js>`` (``\\uXXXX``/``\\xXX`` escapes), ``<b64>`` (base64/base64url of at
  least 16 chars decoding to printable UTF-8), e.g. ``json.q<b64><url>``.

Bounds (:class:`Limits`): ``max_depth`` counts JSON containers and nested encodings,
``max_params`` counts params except ``raw``, ``max_expanded_bytes`` counts characters of param
values except ``raw``. Hitting one stops (depth: skips that subtree), and ``truncated`` names
the first bound hit. Very deep JSON is parsed by a linear fallback parser that does not build
below ``max_depth``.
"""

from __future__ import annotations

import re

import base64
import binascii

from zope.interface import implementer

from ._walk import Ctx, Stop, flat_params, json_root, may_nest, nested, parse_json, walk
from .base import NOARGS, ConnectionState, Decoded, IDecoder, Limits, Op
from .socketio import SocketIODecoder, bytes_text, decode_binary, decode_text

__all__ = [
    "COMPLETE_FORMATS",
    "SUBPROTOCOLS",
    "ConnectionState",
    "Decoded",
    "IDecoder",
    "Limits",
    "NOARGS",
    "Op",
    "decode_message",
    "decode_polling",
    "register",
    "registry",
    "select",
]

def _utf8(payload):
    try:
        return payload.decode("utf-8"), None
    except UnicodeDecodeError:
        return payload.decode("utf-8", "replace"), "invalid utf-8"


def _text_params(text, limits, error=None, fmt="text"):
    if (len(text) <= limits.max_expanded_bytes and limits.max_params > 0
            and (limits.max_depth <= 0 or len(text) <= 2 or not may_nest(text))):
        # Most text messages: one param, no nested encoding, no bound near (the
        # ``raw`` copy would equal it, so it is left out, as Ctx.result does).
        return Decoded(fmt, None, (("text", text),), None, error)
    ctx = Ctx(limits)
    try:
        ctx.add("text", text)
        if limits.max_depth > 0 and len(text) > 2 and may_nest(text):
            nested(ctx, text, "text", 0)
    except Stop:
        pass
    return ctx.result(fmt, None, text, error)


def _raw(payload, is_binary):
    text = bytes_text(payload) if is_binary else payload.decode("utf-8", "replace")
    return Decoded("raw", None, (("raw", text),))


def _json_params(text, obj, limits, error=None):
    params = flat_params("json", obj, limits)
    if params is not None:
        params.append(("raw", text))
        return Decoded("json", None, tuple(params), None, error)
    ctx = Ctx(limits)
    try:
        walk(ctx, obj, "json", 0)
    except Stop:
        pass
    return ctx.result("json", None, text, error)


@implementer(IDecoder)
class TextDecoder:
    """The message text as one ``text`` param (plus its nested encodings)."""

    name = "text"

    def decode(self, payload, is_binary, limits, state):
        if is_binary:
            return _raw(payload, True)
        text, error = _utf8(payload)
        return _text_params(text, limits, error)


@implementer(IDecoder)
class JSONDecoder:
    """A JSON document walked into ``json.*`` params."""

    name = "json"

    def decode(self, payload, is_binary, limits, state):
        if is_binary:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                return _raw(payload, True)
            error = None
        else:
            text, error = _utf8(payload)
        try:
            obj = parse_json(text, limits.max_depth, 4 * limits.max_params + 64)
        except ValueError:
            if is_binary:
                return _raw(payload, True)
            return Decoded("json", None, (("raw", text),), None, error or "invalid json")
        return _json_params(text, obj, limits, error)


@implementer(IDecoder)
class RawDecoder:
    """No decoding: the message text (binary: UTF-8 if valid, else latin-1) as ``raw``."""

    name = "raw"

    def decode(self, payload, is_binary, limits, state):
        return _raw(payload, is_binary)


_REGISTRY: dict[str, IDecoder] = {
    "text": TextDecoder(),
    "json": JSONDecoder(),
    "socketio": SocketIODecoder(),
    "raw": RawDecoder(),
}
_SIO = _REGISTRY["socketio"]

#: Negotiated ``Sec-WebSocket-Protocol`` (lower case) -> decoder name. Chosen first.
SUBPROTOCOLS: dict[str, str] = {}
# Framework decoders that can recognise their own messages on "auto" routes, in
# registration order (the order of _FRAMEWORK_MODULES).
_TEXT_SNIFFERS: list = []
_JSON_SNIFFERS: list = []
_BINARY_SNIFFERS: list = []


def registry() -> dict[str, IDecoder]:
    """Name -> decoder (a copy: the built-ins plus the framework decoders)."""
    return dict(_REGISTRY)


def register(decoder, subprotocols: dict[str, str] | None = None) -> None:
    """Add (or replace) a decoder under its ``name``, with the subprotocols that select it."""
    old = _REGISTRY.get(decoder.name)
    for sniffers in (_TEXT_SNIFFERS, _JSON_SNIFFERS, _BINARY_SNIFFERS):
        if old in sniffers:
            sniffers.remove(old)
    _REGISTRY[decoder.name] = decoder
    if hasattr(decoder, "sniff_text"):
        _TEXT_SNIFFERS.append(decoder)
    if hasattr(decoder, "sniff_json"):
        _JSON_SNIFFERS.append(decoder)
    if hasattr(decoder, "sniff_binary"):
        _BINARY_SNIFFERS.append(decoder)
    for subprotocol, name in (subprotocols or {}).items():
        SUBPROTOCOLS[subprotocol.lower()] = name


#: Framework decoder modules of this package, each with ``DECODERS`` (instances)
#: and ``SUBPROTOCOLS`` (subprotocol -> decoder name). Their order is the sniffing order.
_FRAMEWORK_MODULES: tuple[str, ...] = ("stomp", "graphqlws", "jsonrpc", "actioncable", "phoenix", "signalr", "wamp",
                                       "mqtt", "binary")


#: Formats whose params hold every data-carrying byte of a message decoded without error
#: or truncation, so the ``raw`` copy adds nothing for the detectors: the structured
#: built-ins and every framework decoder that does not set ``complete = False``.
COMPLETE_FORMATS: set[str] = {"json", "socketio", "engineio"}


def _load_frameworks():
    import importlib

    for module_name in _FRAMEWORK_MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for decoder in module.DECODERS:
            register(decoder)
            if getattr(decoder, "complete", True):
                COMPLETE_FORMATS.add(decoder.name)
        for subprotocol, name in module.SUBPROTOCOLS.items():
            SUBPROTOCOLS[subprotocol.lower()] = name


_load_frameworks()


def select(framing: str, path: str, query: str, subprotocol: str | None) -> str:
    """The decoder name for a connection: by negotiated subprotocol, then the route's
    framing, then a guess when that is "auto".

    auto: Socket.IO when the path contains ``/socket.io/`` or the query has ``EIO=4``;
    otherwise "auto" (sniffed per message by decode_message).
    """
    if subprotocol:
        name = SUBPROTOCOLS.get(subprotocol.lower())
        if name is not None:
            return name
    if framing != "auto":
        return framing
    if "/socket.io/" in (path or "") or "EIO=4" in (query or ""):
        return "socketio"
    return "auto"


#: A Socket.IO v5 packet inside an Engine.IO message: 4, a packet type 0-6,
#: optional attachments, namespace and ack id, then a JSON payload. Servers
#: mount Socket.IO on any path (its `path` option), so auto-sniffing by content
#: matters as much as the /socket.io/ default.
_SOCKETIO_SNIFF = re.compile(r"4[0-6](?:\d{1,6}-)?(?:/[^,\[{]{0,200},)?\d{0,12}[\[{]")


def looks_like_socketio(text: str) -> bool:
    """Whether ``text`` starts like a Socket.IO packet (the first character first: most text is
    told apart without the regex)."""
    return text[:1] == "4" and _SOCKETIO_SNIFF.match(text) is not None


def _claim(state, decoder):
    if state is not None:
        state.framing = decoder.name


#: ConnectionState.framing of an "auto" connection whose first message no framework
#: claimed: frameworks announce themselves at once (a handshake, CONNECT, connection_init,
#: subscribe, join, HELLO), so its later messages skip the framework sniffers.
GENERIC = ""


def _sniff(payload, is_binary, limits, state):
    frameworks = True
    if state is not None:
        if state.framing == GENERIC:
            frameworks = False
        elif state.framing is not None:
            return _REGISTRY[state.framing].decode(payload, is_binary, limits, state)
        else:
            state.framing = GENERIC  # unless a framework claims this message, below
    if is_binary:
        if frameworks:
            for decoder in _BINARY_SNIFFERS:
                if decoder.sniff_binary(payload):
                    _claim(state, decoder)
                    return decoder.decode(payload, True, limits, state)
        return _raw(payload, True)
    text, error = _utf8(payload)
    if looks_like_socketio(text):
        decoded = _SIO.decode(payload, is_binary, limits, None)
        if decoded.error is None:
            return decoded
    if frameworks:
        for decoder in _TEXT_SNIFFERS:
            if decoder.sniff_text(text):
                _claim(state, decoder)
                return decoder.decode(payload, False, limits, state)
    obj = json_root(text, limits)
    if obj is not None:
        if frameworks:
            for decoder in _JSON_SNIFFERS:
                if decoder.sniff_json(obj):
                    _claim(state, decoder)
                    return decoder.decode_json(text, obj, limits, state, error)
        return _json_params(text, obj, limits, error)
    return _text_params(text, limits, error)


def decode_message(payload, is_binary, framing, limits, state=None) -> Decoded:
    """Decode one WebSocket message with ``framing`` (what select() returned). Never raises."""
    try:
        if framing == "socketio":
            return _SIO.decode(payload, is_binary, limits, state)
        if framing == "auto":
            return _sniff(payload, is_binary, limits, state)
        dec = _REGISTRY.get(framing)
        if dec is None:
            d = _raw(payload, is_binary)
            return Decoded(d.format, None, d.params, None, "unknown framing %r" % (framing,))
        return dec.decode(payload, is_binary, limits, state)
    except Exception as e:  # a decoder bug must not blind detection or kill the connection
        return _failed(payload, is_binary, e)


def _failed(payload, is_binary, exc):
    try:
        text = bytes_text(payload) if is_binary else bytes(payload).decode("utf-8", "replace")
    except Exception:
        text = ""
    return Decoded("raw", None, (("raw", text),), None, "decoder error: %s" % type(exc).__name__)


def decode_polling(body, content_type, limits, state=None) -> list[Decoded]:
    """Decode an Engine.IO v4 long-polling body: packets separated by ``\\x1e``. Never raises.

    ``b<base64>`` packets are binary messages (Socket.IO attachments of a preceding packet).
    At most ``limits.max_params`` packets are decoded; the rest comes back as one raw Decoded
    with ``truncated="params"``. ``state`` defaults to a fresh ConnectionState for the body.
    """
    try:
        return _decode_polling(body, limits, state if state is not None else ConnectionState())
    except Exception as e:
        return [_failed(body, False, e)]


def _decode_polling(body, limits, state):
    text, error = _utf8(bytes(body))
    out = []
    if not text:
        return out
    pos = 0
    n = len(text)
    while pos <= n:
        if len(out) >= limits.max_params:
            rest = text[pos:]
            out.append(
                Decoded("raw", None, (("raw", rest[: limits.max_expanded_bytes]),), "params", error)
            )
            break
        j = text.find("\x1e", pos)
        if j < 0:
            j = n
        packet = text[pos:j]
        pos = j + 1
        if not packet:
            out.append(Decoded("engineio", None, (("raw", ""),), None, "empty engine.io packet"))
        elif packet[0] == "b":
            out.append(_polling_binary(packet, limits, state))
        else:
            out.append(decode_text(packet, limits, state, error))
    return out


def _polling_binary(packet, limits, state):
    try:
        data = base64.b64decode(packet[1:], validate=True)
    except (binascii.Error, ValueError):
        if state is not None:
            state.take_attachment()
        return Decoded("engineio", None, (("raw", packet),), None, "invalid base64 binary packet")
    return decode_binary(data, limits, state)
