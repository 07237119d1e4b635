"""Shared by the binary framework decoders: the walker for decoded MessagePack / CBOR / BSON
values and small helpers (record prefixes, the text-in-binary test, fallback results).

``walk_value`` emits params exactly like ``_walk.walk`` (same paths, depth and budget) and
converts the non-JSON types: bytes -> text (UTF-8 if valid, else latin-1, as ``bytes_text``),
then followed into their nested decodings like any string; dates, decimals, ObjectIds, ext
types -> their text; non-string map keys -> their text (then the JSON key convention).
"""

from __future__ import annotations

import datetime
import re

import msgpack

from ._binparse import Map, bson
from ._walk import Ctx, Partial, Stop, is_plain_key, key_path, nested, walk
from .base import Decoded
from .socketio import bytes_text

_BSON_DOC_TYPES = (bson.DBRef,) if bson is not None else ()


def is_map(v):
    t = type(v)
    return t is dict or t is Map


def is_seq(v):
    t = type(v)
    return t is list or t is tuple


def is_id(v):
    """A WAMP-style id / small unsigned integer (bool excluded)."""
    return type(v) is int and 0 <= v <= 1 << 53


_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))


def walk_value(ctx, v, path, depth):
    """``walk`` for decoded binary values (see the module docstring)."""
    t = type(v)
    if t in _SCALAR_TYPES:
        walk(ctx, v, path, depth)
        return
    if t is tuple or t is list or t is Map or t is dict:
        ctx.nodes -= 1
        if ctx.nodes < 0:
            ctx.trunc("params")
            raise Stop
        if depth >= ctx.max_depth:
            ctx.trunc("depth")
            return
        depth += 1
        if t is tuple or t is list:
            i = 0
            for x in v:
                p = "%s[%d]" % (path, i)
                if type(x) in _SCALAR_TYPES:
                    walk(ctx, x, p, depth)
                else:
                    walk_value(ctx, x, p, depth)
                i += 1
            return
        for k, x in (v if t is Map else v.items()):
            if type(k) is not str:
                k = _key_text(k)
            if is_plain_key(k):
                p = path + "." + k
            else:
                p = key_path(path, k)
                ctx.add(p + "<key>", k)
            if type(x) in _SCALAR_TYPES:
                walk(ctx, x, p, depth)
            else:
                walk_value(ctx, x, p, depth)
        return
    if t is bytes:
        walk(ctx, bytes_text(v), path, depth)
        return
    if t is Partial:  # the reader stopped at its value budget
        ctx.trunc("params")
        walk_value(ctx, v.value, path, depth)
        return
    walk_value(ctx, _convert(v), path, depth)


def _key_text(k):
    if isinstance(k, (bytes, bytearray, memoryview)):
        return bytes_text(bytes(k))
    v = _convert(k)
    return v if type(v) is str else str(v)


def _convert(v):
    """A non-JSON decoded value as str / bytes / a container ``walk_value`` handles."""
    if isinstance(v, msgpack.ExtType):
        return bytes(v.data)
    if isinstance(v, msgpack.Timestamp):
        return "%d.%09d" % (v.seconds, v.nanoseconds)
    if isinstance(v, str):  # bson Code and other str subclasses
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):  # bson Binary
        return bytes(v)
    if isinstance(v, int):  # bson Int64
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    if _BSON_DOC_TYPES and isinstance(v, _BSON_DOC_TYPES):
        return dict(v.as_doc())
    if bson is not None and isinstance(v, bson.Regex):
        p = v.pattern
        return p if isinstance(p, (str, bytes)) else str(p)
    if isinstance(v, dict):  # SON, frozendict
        return dict(v)
    if isinstance(v, (list, tuple, set, frozenset)):
        return tuple(v)
    try:
        return str(v)
    except Exception:  # a broken __str__ must not stop the walk
        return type(v).__name__


_TEXT_CTRL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def looks_like_text(payload):
    """Valid UTF-8 without control characters other than tab / CR / LF: a text message sent
    in a binary frame, which the binary sniffers leave to the text path."""
    if _TEXT_CTRL.search(payload) is not None:
        return False
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def varint(data, pos, max_bytes):
    """(value, end) of the base-128 little-endian VarInt at ``pos`` (SignalR's record length,
    MQTT's remaining length), at most ``max_bytes`` long; (None, -1) if it runs longer,
    (None, pos) if the data ends inside it."""
    value = shift = 0
    n = len(data)
    k = pos
    limit = 7 * max_bytes
    while k < n:
        b = data[k]
        k += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, k
        shift += 7
        if shift >= limit:
            return None, -1
    return None, pos


def resume_record(st, data, ctx, length_at, head_size):
    """Continue a length-prefixed record buffered across messages (SignalR, MQTT).

    ``st`` holds ``skip`` (bytes of an oversized record still to come, dropped here) and
    ``data`` (a Pending piece). ``length_at(head)`` reads the length from the buffered
    record's first ``head_size`` bytes: ``(length, end)``, ``(None, -1)`` if malformed,
    ``(None, start)`` if cut. Returns ``(data, complete)``: the bytes to decode now, or,
    while the record is still incomplete (its length was checked when it was buffered),
    this message's own bytes (after any skip) to show as the partial record.
    """
    if st.skip:
        k = min(st.skip, len(data))
        st.skip -= k
        data = data[k:]
        ctx.trunc("size")
    if st.data.size:
        st.data.add(data)
        length, k = length_at(st.data.head(head_size))
        if length is None and k >= 0 or length is not None and st.data.size < k + length:
            return data, False
        data = st.data.take(b"")
    return data, True


def record_path(base, i):
    """Param prefix of the ``i``-th record / packet of one message: the first is unprefixed
    (``signalr.target``), later ones are indexed (``signalr[1].target``)."""
    return base if i == 0 else "%s[%d]" % (base, i)


def text_result(payload, limits, fmt="text"):
    """A text message on a binary-format route: the ``text`` param plus its nested decodings
    (a JSON text is walked at ``text<json>``), as the text decoder does."""
    text = payload.decode("utf-8", "replace")
    ctx = Ctx(limits)
    try:
        ctx.add("text", text)
        if limits.max_depth > 0 and len(text) > 2:
            nested(ctx, text, "text", 0)
    except Stop:
        pass
    return ctx.result(fmt, None, text)


def too_large(fmt, payload, is_binary, error=None):
    """A payload over the decode cap: raw only, ``truncated="size"``."""
    text = bytes_text(payload) if is_binary else payload.decode("utf-8", "replace")
    return Decoded(fmt, None, (("raw", text),), "size", error)


def error_text(e):
    """A short, single-line reason for a decode failure."""
    s = str(e) or type(e).__name__
    s = s.replace("\n", " ")
    return s if len(s) <= 120 else s[:117] + "..."


class Pending:
    """The incomplete record a message ended with, carried to the next message.

    Pieces are joined only once the record can be complete, so a record trickled in many
    tiny messages costs linear, not quadratic, time.
    """

    __slots__ = ("pieces", "size")

    def __init__(self):
        self.pieces = []
        self.size = 0

    def add(self, piece):
        self.pieces.append(piece)
        self.size += len(piece)

    def head(self, k):
        """The first ``k`` bytes (fewer when not yet received)."""
        pieces = self.pieces
        out = pieces[0][:k]
        i = 1
        while len(out) < k and i < len(pieces):
            out += pieces[i][:k - len(out)]
            i += 1
        return out

    def take(self, empty):
        joined = empty.join(self.pieces)
        self.pieces = []
        self.size = 0
        return joined
