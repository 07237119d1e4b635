"""Decoder data types, the IDecoder plug point and per-connection decoder state."""

from __future__ import annotations

import attrs
from typing import NamedTuple

from zope.interface import Attribute, Interface


@attrs.frozen
class Limits:
    """Hard bounds for decoding one message (or one polling packet)."""

    max_depth: int = 8  # nesting depth (JSON depth + nested encodings)
    max_params: int = 1000  # parameters per message (the "raw" param is not counted)
    max_expanded_bytes: int = 1 << 20  # total decoded text (characters) produced for one message


class _NoArgs:
    """``Op.args`` of an operation that carries no arguments (a STOMP SUBSCRIBE, a WAMP
    SUBSCRIBE / REGISTER): there is nothing for a schema to validate."""

    __slots__ = ()

    def __repr__(self):
        return "NOARGS"


NOARGS = _NoArgs()


class Op(NamedTuple):
    """One application operation a message carries, as its framework names it.

    ``field`` says which framework field names it (``socketio.event``, ``signalr.target``,
    ``stomp.destination``, ``wamp.procedure``, ``wamp.topic``, ``graphql.operationName``,
    ``jsonrpc.method``); ``name`` is that name (None when the message has the slot but no
    usable name: an EVENT without a name, an anonymous GraphQL operation); ``args`` is the
    operation's arguments exactly as decoded (JSON values; MessagePack arrays as tuples), or
    NOARGS; ``base`` is the param path of ``args`` (``socketio.args``, ``signalr[1].arguments``).
    The positive model (wsfw.policy) checks every Op of a client message; rules see their names.
    """

    field: str
    name: str | None
    args: object
    base: str


class Decoded(NamedTuple):
    """One decoded message: its format, framework event and (path, value) parameters.

    A NamedTuple rather than a frozen attrs class: one is built per message on
    the relay's hot path, and a tuple is built in half the time.
    """

    format: str  # "text" | "binary" | "json" | "engineio" | "socketio" | "raw" | a framework's name
    event: str | None  # the framework's event / target / destination / procedure, else None
    params: tuple[tuple[str, str], ...]  # (path, value), values always str
    truncated: str | None = None  # "depth" | "params" | "size" (first bound hit), else None
    error: str | None = None  # why the selected format could not be decoded
    ops: tuple[Op, ...] = ()  # the application operations (every invocation of a batch), see Op


class IDecoder(Interface):
    """A message decoder, looked up by name (the route's ``framing``).

    Framework decoders may also offer, for routes with ``framing = auto``, any of
    ``sniff_text(text) -> bool`` (cheap test on a text message, tried before JSON),
    ``sniff_json(obj) -> bool`` plus ``decode_json(text, obj, limits, state, error)``
    (a parsed JSON message of the framework's shape, so it is parsed once), and
    ``sniff_binary(payload) -> bool``. A decoder that claims a message becomes the
    connection's framing (ConnectionState.framing).
    """

    name = Attribute("The decoder's name, as used in route framing and registry()")

    def decode(payload, is_binary, limits, state):
        """Decode one message into a Decoded.

        ``payload`` is bytes, ``is_binary`` the WebSocket message type, ``limits`` a Limits and
        ``state`` a ConnectionState or None. Implementations may raise; decode_message() turns an
        exception into a raw Decoded with an error.
        """


class _Pending:
    """Socket.IO binary attachments announced by a 5x-/6x- packet and not yet received."""

    __slots__ = ("event", "namespace", "paths", "expected", "received")

    def __init__(self, event, namespace, paths, expected):
        self.event = event
        self.namespace = namespace
        self.paths = paths  # placeholder num -> path of the placeholder
        self.expected = expected
        self.received = 0


class ConnectionState:
    """Decoder state of one direction of one connection.

    A BINARY_EVENT / BINARY_ACK packet (``451-[...]``) announces N attachments; the next N
    binary messages belong to it and are decoded in that event's context, with the path of
    their placeholder plus ``<binary>``. The state is O(1) in size apart from the placeholder
    paths, which are bounded by ``Limits.max_params``.

    Use one instance per direction: attachments of client and upstream messages interleave.
    """

    __slots__ = ("pending", "framing", "extra")

    def __init__(self):
        self.pending: _Pending | None = None
        #: The framework sniffing settled on for this connection ("auto" routes): later
        #: messages (e.g. SignalR's binary records after its JSON handshake) use it too.
        self.framing: str | None = None
        #: Per-connection scratch space of framework decoders, keyed by decoder name
        #: (a STOMP frame split across messages, SignalR's negotiated hub protocol).
        self.extra: dict = {}

    def expect(self, event, namespace, paths, count):
        """Record that the next ``count`` binary messages are attachments of ``event``."""
        self.pending = _Pending(event, namespace, paths, count) if count > 0 else None

    def reset(self):
        """Forget any announced attachments (e.g. a text packet arrived instead)."""
        self.pending = None

    def take_attachment(self):
        """Return (event, path) for the next binary message if one is expected, else None."""
        p = self.pending
        if p is None:
            return None
        num = p.received
        p.received += 1
        if p.received >= p.expected:
            self.pending = None
        path = p.paths.get(num)
        if path is None:
            path = "socketio.attachments[%d]" % num
        return p.event, path
