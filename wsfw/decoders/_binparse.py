"""Bounded MessagePack / CBOR / BSON loading for the binary framework decoders.

Why not just ``msgpack.unpackb`` / ``cbor2.loads``: both build the whole document first, and
a 1 MiB message of empty maps or one-element arrays is a million Python objects (~70 MB,
0.3-0.8 s). So, like ``parse_json``, small payloads (most messages) take the C decoder and
larger ones an iterative reader that builds at most ``4 * max_params + 64`` values (what the
walk could visit anyway) and returns a ``Partial`` when it stops early. Every payload must
also fit ``Limits.max_expanded_bytes`` (``TooLarge`` otherwise).

Untrusted extension types never run code: MessagePack maps arrive as ``Map`` (a list of
pairs: nothing is hashed, so crafted colliding keys cost nothing and duplicate keys stay
visible), arrays as tuples, ext types as ``ExtType`` data; every CBOR tag (the semantic ones
cbor2 would turn into regexes, MIME messages, shared references or sets included) becomes
its plain tagged value, and CBOR maps above ``_CBOR_ANY_KEYS_MAX`` bytes may only have
str/bytes keys for the C decoder (tuple keys have predictable hashes). BSON goes through
pymongo's C decoder (its types are plain data; a 1 MiB worst case costs ~40 ms).
"""

from __future__ import annotations

import io
import struct

import cbor2
import msgpack

from ._walk import Partial

try:  # bson ships with pymongo; without it only the bson decoder is unavailable
    import bson
    from bson.codec_options import CodecOptions, DatetimeConversion
except ImportError:  # pragma: no cover
    bson = None


class Map(list):
    """A decoded map as its (key, value) pairs, in wire order."""

    __slots__ = ()


class TooLarge(ValueError):
    """The payload is larger than the decode cap (``Limits.max_expanded_bytes``)."""


#: Payloads up to this size go to the C decoders (their worst case is a few ms).
SMALL = 4096
_CBOR_ANY_KEYS_MAX = 16 * 1024
_CBOR_MAX_DEPTH = 256


def _budget(limits):
    return 4 * limits.max_params + 64


def _check_size(data, limits):
    if len(data) > limits.max_expanded_bytes:
        raise TooLarge("%d bytes exceed the decode limit of %d" % (len(data), limits.max_expanded_bytes))


# -- MessagePack -------------------------------------------------------------------------


def msgpack_loads(data, limits, strict=False):
    """One MessagePack value filling ``data`` exactly (a ``Partial`` when the value budget ran
    out first; ``strict`` then raises instead). Raises ValueError on malformed data."""
    _check_size(data, limits)
    errors = "strict" if strict else "replace"
    n = len(data)
    if n <= SMALL:
        try:
            return msgpack.unpackb(
                data, raw=False, use_list=False, strict_map_key=False, object_pairs_hook=Map,
                timestamp=0, unicode_errors=errors, max_str_len=n, max_bin_len=n, max_ext_len=n,
                max_array_len=n, max_map_len=n)
        except msgpack.StackError:  # over 1024 levels: the reader builds what can be walked
            if strict:
                raise
    value = _msgpack_read(data, _budget(limits), errors)
    if strict and type(value) is Partial:
        raise ValueError("more values than the decode budget")
    return value


_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_I8, _I16, _I32, _I64 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_F32, _F64 = struct.Struct(">f"), struct.Struct(">d")
_F16 = struct.Struct(">e")
# msgpack head byte -> (struct for the fixed-size number that follows, or None)
_MP_NUM = {0xCA: _F32, 0xCB: _F64, 0xCC: _U8, 0xCD: _U16, 0xCE: _U32, 0xCF: _U64,
           0xD0: _I8, 0xD1: _I16, 0xD2: _I32, 0xD3: _I64}
_MP_LEN = {0xC4: _U8, 0xC5: _U16, 0xC6: _U32, 0xD9: _U8, 0xDA: _U16, 0xDB: _U32,
           0xC7: _U8, 0xC8: _U16, 0xC9: _U32, 0xDC: _U16, 0xDD: _U32, 0xDE: _U16, 0xDF: _U32}
_MP_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}


def _need(data, pos, k):
    if pos + k > len(data):
        raise ValueError("truncated data at byte %d" % pos)


def _ext(code, payload):
    if code == -1:
        return msgpack.Timestamp.from_bytes(payload)
    return msgpack.ExtType(code, payload)


def _msgpack_read(data, budget, errors):
    """Iterative reader building at most ``budget`` values (see the module docstring)."""
    pos = 0
    stack = []  # frames: [items, remaining, is_map]
    while True:
        if budget <= 0:
            return _close(stack, None)
        budget -= 1
        _need(data, pos, 1)
        b = data[pos]
        pos += 1
        count = -1  # >= 0: a container of that many items (pairs for maps)
        if b <= 0x7F:
            v = b
        elif b >= 0xE0:
            v = b - 0x100
        elif b <= 0x8F:
            count, is_map = b & 0x0F, True
        elif b <= 0x9F:
            count, is_map = b & 0x0F, False
        elif b <= 0xBF:
            k = b & 0x1F
            _need(data, pos, k)
            v = data[pos:pos + k].decode("utf-8", errors)
            pos += k
        elif b == 0xC0:
            v = None
        elif b == 0xC2:
            v = False
        elif b == 0xC3:
            v = True
        elif b in _MP_NUM:
            st = _MP_NUM[b]
            _need(data, pos, st.size)
            v = st.unpack_from(data, pos)[0]
            pos += st.size
        elif b in _MP_LEN:
            st = _MP_LEN[b]
            _need(data, pos, st.size)
            k = st.unpack_from(data, pos)[0]
            pos += st.size
            if b >= 0xDC:
                count, is_map = k, b >= 0xDE
            elif b >= 0xC7 and b <= 0xC9:
                _need(data, pos, k + 1)
                v = _ext(_I8.unpack_from(data, pos)[0], data[pos + 1:pos + 1 + k])
                pos += k + 1
            else:
                _need(data, pos, k)
                v = data[pos:pos + k]
                v = v if b <= 0xC6 else v.decode("utf-8", errors)
                pos += k
        elif b in _MP_FIXEXT:
            k = _MP_FIXEXT[b]
            _need(data, pos, k + 1)
            v = _ext(_I8.unpack_from(data, pos)[0], data[pos + 1:pos + 1 + k])
            pos += k + 1
        else:
            raise ValueError("invalid msgpack byte 0x%02x at %d" % (b, pos - 1))
        if count >= 0:
            if count:
                if count > len(data) - pos:  # every item takes at least one byte
                    raise ValueError("container of %d items at byte %d exceeds the data" % (count, pos))
                stack.append([[], count * 2 if is_map else count, is_map])
                continue
            v = Map() if is_map else ()
        done, v = _place(stack, v)
        if done:
            if pos != len(data):
                raise ValueError("extra data after msgpack value")
            return v


def _place(stack, v):
    """Append ``v`` to the innermost container, closing containers that become full.
    Returns (True, root) once the root value is complete."""
    while stack:
        frame = stack[-1]
        frame[0].append(v)
        frame[1] -= 1
        if frame[1]:
            return False, None
        stack.pop()
        v = _finish(frame)
    return True, v


def _finish(frame):
    items = frame[0]
    if frame[2]:
        if not items:
            return Map()
        return Map(zip(items[0::2], items[1::2]))  # an odd trailing key is dropped
    return tuple(items)


def _close(stack, root_if_empty):
    """The budget ran out: close the open containers with what they hold."""
    if not stack:
        return Partial(root_if_empty)
    v = _finish(stack.pop())
    while stack:
        frame = stack.pop()
        frame[0].append(v)
        v = _finish(frame)
    return Partial(v)


# -- CBOR ----------------------------------------------------------------------------------


def _plain_value(value, immutable):
    return value


def _tag_value(tag, immutable):
    return tag.value


#: cbor2's built-in semantic tags (datetime, bignum, decimal, string/value sharing, rational,
#: regex, MIME, UUID, IP, date, set, self-describe ...): all decoded as their tagged value.
_CBOR_SEMANTIC = {
    t: _plain_value
    for t in (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
              1004, 43000, 55799)
}
_CBOR_FAIL = (cbor2.CBORError, RecursionError, MemoryError, OverflowError, TypeError, ValueError)


def cbor_loads(data, limits, strict=False):
    """One CBOR value filling ``data`` exactly (``Partial`` / strict as msgpack_loads)."""
    _check_size(data, limits)
    errors = "strict" if strict else "replace"
    n = len(data)
    if n > SMALL:
        value = _cbor_read(data, _budget(limits), errors)
        if strict and type(value) is Partial:
            raise ValueError("more values than the decode budget")
        return value
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            fp, tag_hook=_tag_value, semantic_decoders=_CBOR_SEMANTIC, max_depth=_CBOR_MAX_DEPTH,
            str_errors=errors, strict_hashable_types=n > _CBOR_ANY_KEYS_MAX).decode()
    except _CBOR_FAIL as e:
        if strict:
            raise ValueError(str(e) or type(e).__name__) from None
        # e.g. nesting deeper than _CBOR_MAX_DEPTH: the reader builds what can be walked
        # (and raises for data that is really malformed)
        return _cbor_read(data, _budget(limits), errors)
    if fp.tell() != n:
        raise ValueError("extra data after CBOR value")
    return value


_CB_ARG = {24: _U8, 25: _U16, 26: _U32, 27: _U64}
_BREAK = object()


def _cbor_head(data, pos):
    """(major type, argument or -1 for indefinite, info, new pos)."""
    _need(data, pos, 1)
    b = data[pos]
    pos += 1
    major, info = b >> 5, b & 0x1F
    if info < 24:
        return major, info, info, pos
    st = _CB_ARG.get(info)
    if st is not None:
        _need(data, pos, st.size)
        return major, st.unpack_from(data, pos)[0], info, pos + st.size
    if info == 31 and major in (2, 3, 4, 5, 7):
        return major, -1, info, pos
    raise ValueError("invalid CBOR head 0x%02x at %d" % (b, pos - 1))


def _cbor_read(data, budget, errors):
    """Iterative CBOR reader building at most ``budget`` values; tags are transparent."""
    pos = 0
    stack = []  # frames: [items, remaining (-1: indefinite), is_map]
    while True:
        if budget <= 0:
            return _close(stack, None)
        budget -= 1
        major, arg, info, pos = _cbor_head(data, pos)
        if major == 0:
            v = arg
        elif major == 1:
            v = -1 - arg
        elif major == 2 or major == 3:
            if arg >= 0:
                _need(data, pos, arg)
                v = data[pos:pos + arg]
                pos += arg
            else:
                chunks = []
                while True:
                    budget -= 1
                    m, k, _, pos = _cbor_head(data, pos)
                    if m == 7 and k == -1:
                        break
                    if m != major or k < 0:
                        raise ValueError("invalid chunk in an indefinite-length string")
                    _need(data, pos, k)
                    chunks.append(data[pos:pos + k])
                    pos += k
                v = b"".join(chunks)
            if major == 3:
                v = v.decode("utf-8", errors)
        elif major == 4 or major == 5:
            if arg != 0:
                if arg > len(data) - pos:
                    raise ValueError("container of %d items at byte %d exceeds the data" % (arg, pos))
                stack.append([[], arg * 2 if major == 5 and arg > 0 else arg, major == 5])
                continue
            v = Map() if major == 5 else []
        elif major == 6:
            continue  # a tag: the next item is its value
        elif arg == -1:  # break
            if not stack or stack[-1][1] >= 0:
                raise ValueError("unexpected CBOR break at byte %d" % (pos - 1))
            frame = stack.pop()
            if frame[2] and len(frame[0]) % 2:
                raise ValueError("indefinite map with a key and no value")
            v = _finish_cbor(frame)
        elif info == 20:
            v = False
        elif info == 21:
            v = True
        elif info == 22:
            v = None
        elif info == 23:
            v = cbor2.undefined
        elif info == 25:
            v = _F16.unpack(struct.pack(">H", arg))[0]
        elif info == 26:
            v = _F32.unpack(_U32.pack(arg))[0]
        elif info == 27:
            v = _F64.unpack(_U64.pack(arg))[0]
        else:
            v = cbor2.CBORSimpleValue(arg) if arg < 20 or arg > 31 else None
        while True:  # place v, closing definite containers that become full
            if not stack:
                if pos != len(data):
                    raise ValueError("extra data after CBOR value")
                return v
            frame = stack[-1]
            frame[0].append(v)
            if frame[1] < 0:
                break
            frame[1] -= 1
            if frame[1]:
                break
            stack.pop()
            v = _finish_cbor(frame)


def _finish_cbor(frame):
    items = frame[0]
    if frame[2]:
        return Map(zip(items[0::2], items[1::2]))
    return items


# -- BSON ----------------------------------------------------------------------------------

if bson is not None:
    _BSON_OPTS = CodecOptions(document_class=dict, tz_aware=False, unicode_decode_error_handler="replace",
                              datetime_conversion=DatetimeConversion.DATETIME_AUTO)
    _BSON_STRICT = CodecOptions(document_class=dict, tz_aware=False,
                                datetime_conversion=DatetimeConversion.DATETIME_AUTO)
    _BSON_FAIL = (bson.errors.BSONError, RecursionError, MemoryError, OverflowError, TypeError, ValueError)


def bson_loads(data, limits, strict=False):
    """One BSON document filling ``data`` exactly; raises ValueError on any failure."""
    _check_size(data, limits)
    n = len(data)
    if n < 5 or int.from_bytes(data[:4], "little") != n or data[-1] != 0:
        raise ValueError("BSON length prefix does not match the message")
    if bson is None:  # pragma: no cover
        raise ValueError("bson (pymongo) is not installed")
    try:
        return bson.decode(data, _BSON_STRICT if strict else _BSON_OPTS)
    except _BSON_FAIL as e:
        raise ValueError(str(e) or type(e).__name__) from None
