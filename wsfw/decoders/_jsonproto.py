"""Shared plumbing of the JSON-based framework decoders (GraphQL over WebSocket, JSON-RPC,
ActionCable, Phoenix) and the text ones (STOMP).

They all take a message the way the built-in JSON decoder does (invalid UTF-8 is replaced and
reported, binary messages are decoded only when they are UTF-8 text, anything else is raw), so
the fallback behaviour is identical whichever framing a route names.
"""

from __future__ import annotations

from ._walk import Partial, is_plain_key, key_path, parse_json, walk
from .base import Decoded
from .socketio import bytes_text

__all__ = ["json_message", "member_path", "raw", "unwrap", "utf8", "walk_members"]


def utf8(payload):
    """(text, error): the message text, with U+FFFD and an error for invalid UTF-8."""
    try:
        return payload.decode("utf-8"), None
    except UnicodeDecodeError:
        return payload.decode("utf-8", "replace"), "invalid utf-8"


def raw(payload, is_binary):
    """The undecoded message as the single ``raw`` param (binary: UTF-8, else latin-1)."""
    text = bytes_text(payload) if is_binary else payload.decode("utf-8", "replace")
    return Decoded("raw", None, (("raw", text),))


def json_message(decoder, payload, is_binary, limits, state):
    """Parse a JSON message and hand it to ``decoder.decode_json``.

    Not JSON: a text message is a malformed frame of the protocol (``invalid json`` with the
    ``raw`` param); a binary one is some other payload the protocol carries, left raw.
    """
    if is_binary:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return raw(payload, True)
        error = None
    else:
        text, error = utf8(payload)
    try:
        obj = parse_json(text, limits.max_depth, 4 * limits.max_params + 64)
    except ValueError:
        if is_binary:
            return raw(payload, True)
        return Decoded(decoder.name, None, (("raw", text),), None, error or "invalid json")
    return decoder.decode_json(text, obj, limits, state, error)


def unwrap(ctx, obj):
    """The value parse_json built; a Partial (huge document, prefix only) marks truncation."""
    if type(obj) is Partial:
        ctx.trunc("params")
        return obj.value
    return obj


def member_path(ctx, prefix, key):
    """Path of member ``key`` under ``prefix`` in the JSON walker's style.

    A key that is not a plain identifier is bracketed and also emitted as its own param
    (``prefix["$ne"]<key>``) so value detectors see it, exactly as walk() does.
    """
    if is_plain_key(key):
        return prefix + "." + key
    path = key_path(prefix, key)
    ctx.add(path + "<key>", key)
    return path


def walk_members(ctx, obj, prefix, depth, skip=()):
    """Walk the members of object ``obj`` (at ``depth``) as ``prefix.<key>``, except ``skip``.

    The framework decoders walk the top-level object themselves (to name and interpret the
    framework's own fields); everything else in it goes through here so no data is unseen.
    """
    if depth >= ctx.max_depth:
        ctx.trunc("depth")
        return
    depth += 1
    for k, v in obj.items():
        if k in skip:
            continue
        walk(ctx, v, member_path(ctx, prefix, k), depth)
