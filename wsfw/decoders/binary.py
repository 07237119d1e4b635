"""MessagePack, CBOR and BSON messages (one value per binary message) walked like JSON.

Params: the root is ``msgpack`` / ``cbor`` / ``bson``, members and elements follow the JSON
scheme (``msgpack.user.name``, ``cbor.items[0]``, ``bson["_id"]``); bytes values become text
(UTF-8, else latin-1) and are followed into their nested encodings like strings. A text
message on such a route is treated as text (``text`` plus nested decodings), not an error.

Sniffing (``framing = auto``): a binary message is claimed only when a strict decode of the
whole payload succeeds (no trailing bytes, valid UTF-8 strings) and the root is a map or an
array; text sent in a binary frame (valid UTF-8, no control characters) is never claimed.
BSON is tried first: its int32 length prefix equal to the message length plus the final NUL
make a false match practically impossible. MessagePack is tried before CBOR: both put small
arrays/maps in 0x80-0x9f, but a payload both decode strictly needs each container header
to fit both readings and contains no strings (a MessagePack fixstr is a CBOR map header, a
CBOR text string a MessagePack fixint), e.g. ``0x80`` ({} vs []); in those integer-only
cases the params are of the same kind either way, and MessagePack is by far the more common
binary encoding on WebSockets (SignalR, Socket.IO's msgpack parser, Centrifugo ...).
"""

from __future__ import annotations

from zope.interface import implementer

from ._binparse import TooLarge, bson_loads, cbor_loads, msgpack_loads
from ._binval import error_text, looks_like_text, text_result, too_large, walk_value
from ._walk import Ctx, Stop
from .base import Decoded, IDecoder, Limits
from .socketio import bytes_text

_SNIFF_LIMITS = Limits()  # sniffers get no Limits: the default decode cap bounds them
_MSGPACK_CONTAINER = frozenset(list(range(0x80, 0xA0)) + [0xDC, 0xDD, 0xDE, 0xDF])
_CBOR_CONTAINER = frozenset(range(0x80, 0xC0))  # arrays 0x80-0x9f, maps 0xa0-0xbf
_CBOR_SELF_DESCRIBE = b"\xd9\xd9\xf7"  # tag 55799, may prefix any CBOR document


class _BinaryDecoder:
    """One self-describing binary value per message."""

    name = ""
    _loads = None

    def decode(self, payload, is_binary, limits, state):
        if not is_binary:
            return text_result(payload, limits)
        name = self.name
        try:
            obj = type(self)._loads(payload, limits)
        except TooLarge:
            return too_large(name, payload, True)
        except (ValueError, TypeError, OverflowError, MemoryError, RecursionError) as e:
            return Decoded(name, None, (("raw", bytes_text(payload)),), None,
                           "invalid %s: %s" % (name, error_text(e)))
        ctx = Ctx(limits)
        try:
            walk_value(ctx, obj, name, 0)
        except Stop:
            pass
        return ctx.result(name, None, bytes_text(payload))

    def _strict_container(self, payload, types):
        try:
            obj = type(self)._loads(payload, _SNIFF_LIMITS, True)
        except (ValueError, TypeError, OverflowError, MemoryError, RecursionError):
            return False
        return isinstance(obj, types)


@implementer(IDecoder)
class MsgPackDecoder(_BinaryDecoder):
    name = "msgpack"
    _loads = staticmethod(msgpack_loads)

    def sniff_binary(self, payload):
        if not payload or payload[0] not in _MSGPACK_CONTAINER or looks_like_text(payload):
            return False
        return self._strict_container(payload, (list, tuple))  # Map is a list


@implementer(IDecoder)
class CBORDecoder(_BinaryDecoder):
    name = "cbor"
    _loads = staticmethod(cbor_loads)

    def sniff_binary(self, payload):
        if not payload:
            return False
        head = payload[3] if payload[:3] == _CBOR_SELF_DESCRIBE and len(payload) > 3 else payload[0]
        if head not in _CBOR_CONTAINER or looks_like_text(payload):
            return False
        return self._strict_container(payload, (list, dict))


@implementer(IDecoder)
class BSONDecoder(_BinaryDecoder):
    name = "bson"
    _loads = staticmethod(bson_loads)

    def sniff_binary(self, payload):
        n = len(payload)
        if n < 5 or payload[-1] != 0 or int.from_bytes(payload[:4], "little") != n:
            return False
        return self._strict_container(payload, dict)


DECODERS = [BSONDecoder(), MsgPackDecoder(), CBORDecoder()]
SUBPROTOCOLS: dict[str, str] = {}
