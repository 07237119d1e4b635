"""STOMP 1.0-1.2 over WebSocket, plain or inside SockJS frames (Spring's SockJS + STOMP).

Params (``stomp`` for a message holding one frame; ``stomp[i]`` for each of several):

- ``stomp.command``; ``stomp.destination`` (the ``destination`` header, every occurrence);
  every other header as ``stomp.headers.<name>`` (names that are not plain identifiers in the
  JSON walker's style: ``stomp.headers["content-type"]``), values unescaped per STOMP 1.1/1.2
  (``\\n \\r \\c \\\\``; CONNECT, STOMP and CONNECTED frames are not escaped);
- ``stomp.body``: a JSON body (``content-type`` application/json or ``+json``) walked as JSON
  (``stomp.body.user.name``), any other body as one string with its nested encodings;
- ``stomp.partial``: the incomplete command or header line a message ends in;
- SockJS: ``sockjs.close.code`` / ``sockjs.close.reason`` for a close frame.

Decoded.event is the first frame's destination, else its command.

Frames are parsed as bytes because ``content-length`` counts octets and a body with a
content-length may contain NUL. A frame may span messages (stomp.js splits large frames): the
unfinished tail is kept per connection in ``state.extra["stomp"]``, at most
``Limits.max_expanded_bytes`` of it, and parsed together with the next message; the message
that completes the frame yields the whole frame. A message ending inside a frame yields what
it has (command, complete headers, the body so far, ``stomp.partial``); one that only adds
to an unfinished body yields just its part as ``stomp.body``. So every byte is inspected as a
parameter when it arrives, and decoding never depends on the ``raw`` copy being scanned.
"""

from __future__ import annotations

import re

from zope.interface import implementer

from ._jsonproto import member_path, raw, utf8
from ._walk import Ctx, Stop, is_plain_key, key_path, parse_json, walk
from .base import NOARGS, IDecoder
from .socketio import bytes_text

_COMMAND_NAMES = (
    "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT", "ABORT", "ACK",
    "NACK", "DISCONNECT", "CONNECTED", "MESSAGE", "RECEIPT", "ERROR",
)
COMMANDS = {c.encode(): c for c in _COMMAND_NAMES}
# Every proper prefix of a command: an unfinished command line is a split frame, not garbage.
_COMMAND_PREFIXES = frozenset(c[:i] for c in COMMANDS for i in range(1, len(c)))
# STOMP 1.1+: "CONNECT and CONNECTED frames do not escape" (STOMP is CONNECT's 1.1 name).
_UNESCAPED = frozenset((b"CONNECT", b"STOMP", b"CONNECTED"))
_ALT = "|".join(_COMMAND_NAMES)
# A frame (after optional heart-beat EOLs), or a SockJS array (server "a[", client "[")
# whose first element is one (its EOL JSON-escaped).
_SNIFF = re.compile(r'(?:\r?\n)*(?:%s)\r?\n|(a?\[)[ \t\r\n]*"(?:%s)(?:\\r)?\\n' % (_ALT, _ALT))
_ESCAPE = re.compile(r"\\(.?)", re.S)
_ESCAPES = {"n": "\n", "r": "\r", "c": ":", "\\": "\\"}
_SOCKJS_START = frozenset(b"ohacm[\"")
_EOL = frozenset(b"\r\n")
# The end of a header block: an empty line, or a NUL where a header line would start.
_HEAD_END = re.compile(rb"\n(?:\r?\n|\x00)")
# Searched in a header block with its bounding LFs (a literal first byte makes them fast).
_NO_COLON = re.compile(rb"\n[^:\n]*\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:([^\r\n]*)")
_DESTINATION = re.compile(rb"\ndestination:([^\r\n]*)")
# Header names of the specs: fixed vocabulary, so their bracketed path is not also emitted
# as a <key> param (which would cost a detector pass per frame for nothing).
_KNOWN_HEADERS = frozenset((
    "content-length", "content-type", "accept-version", "heart-beat", "message-id", "receipt-id",
    "host", "login", "passcode", "version", "session", "server", "id", "ack", "transaction",
    "subscription", "receipt", "message",
))


class _Frame:
    __slots__ = ("command", "head", "body", "rest")

    def __init__(self, command, head, body, rest=None):
        self.command = command  # bytes, one of COMMANDS; None while its line is unfinished
        self.head = head  # bytes: the complete header lines, each after its LF (b"" for none)
        self.body = body  # bytes
        # An unfinished frame (the message ends inside it): its incomplete command or header
        # line (b"" when the body had begun). None for a complete frame.
        self.rest = rest


def _content_length(head):
    """The first content-length header's value, None without one; ValueError if not a number."""
    m = _CONTENT_LENGTH.search(head)
    if m is None:
        return None
    value = m.group(1).strip()
    if not value.isdigit():
        raise ValueError("invalid stomp frame: content-length %r" % value[:32].decode("latin-1"))
    return int(value)


def parse_frames(data, max_frames):
    """Split ``data`` into frames: (frames, unfinished tail bytes or None, problem or None).

    Heart-beat EOLs between frames are skipped. When ``data`` ends inside a frame, that frame
    comes last with what was read of it (``rest`` set) and its bytes are the tail. Parsing stops
    at the first malformed frame (problem: the error; the frames before it are returned) or
    after ``max_frames`` frames (problem ``"params"``: each frame needs at least one param).
    Every step is one C-level search: this runs per message.
    """
    frames = []
    pos = 0
    n = len(data)
    find = data.find
    head_end = _HEAD_END.search
    while True:
        while pos < n and data[pos] in _EOL:
            pos += 1
        if pos >= n:
            return frames, None, None
        if len(frames) >= max_frames:
            return frames, None, "params"
        start = pos
        j = find(b"\n", pos)
        if j < 0:
            rest = data[pos:]
            if rest.rstrip(b"\r") in _COMMAND_PREFIXES or rest.rstrip(b"\r") in COMMANDS:
                frames.append(_Frame(None, b"", b"", rest))
                return frames, data[start:], None
            return frames, None, "invalid stomp frame: unknown command"
        command = data[pos:j]
        if command[-1:] == b"\r":
            command = command[:-1]
        if command not in COMMANDS:
            return frames, None, "invalid stomp frame: unknown command"
        m = head_end(data, j)
        he = data.rfind(b"\n", j) if m is None else m.start()  # LF ending the last header line
        if he > j and _NO_COLON.search(data, j, he + 1):
            return frames, None, "invalid stomp frame: header without ':'"
        head = data[j:he]
        if m is None:  # the message ends in the headers: complete lines, then the rest
            frames.append(_Frame(command, head, b"", data[he + 1:]))
            return frames, data[start:], None
        pos = m.end()
        if data[pos - 1] == 0:
            # NUL where a header line starts: no blank line and no body (stomper's
            # DISCONNECT); accepted, as lenient brokers do
            frames.append(_Frame(command, head, b""))
            continue
        try:
            length = _content_length(head) if head else None
        except ValueError as e:
            return frames, None, str(e)
        if length is not None:
            end = pos + length
            if end >= n:
                frames.append(_Frame(command, head, data[pos:end], b""))
                return frames, data[start:], None
            if data[end] != 0:
                return frames, None, "invalid stomp frame: no NUL after content-length octets"
        else:
            end = find(b"\x00", pos)
            if end < 0:
                frames.append(_Frame(command, head, data[pos:], b""))
                return frames, data[start:], None
        frames.append(_Frame(command, head, data[pos:end]))
        pos = end + 1


def _unescape_repl(m):
    c = m.group(1)
    # An undefined escape is a protocol error for a 1.2 broker, which rejects the frame;
    # 1.0 brokers take backslashes literally. Keep it literal: the value shows what was sent.
    return _ESCAPES.get(c, m.group(0))


def _known_path(prefix, name):
    return prefix + "." + name if is_plain_key(name) else key_path(prefix, name)


_KNOWN_PATHS = {name: _known_path("stomp.headers", name) for name in _KNOWN_HEADERS}


def _header_path(ctx, prefix, name):
    if name in _KNOWN_HEADERS:
        if prefix == "stomp":
            return _KNOWN_PATHS[name]
        return _known_path(prefix + ".headers", name)
    return member_path(ctx, prefix + ".headers", name)


def _text(b, binary):
    try:
        return b.decode("utf-8"), False
    except UnicodeDecodeError:
        return (b.decode("latin-1") if binary else b.decode("utf-8", "replace")), True


def is_json(content_type):
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == "application/json" or ct.endswith("+json")


#: Frames that name a destination the application acts on: the positive model's operations.
_OP_COMMANDS = frozenset((b"SEND", b"SUBSCRIBE", b"MESSAGE"))


def _op(ctx, frame, binary, body, path):
    """A complete SEND / MESSAGE (arguments: the body, parsed when it is JSON) or SUBSCRIBE
    (no arguments) to its first destination header, the one a broker uses."""
    ctx.op("stomp.destination", _first_destination(frame, binary), NOARGS if frame.command == b"SUBSCRIBE" else body,
           path)


def _emit_frame(ctx, frame, prefix, binary):
    """Params of one frame; returns whether some of it was not valid UTF-8."""
    if frame.command is not None:
        ctx.add(prefix + ".command", COMMANDS[frame.command])
    bad = False
    content_type = None
    if frame.head:
        head, bad = _text(frame.head, binary)
        escaped = frame.command not in _UNESCAPED
        for line in head[1:].split("\n"):
            if line[-1:] == "\r":
                line = line[:-1]
            name, _, value = line.partition(":")
            if escaped and "\\" in line:
                if "\\" in name:
                    name = _ESCAPE.sub(_unescape_repl, name)
                if "\\" in value:
                    value = _ESCAPE.sub(_unescape_repl, value)
            if name == "destination":
                path = prefix + ".destination"
            else:
                if name == "content-type" and content_type is None:
                    content_type = value
                path = _header_path(ctx, prefix, name)
            walk(ctx, value, path, 0)
    path = prefix + ".body"
    operation = frame.rest is None and frame.command in _OP_COMMANDS
    if frame.body:
        body, b = _text(frame.body, binary)
        bad = bad or b
        value = body
        if content_type is not None and frame.rest is None and is_json(content_type):
            try:
                value = parse_json(body, ctx.max_depth, ctx.nodes)
            except (ValueError, RecursionError):
                pass
        if operation:
            _op(ctx, frame, binary, value, path)
        walk(ctx, value, path, 0)
    elif operation:
        _op(ctx, frame, binary, "", path)
    if frame.rest:
        rest, b = _text(frame.rest, binary)
        walk(ctx, rest, prefix + ".partial", 0)
        bad = bad or b
    return bad


def _sockjs(ctx, text):
    """SockJS frame text -> (list of STOMP data strings or None for no data, error).

    Server frames: ``o`` open, ``h`` heartbeat, ``a[...]`` messages, ``m"..."`` one message,
    ``c[code,"reason"]`` close; a client sends ``[...]`` (or a single JSON string).
    """
    c = text[:1]
    if c == "o" or c == "h":
        return None, (None if len(text) == 1 else "invalid sockjs frame")
    body = text[1:] if c in "acm" else text
    try:
        obj = parse_json(body, 2, ctx.nodes)
    except ValueError:
        return None, "invalid sockjs frame"
    if c == "c":
        if type(obj) is list and len(obj) == 2:
            walk(ctx, obj[0], "sockjs.close.code", 1)
            walk(ctx, obj[1], "sockjs.close.reason", 1)
            return None, None
        walk(ctx, obj, "sockjs.close", 0)
        return None, "invalid sockjs close frame"
    if type(obj) is str:
        return [obj], None
    if type(obj) is not list:
        walk(ctx, obj, "sockjs", 0)
        return None, "invalid sockjs frame"
    out = []
    error = None
    for i, s in enumerate(obj):
        if type(s) is str:
            out.append(s)
        else:
            walk(ctx, s, "sockjs[%d]" % i, 1)
            error = "invalid sockjs frame: non-string message"
    return out, error


@implementer(IDecoder)
class STOMPDecoder:
    """STOMP frames (several per message, or one split over messages), plain or SockJS."""

    name = "stomp"

    def sniff_text(self, text):
        """A command line, and a frame's NUL (JSON-escaped inside SockJS) somewhere after it.

        The first messages of a STOMP connection (CONNECT / CONNECTED) are small complete
        frames; requiring the NUL keeps plain-text chat that happens to start with a word like
        ERROR on its own line from switching a connection to STOMP.
        """
        m = _SNIFF.match(text)
        if m is None:
            return False
        return ("\x00" if m.group(1) is None else "\\u0000") in text

    def decode(self, payload, is_binary, limits, state):
        payload = bytes(payload)
        if is_binary:
            text, error = bytes_text(payload), None
        else:
            text, error = utf8(payload)
        ctx = Ctx(limits)
        extra = state.extra if state is not None else None
        pending = extra.pop("stomp", None) if extra is not None else None  # (sockjs, bytes)
        sockjs = False
        data = payload
        carried = 0  # bytes of data that came from earlier messages
        try:
            if pending is not None and not pending[0]:
                data = pending[1] + payload
                carried = len(pending[1])
            elif payload[:1] and payload[0] in _SOCKJS_START and not is_binary:
                sockjs = True
                strings, error2 = _sockjs(ctx, text)
                error = error or error2
                if strings is None:  # open/heartbeat/close: an unfinished frame waits on
                    if pending is not None and error2 is None:
                        extra["stomp"] = pending
                    return ctx.result("stomp", None, text, error)
                data = "".join(strings).encode("utf-8", "surrogatepass")
                if pending is not None:
                    data = pending[1] + data
                    carried = len(pending[1])
        except Stop:
            return ctx.result("stomp", None, text, error)
        if len(data) > limits.max_expanded_bytes and carried:
            # The unfinished frame outgrew the bound: forget it, decode this message alone.
            ctx.trunc("size")
            data = data[carried:]
            carried = 0
        frames, tail, problem = parse_frames(data, limits.max_params)
        if is_binary and not frames and tail is None and problem is not None:
            return raw(payload, True)  # not STOMP: some other binary payload
        if problem == "params":
            ctx.trunc("params")
        elif problem is not None:
            error = error or problem
        if tail is not None:
            if extra is None:
                error = error or "invalid stomp frame: incomplete frame"
            elif len(tail) <= limits.max_expanded_bytes:
                extra["stomp"] = (sockjs, tail)
            else:
                ctx.trunc("size")
        if not frames:
            return ctx.result("stomp", None, text, error)
        first = frames[0]
        event = _first_destination(first, is_binary) or (COMMANDS[first.command] if first.command else None)
        bad = False
        fresh = len(data) - carried  # bytes this message added to the stream
        try:
            if len(frames) == 1 and carried and first.rest == b"" and len(first.body) >= fresh:
                # Only more of an unfinished body: just this message's part of it. The whole
                # body is inspected when the frame completes (a broker acts on complete frames
                # only); re-inspecting the body so far each time would make a frame sent in
                # tiny pieces cost quadratic time.
                chunk, bad = _text(first.body[len(first.body) - fresh:], is_binary)
                walk(ctx, chunk, "stomp.body", 0)
            elif len(frames) == 1:
                bad = _emit_frame(ctx, frames[0], "stomp", is_binary)
            else:
                for i, frame in enumerate(frames):
                    bad = _emit_frame(ctx, frame, "stomp[%d]" % i, is_binary) or bad
        except Stop:
            pass
        if bad and not is_binary:
            error = error or "invalid utf-8"
        return ctx.result("stomp", event, text, error)


def _first_destination(frame, binary):
    m = _DESTINATION.search(frame.head)
    if m is None:
        return None
    s = _text(m.group(1), binary)[0]
    if frame.command not in _UNESCAPED and "\\" in s:
        s = _ESCAPE.sub(_unescape_repl, s)
    return s


DECODERS = [STOMPDecoder()]
SUBPROTOCOLS = {"v10.stomp": "stomp", "v11.stomp": "stomp", "v12.stomp": "stomp", "stomp": "stomp"}
