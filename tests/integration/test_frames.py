"""The relay's frame fast path (wsfw/relay/frames.py) over real loopback sockets.

Every hop takes the leading simple frames of a read itself and leaves the rest
to Autobahn's parser. These tests mix both paths on purpose (frames split at
any byte, control frames and fragments between simple ones, sizes on both
sides of every limit) and check that the mix never loses, reorders, corrupts
or wrongly accepts anything; where a frame must be refused, the close code is
compared with what Autobahn itself answers to the very same bytes (the
upstream app of tests/support.py is a plain Autobahn server, so the bytes are
also sent to it directly).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import random

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests import support
from wsfw.relay import frames
from wsfw.relay.hop import HopMixin

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Code points of every UTF-8 length (1 to 4 bytes), so random cuts land inside multi-byte ones.
ALPHABET = "aZ9 {}\"\\é߀中✓\U0001F680\U0001D11E\u07ff\u0800\uffff\U00010000\U0010FFFF"


# -- raw frames ----------------------------------------------------------------


def xor(key: bytes, data: bytes) -> bytes:
    """RFC 6455 masking, written independently of wsfw's (the test's own oracle)."""
    if not data:
        return b""
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")


def frame(payload: bytes = b"", opcode: int = TEXT, *, fin: bool = True, rsv: int = 0, masked: bool = True,
          length: int | None = None, declared: int | None = None, key: bytes | None = None) -> bytes:
    """One raw WebSocket frame.

    ``length``: the length encoding, 7, 16 or 64 (bits); ``None`` picks the minimal one, anything
    else forces it (non-minimal encodings are protocol errors). ``declared`` announces a payload
    length other than ``len(payload)``. ``masked``: a client frame (masked with ``key``, 4 random
    bytes by default) or a server frame (not masked).
    """
    size = len(payload) if declared is None else declared
    if length is None:
        length = 7 if size < 126 else 16 if size < 65536 else 64
    header = bytes(((0x80 if fin else 0) | (rsv << 4) | opcode,))
    bit = 0x80 if masked else 0
    if length == 7:
        header += bytes((bit | size,))
    elif length == 16:
        header += bytes((bit | 126,)) + size.to_bytes(2, "big")
    else:
        header += bytes((bit | 127,)) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    if key is None:
        key = random.getrandbits(32).to_bytes(4, "big")
    return header + key + xor(key, payload)


def text_of(rng: random.Random, size: int) -> bytes:
    """Exactly ``size`` bytes of valid UTF-8, multi-byte code points included."""
    chars = []
    total = 0
    while total < size:
        c = rng.choice(ALPHABET)
        n = len(c.encode())
        if total + n > size:
            c, n = "a" * (size - total), size - total
        chars.append(c)
        total += n
    return "".join(chars).encode()


def random_stream(rng: random.Random, count: int, *, masked: bool = True):
    """``count`` frames of every kind the relay meets, and the messages they make, in order.

    Returns ([frame bytes, ...], [(payload, is_binary), ...]). Simple frames (the fast path's) are
    mixed with what only Autobahn takes: pings and pongs, 64-bit lengths, fragmented messages
    with a ping between fragments and text split inside a code point.
    """
    def key():
        return rng.getrandbits(32).to_bytes(4, "big")

    def payload_of(size, binary):
        return rng.randbytes(size) if binary else text_of(rng, size)

    wire, messages = [], []
    big_left = 3  # 16-bit frames over 8 KiB, kept few so a stream stays quick
    n = 0
    while n < count:
        kind = rng.choices(["small", "empty", "medium", "large", "boundary", "huge", "ping", "pong", "fragmented"],
                           weights=[50, 6, 15, 2, 3, 1, 6, 2, 8])[0]
        binary = rng.random() < 0.5
        if kind == "small":
            payload = payload_of(rng.randint(1, 125), binary)
        elif kind == "empty":
            payload = b""
        elif kind == "medium":
            payload = payload_of(rng.randint(126, 4096), binary)
        elif kind == "large" and big_left:
            big_left -= 1
            payload = payload_of(rng.randint(8192, 65535), binary)
        elif kind == "boundary":
            payload = payload_of(rng.choice([125, 126, 127, 65535, 65536]), binary)
        elif kind == "huge":
            payload = payload_of(70000, binary)  # 64-bit length: Autobahn's
        elif kind in ("ping", "pong"):
            wire.append(frame(rng.randbytes(rng.randint(0, 125)), PING if kind == "ping" else PONG,
                              masked=masked, key=key()))
            n += 1
            continue
        elif kind == "fragmented":
            payload = payload_of(rng.randint(0, 3000), binary)
            parts = rng.randint(2, 4)
            cuts = sorted(rng.randint(0, len(payload)) for _ in range(parts - 1))  # may cut a code point
            pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
            for i, piece in enumerate(pieces):
                if i and rng.random() < 0.6:
                    wire.append(frame(rng.randbytes(rng.randint(0, 20)), PING, masked=masked, key=key()))
                    n += 1
                opcode = (BINARY if binary else TEXT) if i == 0 else CONT
                wire.append(frame(piece, opcode, fin=i == len(pieces) - 1, masked=masked, key=key()))
                n += 1
            messages.append((payload, binary))
            continue
        else:
            continue
        wire.append(frame(payload, BINARY if binary else TEXT, masked=masked, key=key()))
        messages.append((payload, binary))
        n += 1
    return wire, messages


@defer.inlineCallbacks
def write_in_chunks(transport, wire: list[bytes], rng: random.Random, largest: int = 700, delay: float = 0.001,
                    on_boundary: float = 0.3):
    """The frames of ``wire`` in chunks of 1 to ``largest`` bytes with a pause after each, so the
    reader sees them cut at arbitrary points (inside headers, masks, payloads and code points).
    A share ``on_boundary`` of the chunks ends exactly at the end of a frame instead: a read
    that ends mid-frame leaves that frame to Autobahn, and the fast path resumes only at a read
    that starts on a frame boundary, so these keep both paths busy."""
    data = b"".join(wire)
    ends = list(itertools.accumulate(len(f) for f in wire))
    pos = 0
    while pos < len(data):
        if rng.random() < on_boundary:
            i = bisect.bisect_right(ends, pos)
            size = ends[min(i + rng.randint(0, 2), len(ends) - 1)] - pos
        else:
            size = rng.randint(1, largest)
        transport.write(data[pos:pos + size])
        pos += size
        yield task.deferLater(reactor, delay, lambda: None)


def first_difference(got, expected) -> str:
    """A short description of where two message lists first differ (payloads can be 70 KB)."""
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return (f"message {i}: got {len(a[0])} B binary={a[1]} {a[0][:40]!r}..., "
                    f"expected {len(b[0])} B binary={b[1]} {b[0][:40]!r}...")
    return f"got {len(got)} messages, expected {len(expected)}"


# -- tests ---------------------------------------------------------------------


class FramesTestBase(unittest.TestCase):
    timeout = 30
    maxDiff = None
    config_extra = ""
    #: Inspection off: random payloads would trip the default detectors (a ``{{`` is SSTI), and
    #: what is tested here is framing, which does not depend on the verdict.
    route_extra = "mode = off\n"
    #: The shipped close_handshake (1 s). Before wsfw.relay.timers, Autobahn's timeout for it
    #: could fire within a millisecond of the close (txaio rounds due times down to a second),
    #: losing the upstream's last echoes in these tests about 1 run in 12.
    timeouts = ""

    @defer.inlineCallbacks
    def setUp(self):
        self.app, self.wsfw = yield support.start_stack(self, extra=self.timeouts + self.config_extra,
                                                        route_extra=self.route_extra)
        # Autobahn's default is to drop the TCP connection on a protocol error; wsfw (and so the
        # reference it is compared with in direct()) sends a close frame with the code instead.
        self.app.ws.setProtocolOptions(failByDrop=False)
        self.paths = self.count_paths()

    def client(self, path="/ws/echo"):
        return support.connect_for(self, self.wsfw.url(path))

    def direct(self, path="/ws/echo"):
        """A client of the upstream app itself: Autobahn's own answer to the same bytes."""
        return support.connect_for(self, f"ws://127.0.0.1:{self.app.port_number}{path}")

    def count_paths(self):
        """Count the messages each hop delivers by the fast path and by Autobahn's parser, per side
        (``client``: what the client sent; ``upstream``: what the upstream sent)."""
        counts = {"fast": collections.Counter(), "autobahn": collections.Counter()}
        inside = [False]
        read_frames, on_message = frames.read_frames, HopMixin.onMessage

        def counting_read_frames(hop, data, cap):
            inside[0] = True
            try:
                return read_frames(hop, data, cap)
            finally:
                inside[0] = False

        def counting_on_message(hop, payload, is_binary):
            counts["fast" if inside[0] else "autobahn"][hop.side] += 1
            return on_message(hop, payload, is_binary)

        self.patch(frames, "read_frames", counting_read_frames)
        self.patch(HopMixin, "onMessage", counting_on_message)
        return counts

    @defer.inlineCallbacks
    def receive(self, proto, count, timeout=10):
        got = []
        for _ in range(count):
            got.append((yield support.next_message(proto, timeout)))
        return got

    def assertMessages(self, got, expected):
        self.assertTrue(got == expected, first_difference(got, expected))

    @defer.inlineCallbacks
    def upstream_fails(self, proto, valid, bad: bytes, upstream_code: int):
        """The upstream writes ``valid`` messages (unmasked frames) then ``bad``, in one write: the
        valid ones reach the client, then the client gets 1011 and the upstream ``upstream_code``,
        and nothing from ``bad`` on is relayed."""
        upstream_closed = self.app.ws.next_close()
        raw = b"".join(frame(p, BINARY if b else TEXT, masked=False) for p, b in valid) + bad
        self.app.ws.opened[-1].transport.write(raw)
        self.assertMessages((yield self.receive(proto, len(valid))), valid)
        self.assertEqual((yield self.close_code(proto)), 1011)
        self.assertEqual(proto.factory.messages.pending, [])
        self.assertEqual((yield upstream_closed)[1], upstream_code)

    @defer.inlineCallbacks
    def assertNothingMore(self, proto):
        """Nothing but what was expected arrived: the next message is a fresh marker."""
        proto.sendMessage(b"marker")
        self.assertEqual((yield support.next_message(proto)), (b"marker", False))

    @defer.inlineCallbacks
    def close_code(self, proto, within: float = 5.0):
        """The code of the close frame ``proto`` receives (or 1006 for a connection lost without
        one), without waiting for the TCP connection to end: when the close follows an incomplete
        frame, the client's reply is taken as payload of that frame, and the server waits for
        its close-handshake timeout to drop the connection, as Autobahn alone would."""
        deadline = reactor.seconds() + within
        while proto.remoteCloseCode is None and not proto.factory.closed.called:
            if reactor.seconds() > deadline:
                self.fail(f"no close within {within} s")
            yield task.deferLater(reactor, 0.005, lambda: None)
        if proto.remoteCloseCode is not None:
            return proto.remoteCloseCode
        return proto.factory.closed.result[1]

    @defer.inlineCallbacks
    def outcome(self, proto, raw: bytes, until_messages: int | None = None, within: float = 5.0):
        """Write ``raw`` at once and wait for a close frame or the end of the connection (or, with
        ``until_messages``, until that many messages arrived); return (every message received
        before, the close code or None)."""
        proto.transport.write(raw)
        deadline = reactor.seconds() + within
        while proto.remoteCloseCode is None and not proto.factory.closed.called and reactor.seconds() < deadline:
            if until_messages is not None and len(proto.factory.messages.pending) >= until_messages:
                break
            yield task.deferLater(reactor, 0.005, lambda: None)
        code = None
        if proto.remoteCloseCode is not None or proto.factory.closed.called:
            code = yield self.close_code(proto)
        return list(proto.factory.messages.pending), code


class StreamTests(FramesTestBase):
    @defer.inlineCallbacks
    def check_stream(self, seed: int, chunked: bool = True):
        rng = random.Random(seed)
        wire, expected = random_stream(rng, rng.randint(150, 300))
        proto = yield self.client()
        if chunked:
            yield write_in_chunks(proto.transport, wire, rng)
        else:
            proto.transport.write(b"".join(wire))
        got = yield self.receive(proto, len(expected))
        self.assertMessages(got, expected)
        self.assertMessages(self.app.ws.received, expected)
        yield self.assertNothingMore(proto)
        # Most messages are simple frames, and the fast path takes them back after every frame only
        # Autobahn takes and across reads that end inside a frame (about 6 to 1 in these streams).
        self.assertGreater(self.paths["fast"]["client"], 2 * self.paths["autobahn"]["client"],
                           "the fast path took the simple frames")
        self.assertGreater(self.paths["autobahn"]["client"], 0, "Autobahn took fragments and 64-bit lengths")
        self.assertGreater(self.paths["fast"]["upstream"], 0)

    def test_random_stream_chunked_seed_1(self):
        """A seeded random mix of simple frames, pings, pongs, fragments (a ping between them), empty
        messages, 16-bit and 64-bit lengths, written in 1..700 byte chunks with pauses: every message
        comes back exactly once, byte-exact, with its type and in order, and the upstream saw exactly
        the same messages. Frames, masks and code points are cut at arbitrary points, so the fast
        path must put partial frames back together with what Autobahn has buffered."""
        return self.check_stream(1)

    def test_random_stream_chunked_seed_2(self):
        """As seed 1, another mix and other cut points."""
        return self.check_stream(2)

    def test_random_stream_chunked_seed_3(self):
        """As seed 1, another mix and other cut points."""
        return self.check_stream(3)

    def test_random_stream_chunked_seed_4(self):
        """As seed 1, another mix and other cut points."""
        return self.check_stream(4)

    def test_random_stream_in_one_write(self):
        """The whole mix in one write: many frames per read, the fast path handing over to Autobahn
        and Autobahn (between reads) handing back, with nothing lost or reordered."""
        return self.check_stream(5, chunked=False)

    @defer.inlineCallbacks
    def test_frame_delivered_byte_by_byte(self):
        """Simple frames (7- and 16-bit lengths, text with 4-byte code points) written one byte at a
        time: the fast path never takes a frame before its last byte is there."""
        rng = random.Random(6)
        expected = [(text_of(rng, 40), False), (rng.randbytes(300), True), (b"", False), (text_of(rng, 130), False)]
        wire = [frame(p, BINARY if b else TEXT) for p, b in expected]
        proto = yield self.client()
        yield write_in_chunks(proto.transport, wire, rng, largest=1, delay=0.0005, on_boundary=0)
        self.assertMessages((yield self.receive(proto, len(expected))), expected)
        self.assertMessages(self.app.ws.received, expected)


class Utf8Tests(FramesTestBase):
    @defer.inlineCallbacks
    def test_invalid_utf8_after_valid_frames_in_one_write(self):
        """Valid simple frames, then a complete text frame with invalid UTF-8 and one more valid
        frame, all in one write: the valid ones before it are relayed and their echoes come back,
        then the client gets 1007; the frame after it never reaches the upstream. Another client
        of the same wsfw keeps working."""
        bystander = yield self.client()
        proto = yield self.client()
        valid = [(b"one", False), (b"\x00\x01\x02", True), ("ünï €".encode(), False), (b"", True),
                 (b"x" * 300, False)]
        raw = (b"".join(frame(p, BINARY if b else TEXT) for p, b in valid)
               + frame(b"ok \xff bad") + frame(b"after"))
        upstream_closed = self.app.ws.next_close()
        got, code = yield self.outcome(proto, raw)
        self.assertEqual(code, 1007)
        self.assertEqual((yield upstream_closed)[1], 1001)
        self.assertMessages(self.app.ws.received, valid)
        bystander.sendMessage("still here ✓".encode())
        self.assertEqual((yield support.next_message(bystander)), ("still here ✓".encode(), False))
        self.assertTrue(got == valid, "the echoes of the messages before the invalid frame come back before the "
                                      f"1007, as from Autobahn alone: {first_difference(got, valid)}")

    @defer.inlineCallbacks
    def test_utf8_edge_cases_judged_as_autobahn_does(self):
        """Complete single-frame text messages on the edges of UTF-8 validity (surrogates, overlong
        forms, code points past U+10FFFF, a sequence cut at the end of the message, noncharacters
        and the largest valid code points): the fast path's check (Python's decoder) accepts
        exactly what Autobahn's validator accepts. Each payload goes, between two valid frames,
        once through wsfw and once straight to Autobahn: the close code (none, or 1007) and the
        messages the upstream gets must match what Autobahn accepts. (Whether the echo of the
        first frame comes back before the 1007 is test_invalid_utf8_after_valid_frames_in_one_write's.)"""
        cases = {
            "noncharacter U+FFFF": b"a\xef\xbf\xbf", "U+10FFFF": b"\xf4\x8f\xbf\xbf", "U+D7FF": b"\xed\x9f\xbf",
            "U+E000": b"\xee\x80\x80", "BOM": b"\xef\xbb\xbf", "U+FFFE": b"\xef\xbf\xbe", "NUL": b"\x00",
            "surrogate": b"\xed\xa0\x80", "low surrogate": b"\xed\xbf\xbf", "overlong NUL": b"\xc0\x80",
            "overlong slash": b"\xe0\x80\xaf", "overlong 4": b"\xf0\x80\x80\x80", "above U+10FFFF": b"\xf4\x90\x80\x80",
            "F5": b"\xf5\x80\x80\x80", "FE": b"\xfe", "FF": b"a\xff", "lone continuation": b"\x80",
            "cut at end 3": b"ok\xe2\x82", "cut at end 2": b"ok\xc3", "cut at end 4": b"ok\xf0\x9f\x9a",
            "5-byte form": b"\xf8\x88\x80\x80\x80", "long valid then bad": "é".encode() * 200 + b"\xc3(",
        }
        wrong = []
        for name, payload in sorted(cases.items()):
            valid = _is_utf8(payload)
            raw = frame(b"before") + frame(payload) + frame(b"after")
            accepted = [(b"before", False)] + ([(payload, False), (b"after", False)] if valid else [])
            through, straight = yield defer.gatherResults([self.client(), self.direct()])
            answers = []
            for proto in (through, straight):
                seen = len(self.app.ws.received)
                upstream_closed = self.app.ws.next_close()
                _, code = yield self.outcome(proto, raw, until_messages=3 if valid else None)
                if code is not None and proto is through:
                    yield upstream_closed  # wsfw closes its upstream hop before it fails the client
                answers.append((code, self.app.ws.received[seen:]))
            if not answers[0] == answers[1] == (None if valid else 1007, accepted):
                wrong.append(f"{name} ({payload[:12]!r}): wsfw {answers[0]}, Autobahn {answers[1]}")
        self.assertEqual(wrong, [])

    @defer.inlineCallbacks
    def test_incomplete_frame_with_early_invalid_utf8_fails_fast(self):
        """The header and the first bytes of a 1,000-byte text frame, with an invalid byte among
        them, after valid frames in the same write: the client gets 1007 without ever sending the
        rest of the frame. The fast path must not wait for the frame to be complete; Autobahn
        validates it incrementally and fails at once."""
        proto = yield self.client()
        payload = b"abc\xff" + b"x" * 996
        partial = frame(payload)[:2 + 2 + 4 + 10]  # header, 16-bit length, mask and 10 payload bytes
        valid = [(b"first", False), (b"\x01" * 200, True)]
        got, code = yield self.outcome(proto, b"".join(frame(p, BINARY if b else TEXT) for p, b in valid) + partial)
        self.assertMessages(got, valid)
        self.assertEqual(code, 1007)
        self.assertMessages(self.app.ws.received, valid)

    @defer.inlineCallbacks
    def test_incomplete_frame_invalid_byte_arriving_later_fails_fast(self):
        """A 64-bit length text frame (70,000 B) whose first read has only valid bytes, and whose
        second read brings an invalid one: 1007 as soon as that byte arrives, long before the frame
        could be complete."""
        proto = yield self.client()
        payload = b"a" * 1000 + b"\xc0\xaf" + b"b" * 68998
        whole = frame(payload)
        proto.transport.write(whole[:2 + 8 + 4 + 500])
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(proto.factory.closed.called)
        proto.transport.write(whole[2 + 8 + 4 + 500:2 + 8 + 4 + 1010])
        code = yield self.close_code(proto)
        self.assertEqual(code, 1007)
        self.assertEqual(self.app.ws.received, [])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ProtocolErrorTests(FramesTestBase):
    #: name: bytes that break the protocol (each gets 1002 from Autobahn)
    CASES = {
        "unmasked client frame": frame(b"plain", masked=False),
        "unmasked empty client frame": frame(b"", masked=False),
        "RSV1 without compression": frame(b"deflated?", rsv=4),
        "RSV2": frame(b"x", rsv=2),
        "RSV3": frame(b"x", rsv=1),
        "16-bit length for 10 bytes": frame(b"0123456789", length=16),
        "16-bit length for 125 bytes": frame(b"y" * 125, length=16),
        "64-bit length for 200 bytes": frame(b"z" * 200, length=64),
        "64-bit length for 65535 bytes": frame(b"z" * 65535, length=64),
        "64-bit length over 2^63": frame(b"", declared=1 << 63, length=64)[:14],
        "reserved data opcode 3": frame(b"x", 3),
        "reserved data opcode 7": frame(b"x", 7),
        "reserved control opcode 11": frame(b"x", 0xB),
        "continuation outside a message": frame(b"lost", CONT),
        "final continuation outside a message": frame(b"", CONT, fin=True),
        "new message inside a fragmented one": frame(b"part", fin=False) + frame(b"new"),
        "fragmented ping": frame(b"p", PING, fin=False),
        "ping over 125 bytes": frame(b"p" * 126, PING),
        "close with 1-byte payload": frame(b"\x03", CLOSE),
    }
    #: Cases where Autobahn itself does not answer with a clean 1002 after the echoes (a close frame
    #: is also taken as the peer's close): wsfw only has to give Autobahn's close code.
    AS_AUTOBAHN = frozenset({"close with 1-byte payload"})

    @defer.inlineCallbacks
    def test_protocol_errors_after_valid_frames_get_autobahns_close_code(self):
        """Each protocol error, after valid simple frames in the same write and followed by one
        more valid frame, on its own connection: the close code is 1002, the same as Autobahn
        answers to the same bytes, the valid messages before it are echoed (all of them, as a
        direct connection does), and nothing after it reaches the upstream."""
        valid = [(b"a", False), (b"\x00\x01", True), (("ü" * 100).encode(), False), (b"", False)]
        prefix = b"".join(frame(p, BINARY if b else TEXT) for p, b in valid)
        wrong = []
        for name, bad in sorted(self.CASES.items()):
            received_before = len(self.app.ws.received)
            through, straight = yield defer.gatherResults([self.client(), self.direct()])
            upstream_closed = self.app.ws.next_close()
            raw = prefix + bad + frame(b"after")
            via_wsfw = yield self.outcome(through, raw)
            yield upstream_closed
            relayed = self.app.ws.received[received_before:]
            via_autobahn = yield self.outcome(straight, raw)
            if name in self.AS_AUTOBAHN:
                # Autobahn drops the connection (1006) and with it the echoes still buffered; when the
                # upstream's echoes reach wsfw before that drop, it delivers them first: either way
                # the client sees the same close code and only echoes of what preceded the bad frame.
                ok = via_wsfw[1] == via_autobahn[1] and via_wsfw[0] == valid[:len(via_wsfw[0])]
            else:
                ok = via_wsfw == via_autobahn == (valid, 1002)
            if not ok or relayed != valid:
                wrong.append(f"{name}: wsfw {len(via_wsfw[0])} echoes, {via_wsfw[1]}; Autobahn "
                             f"{len(via_autobahn[0])} echoes, {via_autobahn[1]}; relayed {len(relayed)}")
        self.assertEqual(wrong, [])
        self.assertEqual(self.paths["autobahn"]["client"], 0, "every valid frame went by the fast path")

    @defer.inlineCallbacks
    def test_protocol_error_in_a_later_read(self):
        """Valid frames, then (in a later read, after their echoes came back) a protocol error: 1002,
        so state the fast path leaves behind between reads does not hide a later error."""
        proto = yield self.client()
        proto.transport.write(frame(b"one") + frame(b"two", BINARY))
        self.assertMessages((yield self.receive(proto, 2)), [(b"one", False), (b"two", True)])
        proto.transport.write(frame(b"x", rsv=4)[:1])
        yield task.deferLater(reactor, 0.02, lambda: None)
        proto.transport.write(frame(b"x", rsv=4)[1:])
        code = yield self.close_code(proto)
        self.assertEqual(code, 1002)


class CapsTests(FramesTestBase):
    config_extra = "[limits]\nmax_message_bytes = 64KiB\nmax_frame_bytes = 1000\n"

    @defer.inlineCallbacks
    def test_frame_at_the_cap_passes(self):
        """With max_frame_bytes = 1000, 1,000-byte text and binary frames (16-bit lengths, in the
        fast path's range) pass, by the fast path, both ways; so does a fragmented message of
        three 300-byte frames (Autobahn's; its echo is one 900-byte frame, under the cap too)."""
        proto = yield self.client()
        rng = random.Random(7)
        expected = [(text_of(rng, 1000), False), (rng.randbytes(1000), True), (text_of(rng, 900), False)]
        fragments = [expected[2][0][i:i + 300] for i in (0, 300, 600)]
        raw = (frame(expected[0][0]) + frame(expected[1][0], BINARY) + frame(fragments[0], fin=False)
               + frame(fragments[1], CONT, fin=False) + frame(fragments[2], CONT))
        proto.transport.write(raw)
        self.assertMessages((yield self.receive(proto, 3)), expected)
        self.assertEqual((self.paths["fast"]["client"], self.paths["autobahn"]["client"]), (2, 1))
        self.assertEqual(self.paths["fast"]["upstream"], 3)

    @defer.inlineCallbacks
    def test_frame_over_the_cap_closes_1009(self):
        """A 2,000-byte and a 1,001-byte frame (each after a valid 1,000-byte one, in one write),
        text and binary: 1009, and the oversized frame never reaches the upstream; the fast path
        must leave a frame over the hop's cap to Autobahn even though it fits 16 bits."""
        for size, binary in ((2000, True), (1001, False), (1001, True), (65535, False)):
            proto = yield self.client()
            before = len(self.app.ws.received)
            upstream_closed = self.app.ws.next_close()
            ok = (b"k" * 1000, binary)
            raw = frame(ok[0], BINARY if binary else TEXT) + frame(b"o" * size, BINARY if binary else TEXT)
            got, code = yield self.outcome(proto, raw)
            self.assertEqual(([(len(p), b) for p, b in got], code), ([(1000, binary)], 1009), f"{size} B after 1000 B")
            self.assertEqual((yield upstream_closed)[1], 1001)
            self.assertMessages(self.app.ws.received[before:], [ok])

    @defer.inlineCallbacks
    def test_upstream_frame_over_the_cap_closes(self):
        """The cap holds on the upstream hop too: an upstream that writes a 1,000-byte frame then a
        1,001-byte one (unmasked, 16-bit length) has its first message relayed, its oversized one
        refused with 1009 (the client gets 1011), never reaching the client."""
        proto = yield self.client()
        proto.sendMessage(b"hello")
        yield support.next_message(proto)
        yield self.upstream_fails(proto, [(b"u" * 1000, True)], frame(b"v" * 1001, BINARY, masked=False), 1009)


class UpstreamDirectionTests(FramesTestBase):
    @defer.inlineCallbacks
    def test_coalesced_replies_with_a_large_one_in_the_middle(self):
        """300 messages in one client write, so the upstream's echoes arrive back to back in a few
        reads; one of them (100,000 B, a 64-bit length) is in the middle, so the upstream hop's fast
        path hands over to Autobahn and back, and the client hop's writes alternate between the
        single-frame write and Autobahn's sendMessage. All 300 arrive intact and in order."""
        rng = random.Random(8)
        expected = []
        for i in range(300):
            if i == 150:
                expected.append((rng.randbytes(100000), True))
            elif i % 7 == 0:
                expected.append((text_of(rng, rng.randint(126, 3000)), False))
            else:
                expected.append((f"m{i} ✓".encode() * rng.randint(1, 5), bool(i % 2)))
        proto = yield self.client()
        proto.transport.write(b"".join(frame(p, BINARY if b else TEXT) for p, b in expected))
        self.assertMessages((yield self.receive(proto, len(expected))), expected)
        yield self.assertNothingMore(proto)
        self.assertGreater(self.paths["fast"]["upstream"], 0)
        self.assertGreaterEqual(self.paths["autobahn"]["upstream"], 1)

    @defer.inlineCallbacks
    def test_upstream_random_stream_chunked(self):
        """The upstream writes a seeded random mix (unmasked frames, pings, fragments, 64-bit
        lengths) in 1..700 byte chunks: the client receives every message intact and in order."""
        rng = random.Random(9)
        wire, expected = random_stream(rng, 200, masked=False)
        proto = yield self.client()
        proto.sendMessage(b"hello")
        yield support.next_message(proto)
        yield write_in_chunks(self.app.ws.opened[-1].transport, wire, rng)
        self.assertMessages((yield self.receive(proto, len(expected))), expected)
        yield self.assertNothingMore(proto)
        self.assertGreater(self.paths["fast"]["upstream"], 0)
        self.assertGreater(self.paths["autobahn"]["upstream"], 0)

    @defer.inlineCallbacks
    def test_upstream_protocol_error_after_valid_frames(self):
        """An upstream writing valid frames then a masked one (servers must not mask), in one write:
        the valid ones reach the client, the upstream gets 1002 as from Autobahn, the client 1011,
        and the frame after the bad one is not relayed."""
        proto = yield self.client()
        proto.sendMessage(b"hello")
        yield support.next_message(proto)
        valid = [(b"u1", False), (b"\x02" * 300, True)]
        yield self.upstream_fails(proto, valid, frame(b"masked", masked=True) + frame(b"after", masked=False), 1002)


class ClosingTests(FramesTestBase):
    @defer.inlineCallbacks
    def test_close_frame_after_valid_frames_in_one_write(self):
        """Valid simple frames, a close frame (4000, "bye") and more frames after it, in one write:
        the valid ones are relayed and echoed, the upstream gets the client's code and reason, the
        client the upstream's answer, and nothing written after the close reaches the upstream."""
        proto = yield self.client()
        valid = [(b"one", False), (b"\x00" * 500, True), ("drei ✓".encode(), False)]
        upstream_closed = self.app.ws.next_close()
        raw = (b"".join(frame(p, BINARY if b else TEXT) for p, b in valid)
               + frame((4000).to_bytes(2, "big") + b"bye", CLOSE) + frame(b"after close") + frame(b"x", BINARY))
        got, code = yield self.outcome(proto, raw)
        self.assertMessages(got, valid)
        self.assertEqual(code, 1000)
        self.assertEqual((yield upstream_closed), (True, 4000, "bye"))
        self.assertMessages(self.app.ws.received, valid)
        yield self.wsfw.drained()


    @defer.inlineCallbacks
    def test_upstream_messages_then_close_in_one_write(self):
        """The upstream writes simple frames, a close (4001, "done") and a frame after it, in one
        write. The fast path collects the copies for the client and writes them when the read is
        done; the close, written by Autobahn in the same read, must not overtake them: the client
        gets every message, then the upstream's code and reason."""
        proto = yield self.client()
        proto.sendMessage(b"hello")
        yield support.next_message(proto)
        valid = [(b"first", False), (b"\x01" * 700, True), ("último ✓".encode(), False)]
        raw = (b"".join(frame(p, BINARY if b else TEXT, masked=False) for p, b in valid)
               + frame((4001).to_bytes(2, "big") + b"done", CLOSE, masked=False) + frame(b"late", masked=False))
        self.app.ws.opened[-1].transport.write(raw)
        got = yield self.receive(proto, len(valid))
        self.assertMessages(got, valid)
        code = yield self.close_code(proto)
        self.assertEqual((code, proto.remoteCloseReason), (4001, "done"))
        self.assertEqual(proto.factory.messages.pending, [])
        self.assertEqual(self.paths["fast"]["upstream"], len(valid) + 1)  # the echo of "hello" too


class InspectedTests(FramesTestBase):
    route_extra = ""  # the default inspection, in block mode

    @defer.inlineCallbacks
    def test_blocked_message_stops_the_batch(self):
        """With inspection on, an attack in the middle of simple frames written at once closes the
        client with 1008 (policy): the messages before it reach the upstream, the attack and the
        frames after it (which the fast path has in the same read) never do."""
        proto = yield self.client()
        before = [(b"hello", False), (b"\x01\x02", True)]
        attack = b'42["chat message","<img src=x onerror=alert(document.cookie)>"]'
        raw = (b"".join(frame(p, BINARY if b else TEXT) for p, b in before) + frame(attack)
               + frame(b"after one") + frame(b"after two", BINARY))
        upstream_closed = self.app.ws.next_close()
        _, code = yield self.outcome(proto, raw)
        self.assertEqual(code, 1008)
        self.assertEqual((yield upstream_closed)[1], 1001)
        self.assertMessages(self.app.ws.received, before)
        self.assertGreaterEqual(self.paths["fast"]["client"], 3)
