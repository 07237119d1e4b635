"""Engine.IO v4 + Socket.IO v5 decoder (WebSocket messages and long-polling packets).

Params:

- Engine.IO control packets: ``engineio.type`` (open/close/upgrade...) for open, close and
  unknown data; ``engineio.open.*`` for the open handshake JSON. ping, pong, noop, upgrade and
  the ``2probe``/``3probe`` probes produce no params besides ``raw``.
- Socket.IO packets (Engine.IO type 4): ``socketio.type`` (CONNECT, EVENT, ...),
  ``socketio.namespace`` (always, "/" by default), ``socketio.ack_id`` (when present),
  ``socketio.attachments`` (binary packets), ``socketio.event`` (EVENT / BINARY_EVENT),
  ``socketio.args[i]`` (arguments after the event name, walked like JSON),
  ``socketio.auth.*`` (CONNECT payload), ``socketio.error.*`` (CONNECT_ERROR payload),
  ``socketio.data`` (a payload of an unexpected shape).
- Binary attachments: the placeholder's path plus ``<binary>``, e.g. ``socketio.args[0]<binary>``
  (``socketio.attachments[n]<binary>`` when the placeholder was not seen).
"""

from __future__ import annotations

import re

from zope.interface import implementer

from ._walk import Ctx, Num, Partial, Stop, may_nest, nested, parse_json, walk
from .base import Decoded, IDecoder

ENGINEIO_TYPES = {
    "0": "open",
    "1": "close",
    "2": "ping",
    "3": "pong",
    "4": "message",
    "5": "upgrade",
    "6": "noop",
}
SOCKETIO_TYPES = {
    "0": "CONNECT",
    "1": "DISCONNECT",
    "2": "EVENT",
    "3": "ACK",
    "4": "CONNECT_ERROR",
    "5": "BINARY_EVENT",
    "6": "BINARY_ACK",
}
_QUIET = frozenset("2356")  # ping, pong, upgrade, noop: raw only
_DIGITS = re.compile(r"[0-9]*")
_EVENT_NAME = re.compile(r'[ \t\n\r]*\[[ \t\n\r]*("(?:[^"\\\x00-\x1f]|\\.){0,1024}")')
_MAX_ATTACHMENTS = 10_000


def bytes_text(payload):
    """Binary payload as text: UTF-8 when valid, else latin-1 (lossless byte view)."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


def decode_binary(payload, limits, state):
    """A binary Engine.IO message: a Socket.IO attachment when one is pending, else raw.

    An attachment that is not UTF-8 (an image, compressed or encrypted data) is
    opaque ("binary"), like a binary message no decoder recognises: read as
    Latin-1 its bytes match text signatures by chance (a lone CR is a header
    injection), so it is bounded by the size caps instead of scanned.
    """
    try:
        text = payload.decode("utf-8")
        opaque = False
    except UnicodeDecodeError:
        text = payload.decode("latin-1")
        opaque = True
    att = state.take_attachment() if state is not None else None
    if att is None:
        return Decoded("raw", None, (("raw", text),))
    event, path = att
    if opaque:
        return Decoded("binary", event, (("raw", text),))
    ctx = Ctx(limits)
    try:
        walk(ctx, text, path + "<binary>", 1)
    except Stop:
        pass
    return ctx.result("socketio", event, text)


def decode_text(text, limits, state, error=None):
    """One Engine.IO text packet (WebSocket text message or polling packet)."""
    t = text[:1]
    if t == "4":
        return decode_socketio(text, limits, state, error)
    if state is not None:
        state.reset()
    ctx = Ctx(limits)
    if t in _QUIET:
        return ctx.result("engineio", None, text, error)
    name = ENGINEIO_TYPES.get(t)
    if name is None:
        return ctx.result("engineio", None, text, error or "unknown engine.io packet type")
    data = text[1:]
    try:
        ctx.add("engineio.type", name)
        if data:
            if t == "0":
                try:
                    obj = parse_json(data, limits.max_depth, 4 * limits.max_params + 64)
                except ValueError:
                    error = error or "invalid engine.io open packet"
                    walk(ctx, data, "engineio.data", 0)
                else:
                    walk(ctx, obj, "engineio.open", 0)
            else:
                walk(ctx, data, "engineio.data", 0)
    except Stop:
        pass
    return ctx.result("engineio", None, text, error)


def decode_socketio(text, limits, state, error=None):
    """An Engine.IO message packet ``4<socket.io packet>``."""
    if state is not None and state.pending is not None:
        # socket.io-parser rejects text while reconstructing; so do we (the packet is new).
        state.reset()
    ctx = Ctx(limits)
    params = ctx.params
    n = len(text)
    t = text[1:2]
    name = SOCKETIO_TYPES.get(t)
    if name is None:
        try:
            if n > 1:
                walk(ctx, text[1:], "engineio.data", 0)
        except Stop:
            pass
        return ctx.result("socketio", None, text, error or "invalid socket.io packet type")
    # Header params (at most 4 short strings) bypass the bounds; trimmed below if needed.
    params.append(("socketio.type", name))
    i = 2
    attachments = 0
    if t == "5" or t == "6":
        j = text.find("-", 2)
        digits = text[2:j]
        if j < 0 or not digits.isdigit() or not digits.isascii() or len(digits) > 9:
            return ctx.result("socketio", None, text, error or "invalid attachment count")
        attachments = int(digits)
        params.append(("socketio.attachments", digits))
        i = j + 1
    c = text[i : i + 1]
    if c == "/":
        j = text.find(",", i)
        if j < 0:
            nsp = text[i:]
            i = n
        else:
            nsp = text[i:j]
            i = j + 1
        c = text[i : i + 1]
    else:
        nsp = "/"
    params.append(("socketio.namespace", nsp))
    if c and c in _DIGIT_CHARS:
        j = _DIGITS.match(text, i).end()
        params.append(("socketio.ack_id", text[i:j]))
        i = j
    if len(params) > ctx.max_params:
        del params[ctx.max_params :]
        ctx.truncated = "params"
        return ctx.result("socketio", None, text, error)
    event = None
    if i >= n:
        if t in "2356":
            error = error or "missing socket.io payload"
        return ctx.result("socketio", None, text, error)
    try:
        payload = text[i:] if i else text
        try:
            obj = parse_json(payload, limits.max_depth, 4 * limits.max_params + 64)
        except ValueError:
            if t == "2" or t == "5":
                event = _event_name(payload)
                if event is not None:
                    ctx.add("socketio.event", event)
                    if len(event) > 2 and limits.max_depth > 1 and may_nest(event):
                        nested(ctx, event, "socketio.event", 1)
            return ctx.result("socketio", event, text, error or "invalid socket.io JSON payload")
        if type(obj) is Partial:  # a huge payload: only a bounded prefix was parsed
            ctx.trunc("params")
            obj = obj.value
        if attachments:
            ctx.placeholders = {}
        if type(obj) is list and (t == "2" or t == "5"):
            if obj and type(obj[0]) in _EVENT_NAME_TYPES:
                event = str(obj[0])
                ctx.op("socketio.event", event, obj[1:], "socketio.args")
                ctx.add("socketio.event", event)
                if len(event) > 2 and limits.max_depth > 1 and may_nest(event):
                    nested(ctx, event, "socketio.event", 1)
                _walk_args(ctx, obj, 1)
            else:
                error = error or "EVENT without a name"
                ctx.op("socketio.event", None, obj, "socketio.args")
                _walk_args(ctx, obj, 0)
        elif t == "0":
            walk(ctx, obj, "socketio.auth", 0)
            if type(obj) is not dict:
                error = error or "CONNECT payload is not an object"
        elif t == "4":
            walk(ctx, obj, "socketio.error", 0)
        elif t == "1":  # DISCONNECT with a payload
            walk(ctx, obj, "socketio.data", 0)
        elif type(obj) is not list:
            walk(ctx, obj, "socketio.data", 0)
            error = error or "%s payload is not an array" % name
        else:  # ACK, BINARY_ACK
            _walk_args(ctx, obj, 0)
    except Stop:
        pass
    if attachments and state is not None:
        state.expect(event, nsp, ctx.placeholders or {}, min(attachments, _MAX_ATTACHMENTS))
    return ctx.result("socketio", event, text, error)


_DIGIT_CHARS = frozenset("0123456789")
_EVENT_NAME_TYPES = (str, int, float, Num)  # socket.io-parser accepts string and number names
_ARG_PATHS = tuple("socketio.args[%d]" % i for i in range(32))


def _event_name(payload):
    """The event name of an EVENT payload that is not valid JSON (e.g. too deep), or None."""
    m = _EVENT_NAME.match(payload)
    if m is None:
        return None
    try:
        return parse_json(m.group(1), 1)
    except ValueError:
        return None


def _walk_args(ctx, arr, start):
    """Walk ``arr[start:]`` as ``socketio.args[0..]`` (the array itself is depth 0)."""
    if ctx.max_depth < 1:
        ctx.trunc("depth")
        return
    n = len(arr)
    i = start
    deep = ctx.max_depth > 1
    while i < n:
        k = i - start
        v = arr[i]
        path = _ARG_PATHS[k] if k < 32 else "socketio.args[%d]" % k
        if type(v) is str and not (deep and len(v) > 2 and may_nest(v)):
            # a chat line: what walk() would do, minus its dispatch
            ctx.nodes -= 1
            if ctx.nodes < 0:
                ctx.trunc("params")
                raise Stop
            ctx.add(path, v)
        else:
            walk(ctx, v, path, 1)
        i += 1


@implementer(IDecoder)
class SocketIODecoder:
    """Engine.IO v4 + Socket.IO v5 over WebSocket."""

    name = "socketio"

    def decode(self, payload, is_binary, limits, state):
        if is_binary:
            return decode_binary(payload, limits, state)
        try:
            text = payload.decode("utf-8")
            error = None
        except UnicodeDecodeError:
            text = payload.decode("utf-8", "replace")
            error = "invalid utf-8"
        if not text:
            return Decoded("engineio", None, (("raw", ""),), None, error or "empty engine.io packet")
        return decode_text(text, limits, state, error)
