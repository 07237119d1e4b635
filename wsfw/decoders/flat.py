"""The values of a message of the commonest shapes, for a detector that needs values only.

Almost every chat message is one of three shapes: a line of text, a flat JSON
object of scalars (``{"type": "chat", "user": "u17", "text": "..."}``) or a
Socket.IO event with string arguments (``42["chat message", "..."]``). For a
route whose only inspector is the built-in detector and that has no rules, the
parameter paths, the ``Decoded`` value and the framework operations are needed
only when something matched; the pipeline asks :func:`plain_values` for the
values alone, and decodes the message in full only when one of them matched.

:func:`plain_values` returns exactly the values that full decoding would give
the detector (``wsfw.inspection.detect.scannable``: the same strings, values of
one character left out, the ``raw`` copy left out), or ``None`` whenever the
message is not plainly one of these shapes or anything would make full
decoding differ: a nested encoding to follow (``may_nest``), a bound that could
be reached, a key the path rules look at, Socket.IO attachments, a framework
not yet settled on the connection. ``None`` only means "decode it".
"""

from __future__ import annotations

from . import _SOCKETIO_SNIFF, GENERIC
from ._walk import _JSON_START, _WS_CHARS, flat_params, json_root, may_nest, parse_json

#: Socket.IO EVENT arguments taken here; longer events are decoded in full (paths differ past 32).
MAX_ARGS = 32


def plain_values(payload: bytes, framing: str, state, limits) -> list[str] | None:
    """The detector's values for a text message of a plain shape (see the module), else None."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if framing == "auto":
        # Only once the connection has shown no framework (the first message is decoded in full,
        # as it may claim one). A message that looks like a Socket.IO packet is decoded as one
        # (statelessly: such a connection has no Socket.IO framing to keep state for).
        if state is None or state.framing != GENERIC:
            return None
        if text[:1] == "4" and _SOCKETIO_SNIFF.match(text):
            return _event_values(text, None, limits)
        first = text[:1]
        if first in _JSON_START or first in _WS_CHARS:
            obj = json_root(text, limits)
            if obj is not None:
                return _object_values(obj, limits)
        return _text_values(text, limits)
    if framing == "text":
        return _text_values(text, limits)
    if framing == "json":
        try:
            obj = parse_json(text, limits.max_depth, 4 * limits.max_params + 64)
        except ValueError:
            return None
        return _object_values(obj, limits)
    if framing == "socketio":
        return _event_values(text, state, limits)
    return None


def _text_values(text: str, limits) -> list[str] | None:
    # The condition under which the text decoder gives the one param ("text", text).
    if (len(text) <= limits.max_expanded_bytes and limits.max_params > 0
            and (limits.max_depth <= 0 or len(text) <= 2 or not may_nest(text))):
        return [text] if len(text) > 1 else []
    return None


def _object_values(obj, limits) -> list[str] | None:
    return flat_params("json", obj, limits, values=True)


def _event_values(text: str, state, limits) -> list[str] | None:
    """``42[<event name>, <string>...]`` on the default namespace, without an ack id."""
    if text[:3] != '42[' or (state is not None and state.pending is not None) or limits.max_depth < 2:
        return None
    try:
        args = parse_json(text[2:], limits.max_depth, 4 * limits.max_params + 64)
    except ValueError:
        return None
    if type(args) is not list or not 1 <= len(args) <= MAX_ARGS + 1 or len(args) + 3 > limits.max_params:
        return None
    budget = limits.max_expanded_bytes
    values = []
    for value in args:
        if type(value) is not str or (len(value) > 2 and may_nest(value)):
            return None
        budget -= len(value)
        if len(value) > 1:
            values.append(value)
    return values if budget >= 0 else None
