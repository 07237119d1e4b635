"""The values of a message of the commonest shapes, for a detector that needs values only.

Almost every chat message is one of a few shapes: a line of text, a flat JSON
object of scalars (``{"type": "chat", "user": "u17", "text": "..."}``), a
Socket.IO event with string arguments (``42["chat message", "..."]``), a
SignalR invocation with string arguments (``{"type":1,"target":"Send",
"arguments":["..."]}`` and its 0x1e), a STOMP ``SEND`` frame with a text or
flat JSON body, or a graphql-ws operation with flat variables. For a
route whose only inspector is the built-in detector and that has no rules, the
parameter paths, the ``Decoded`` value and the framework operations are needed
only when something matched; the pipeline asks :func:`plain_values` for the
values alone, and decodes the message in full only when one of them matched.

:func:`plain_values` returns exactly the values that full decoding would give
the detector (``wsfw.inspection.detect.scannable``: the same strings, values of
one character left out, the ``raw`` copy left out), or ``None`` whenever the
message is not plainly one of these shapes or anything would make full
decoding differ: a nested encoding to follow (``may_nest``, then :func:`nests`), a bound that could
be reached, a key the path rules look at, Socket.IO attachments, a framework
not yet settled on the connection. ``None`` only means "decode it".
"""

from __future__ import annotations

from . import GENERIC, looks_like_socketio
from ._walk import (_JSON_START, _WS_CHARS, Ctx, Stop, flat_text, is_plain_key, json_root, may_nest, parse_json,
                    path_rule_key, walk)
from .graphqlws import _OPERATION_TYPES
from .signalr import RS, TYPES
from .stomp import _KNOWN_HEADERS, _SOCKJS_START, _UNESCAPED, COMMANDS, is_json, parse_frames

#: Socket.IO EVENT arguments taken here; longer events are decoded in full (paths differ past 32).
MAX_ARGS = 32


def plain_values(payload: bytes, framing: str, state, limits) -> list[str] | None:
    """The detector's values for a text message of a plain shape (see the module), else None."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if framing == "auto":
        # Only once the first message (decoded in full) has settled the connection: on a
        # framework it claimed, as that framework's messages; otherwise, a message that looks
        # like a Socket.IO packet is decoded as one (statelessly, as full decoding does).
        if state is None or state.framing is None:
            return None
        if state.framing != GENERIC:
            if state.framing == "signalr":
                return _invocation_values(text, state, limits)
            if state.framing == "stomp":
                return _frame_values(payload, state, limits)
            return _operation_values(text, limits) if state.framing == "graphqlws" else None
        first = text[:1]
        # 42[ is the commonest Socket.IO packet, and looks like one: spare the sniffer's regex.
        if first == "4" and (text[:3] == "42[" or looks_like_socketio(text)):
            return _event_values(text, None, limits)
        if first in _JSON_START or first in _WS_CHARS:
            obj = json_root(text, limits)
            if obj is not None:
                return flat_values(obj, limits)
        return _text_values(text, limits)
    if framing == "text":
        return _text_values(text, limits)
    if framing == "json":
        return flat_values(json_root(text, limits), limits)
    if framing == "socketio":
        return _event_values(text, state, limits)
    if framing == "signalr":
        return _invocation_values(text, state, limits)
    if framing == "stomp":
        return _frame_values(payload, state, limits)
    if framing == "graphqlws":
        return _operation_values(text, limits)
    return None


def _text_values(text: str, limits) -> list[str] | None:
    # The condition under which the text decoder gives the one param ("text", text).
    if (len(text) <= limits.max_expanded_bytes and limits.max_params > 0
            and (limits.max_depth <= 0 or len(text) <= 2 or not may_nest(text))):
        return [text] if len(text) > 1 else []
    return None


def flat_values(obj, limits) -> list[str] | None:
    """The detector's values of a flat object of scalars under plain keys that no path rule
    reads: what ``wsfw.decoders._walk.flat_params`` would emit, values only (the same
    conditions, the same texts), or None."""
    if type(obj) is not dict or limits.max_depth < 2 or len(obj) > limits.max_params or len(obj) > 64:
        return None
    values = []
    budget = limits.max_expanded_bytes
    keys = _VALUE_KEYS
    for k, v in obj.items():
        ok = keys.get(k)
        if ok is None:
            ok = _value_key(k)
        if not ok:
            return None
        if type(v) is str:  # the common case, without a call
            if len(v) > 2 and may_nest(v) and nests(v, limits):
                return None  # a string full decoding would decode further
        else:
            v = flat_text(v, False)
            if v is None:
                return None
        budget -= len(v)
        if len(v) > 1:
            values.append(v)
    return values if budget >= 0 else None


#: key -> whether flat_values takes it (a plain key no path rule reads): keys repeat.
_VALUE_KEYS: dict[str, bool] = {}
_CACHE_MAX = 4096  # entries of each of this module's caches


def _value_key(k: str) -> bool:
    ok = is_plain_key(k) and not path_rule_key(k)
    if len(k) <= 64:
        if len(_VALUE_KEYS) >= _CACHE_MAX:
            _VALUE_KEYS.clear()
        _VALUE_KEYS[k] = ok
    return ok


def _event_values(text: str, state, limits) -> list[str] | None:
    """``42[<event name>, <string>...]`` on the default namespace, without an ack id."""
    if text[:3] != '42[' or (state is not None and state.pending is not None) or limits.max_depth < 2:
        return None
    args = json_root(text[2:], limits)
    if type(args) is not list or not 1 <= len(args) <= MAX_ARGS + 1 or len(args) + 3 > limits.max_params:
        return None
    values = []
    size = _add_strings(args, values, limits)
    return values if size is not None and size <= limits.max_expanded_bytes else None


def _invocation_values(text: str, state, limits) -> list[str] | None:
    """One SignalR JSON record, an Invocation (type 1) whose other members are strings or arrays
    of strings under plain keys: ``{"type": 1, "target": "Send", "arguments": ["..."]}``."""
    st = state.extra.get("signalr") if state is not None else None
    if (state is not None and (st is None or st.discard or st.text.size)) or limits.max_depth < 2 \
            or text.find(RS) != len(text) - 1:
        return None  # state to keep (or none yet), more than one record, or none complete
    obj = json_root(text[:-1], limits)
    if type(obj) is not dict or type(obj.get("type")) is not int or obj["type"] != 1:
        return None
    values = [TYPES[1]]
    count, size = 1, len(TYPES[1])  # the params full decoding emits, and their characters
    for key, value in obj.items():
        if key == "type":
            continue
        if not _value_key(key):
            return None
        items = value if type(value) is list else (value,)
        added = _add_strings(items, values, limits)
        if added is None:
            return None
        count += len(items)
        size += added
    return values if _within(count, size, limits) else None


def _frame_values(payload: bytes, state, limits) -> list[str] | None:
    """One complete STOMP frame outside SockJS, on a connection with no unfinished frame, whose
    headers are the specs' own and ``destination``, without escapes, and whose body is text or
    a flat JSON object: ``SEND`` / ``destination:/queue/chat`` / ``content-type:text/plain``."""
    if (state is not None and "stomp" in state.extra) or payload[:1] == b"" or payload[0] in _SOCKJS_START:
        return None
    frames, tail, problem = parse_frames(payload, 2)
    if len(frames) != 1 or tail is not None or problem is not None:
        return None
    frame = frames[0]
    values = []
    strings = [COMMANDS[frame.command]]  # the command, header values, a text body: a param each
    content_type = None
    if frame.head:
        escaped = frame.command not in _UNESCAPED
        for line in frame.head.decode("utf-8").split("\n")[1:]:
            if line[-1:] == "\r":
                line = line[:-1]
            name, _, value = line.partition(":")
            if (escaped and "\\" in line) or (name != "destination" and name not in _KNOWN_HEADERS):
                return None  # escapes to undo, or a header name that is a param of its own
            if name == "content-type" and content_type is None:
                content_type = value
            strings.append(value)
    body = frame.body.decode("utf-8")
    obj = body
    if body and content_type is not None and is_json(content_type):
        try:
            obj = parse_json(body, limits.max_depth, 4 * limits.max_params + 64)
        except (ValueError, RecursionError):
            obj = body
    if type(obj) is str:  # a text body, or a JSON string: its value is what full decoding walks
        if body:
            strings.append(obj)
        return values if _within(len(strings), _add_strings(strings, values, limits), limits) else None
    size = _add_strings(strings, values, limits)
    added = _add_object(obj, values, limits)  # a JSON body: a flat object, or decode in full
    if size is None or added is None:
        return None
    return values if _within(len(strings) + len(obj), size + added, limits) else None


def _operation_values(text: str, limits) -> list[str] | None:
    """A graphql-ws operation (``subscribe`` / ``start``) with plain top-level members and a
    payload of a string query, an optional string operationName and flat variables:
    ``{"type": "subscribe", "id": "1", "payload": {"query": "...", "variables": {"q": "..."}}}``."""
    if limits.max_depth < 4:
        return None
    obj = json_root(text, limits)
    if type(obj) is not dict or type(obj.get("type")) is not str or obj["type"] not in _OPERATION_TYPES:
        return None
    payload = obj.get("payload")
    if type(payload) is not dict or not payload.keys() <= _PLAIN_OPERATION or type(payload.get("query")) is not str:
        return None
    values = []
    size = _add_object({k: v for k, v in obj.items() if k != "payload"}, values, limits)  # type, id
    strings = [payload[k] for k in ("query", "operationName") if k in payload]  # the decoder's order
    added = _add_strings(strings, values, limits)
    if size is None or added is None:
        return None
    count, size = len(obj) - 1 + len(strings), size + added
    variables = payload.get("variables")
    if variables is not None:
        added = _add_object(variables, values, limits)
        if added is None:
            return None
        count += len(variables)
        size += added
    elif "variables" in payload:
        values.append("null")  # walked as JSON null
        count += 1
        size += 4
    return values if _within(count, size, limits) else None


#: The payload members an operation may have here (extensions and others: decode in full).
_PLAIN_OPERATION = frozenset(("query", "operationName", "variables"))


def _add_object(obj, values: list[str], limits) -> int | None:
    """Append to ``values`` the detector's values of a flat object (:func:`flat_values`); at
    least the characters full decoding emits for it (one more per value left out), or None."""
    more = flat_values(obj, limits)
    if more is None:
        return None
    values += more
    return sum(map(len, more)) + len(obj)


def _within(count: int, size: int | None, limits) -> bool:
    """Whether ``count`` params of ``size`` characters stay within the decoding bounds."""
    return size is not None and count <= limits.max_params and size <= limits.max_expanded_bytes


def _add_strings(items, values: list[str], limits) -> int | None:
    """Append to ``values`` the strings of ``items`` the detector scans (longer than one
    character); their total length, or None when one is not a string, or has a nested
    encoding full decoding would follow."""
    size = 0
    for item in items:
        if type(item) is not str or (len(item) > 2 and may_nest(item) and nests(item, limits)):
            return None
        size += len(item)
        if len(item) > 1:
            values.append(item)
    return size


def nests(value: str, limits) -> bool:
    """Whether full decoding emits more than ``value`` itself (a nested decoding of it), for a
    string that passed ``may_nest``.

    ``may_nest`` is a cheap necessary condition that most prose fails; what passes it (ids,
    timestamps, content types, tokens: 16 characters without a blank) is walked the way full
    decoding walks it, and the answer is remembered for short values, which repeat (a
    connection's destination and content type, user and room ids)."""
    key = (value, limits)
    known = _NESTS.get(key)
    if known is None:
        ctx = Ctx(limits)
        try:
            walk(ctx, value, "v", 0)
        except Stop:  # a bound reached: full decoding would say so
            known = True
        else:
            known = len(ctx.params) != 1 or ctx.truncated is not None
        if len(value) <= 128:
            if len(_NESTS) >= _CACHE_MAX:
                _NESTS.clear()
            _NESTS[key] = known
    return known


#: (value, limits) -> nests()'s answer, for values up to 128 characters.
_NESTS: dict = {}
