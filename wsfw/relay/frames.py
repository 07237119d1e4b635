"""The relay's fast path for the frames almost every message is: one complete, unfragmented,
uncompressed text or binary frame.

Autobahn parses a frame in two passes of ``processData`` and walks it through
nine callbacks (``onFrameBegin`` ... ``onMessageEnd``), slicing its receive
buffer twice and building a ``FrameHeader``, a masker and a UTF-8 validator
state on the way; sending one message goes through ``sendMessage``,
``sendFrame`` and ``sendData``. A relayed round trip is four frames through
that machinery (the client's, the copy to the upstream, the upstream's answer
and the copy back), and a py-spy profile of the daemon under load put it at
the largest single share of wsfw's CPU. Almost every real message is a single
small frame, which needs none of it.

:func:`read_frames` takes every leading frame of a read that is exactly that
case (FIN set, RSV clear, opcode 1 or 2, masked as the hop's peer must mask,
minimally encoded length under 64 KiB, within the hop's frame and message
caps, and, for text, valid UTF-8 as a whole) and hands each straight to the
hop's ``onMessage``. Anything else (a control frame, a fragment, a
compressed, oversized or malformed frame, a state other than open) stops the
fast path *before that frame*: the rest of the data goes to Autobahn's own
parser, which applies every check and failure exactly as before. Both paths
produce the same messages, in order; only frames that are valid under every
rule Autobahn applies are ever taken here, so nothing that Autobahn would
refuse is relayed, and a broken frame gets Autobahn's close code.

A simple frame cut by the end of a read is kept (the hop's buffer, as Autobahn
keeps it) and parsed when the rest has arrived: handing it to Autobahn would
leave Autobahn parsing every later read until one happened to end on a frame
boundary. What has arrived of a text frame is checked to be valid UTF-8 so
far on every read, so an invalid byte still fails the connection at once, as
Autobahn's incremental validation does (the Autobahn Testsuite's "fail fast"
cases).

:func:`write_message` frames one message for the hop's peer (masked with a
fresh key towards an upstream, as Autobahn's ``sendFrame`` does) when nothing
makes Autobahn's path necessary (compression, auto fragmentation, a queued
write, a message over the send cap); the frames one read produces are written
together when the read is done (:func:`batch`, below).

What is not kept up to date for fast-path frames: Autobahn's ``trafficStats``
counters, which wsfw does not read (its own counters are in the relay).
"""

from __future__ import annotations

import random
from codecs import utf_8_decode

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import tcp

from wsfw.relay.tuning import mask

_OPEN = WebSocketProtocol.STATE_OPEN
_TEXT, _BINARY = 0x81, 0x82  # first header byte of a final, uncompressed text / binary frame
_EXTENDED16 = 126  # 7-bit length value announcing a 16-bit length; 127 (64-bit) is left to Autobahn
_getrandbits = random.getrandbits  # Autobahn's source of frame masks (sendFrame)


def frame_cap(hop) -> int:
    """The largest payload the fast path may take for ``hop``: its frame and message caps
    (Autobahn enforces both; 0 means none) and the 16-bit length limit."""
    cap = 0xFFFF
    for limit in (hop.maxFramePayloadSize, hop.maxMessagePayloadSize):
        if 0 < limit < cap:
            cap = limit
    return cap


def can_read_fast(hop) -> bool:
    """Whether ``hop`` is between frames of an open connection with nothing that needs Autobahn."""
    return (hop.state == _OPEN and hop.current_frame is None and not hop.inside_message and not hop._halted
            and hop._perMessageCompress is None and not hop.failedByMe)


def read_frames(hop, data: bytes, cap: int) -> tuple[bytes, bool]:
    """Deliver the leading simple frames of ``data`` to ``hop.onMessage``; return the rest, and
    whether it is a simple frame still arriving (keep it, and read again) rather than data for
    Autobahn's parser (from the first frame the fast path does not take)."""
    end = len(data)
    pos = 0
    masked = 0x80 if hop.factory.isServer else 0  # client frames carry a mask; server frames must not
    while end - pos >= 2:
        first = data[pos]
        if first != _TEXT and first != _BINARY:
            break
        second = data[pos + 1]
        if second & 0x80 != masked:
            break
        size = second & 0x7F
        head = pos + 2
        if size >= _EXTENDED16:
            if size != _EXTENDED16 or end - head < 2:
                break
            size = (data[head] << 8) | data[head + 1]
            if size < _EXTENDED16:  # not minimally encoded: Autobahn fails it
                break
            head += 2
        if size > cap:
            break
        start = head + 4 if masked else head
        stop = start + size
        if stop > end:
            if start <= end and (first == _BINARY or _valid_so_far(data[start:], data[head:start] if masked else None)):
                return data[pos:], True  # a simple frame still arriving: wait for the rest
            break
        payload = mask(data[head:start], data[start:stop]) if masked else data[start:stop]
        if first == _TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # Autobahn reports where, and fails with 1007
        pos = stop
        if hop.autoPingTimeoutCall is not None:  # any traffic answers a pending auto-ping
            hop._cancelAutoPingTimeoutCall()
        hop.onMessage(payload, first == _BINARY)
        if not can_read_fast(hop):  # the message closed or failed the connection: Autobahn goes on
            break
    return (data[pos:] if pos else data), False


def _valid_so_far(part: bytes, key: bytes | None) -> bool:
    """Whether the received start of a text frame's payload is valid UTF-8 so far (a code point
    may be cut at its end). An invalid one goes to Autobahn at once, which fails it before the
    rest arrives, as it would have without the fast path."""
    try:
        utf_8_decode(mask(key, part) if key is not None else part, "strict", False)
    except UnicodeDecodeError:
        return False
    return True


def can_write_fast(hop, size: int) -> bool:
    return (hop._perMessageCompress is None and not hop.send_queue and not hop.autoFragmentSize
            and not (0 < hop.maxMessagePayloadSize < size) and size <= 0xFFFF and not hop.logFrames)


def write_message(hop, payload: bytes, is_binary: bool) -> None:
    """One unfragmented, uncompressed frame for ``payload``: into the current read's batch
    (:func:`batch`), else written at once."""
    size = len(payload)
    first = _BINARY if is_binary else _TEXT
    server = hop.factory.isServer
    bit = 0 if server else 0x80  # frames to an upstream are masked
    if size < _EXTENDED16:
        header = bytes((first, bit | size))
    else:
        header = bytes((first, bit | _EXTENDED16, size >> 8, size & 0xFF))
    if server:
        frame = header + payload
    else:
        key = _getrandbits(32).to_bytes(4, "big")
        frame = header + key + mask(key, payload)
    transport = hop.transport
    if _batch is not None and type(transport) in _DIRECT and not transport.TLS:
        pending = _batch.get(transport)
        if pending is None:
            _batch[transport] = [frame]
        else:
            pending.append(frame)
    else:
        transport.write(frame)


# -- writing a read's frames in one system call --------------------------------------------
#
# Twisted's transport.write() buffers and registers the socket for writability (epoll_ctl);
# the reactor's next iteration sends and unregisters it (epoll_ctl again). When messages
# arrive one per read (a few thousand per second over many connections), that is two
# reactor wake-ups and two epoll_ctl calls per relayed message on top of the send itself.
# Instead, the frames the fast path produces while one read is processed are collected per
# transport and, when the read is done, sent straight to the socket when its Twisted buffer
# is empty (anything the kernel does not take goes to transport.write(), so buffering,
# backpressure and errors stay Twisted's). Collecting per read keeps what Twisted's buffer
# gave: one send for all the messages of a read. Any other write to or close of a
# transport with collected frames (Autobahn's sendData and _closeConnection) flushes them
# first (HopMixin), so nothing is reordered.

#: Transports whose socket a batch may write to directly (plain TCP; TLS and wrappers go
#: through transport.write()).
_DIRECT = frozenset((tcp.Server, tcp.Client))
_batch: dict | None = None


def batch() -> bool:
    """Start collecting (returns False when a batch is already open: the caller does not end it)."""
    global _batch
    if _batch is not None:
        return False
    _batch = {}
    return True


def end_batch() -> None:
    """Write every transport's collected frames and stop collecting."""
    global _batch
    pending, _batch = _batch, None
    for transport, frames in pending.items():
        _send(transport, frames)


def flush(transport) -> None:
    """Write what the open batch holds for ``transport`` now (before another write or a close)."""
    if _batch:
        frames = _batch.pop(transport, None)
        if frames is not None:
            _send(transport, frames)


def _send(transport, frames: list[bytes]) -> None:
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    if not transport.connected or transport.disconnecting or transport._tempDataLen or \
            len(transport.dataBuffer) > transport.offset:
        transport.write(data)  # queued behind earlier data, or going away: Twisted's path
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)  # Twisted meets the same error on its own path and reports it
        return
    if sent < len(data):
        transport.write(data[sent:] if sent else data)
