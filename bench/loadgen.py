"""The load generator: a lean asyncio WebSocket client, one process, many connections.

The generator shares a 2-core machine with the echo server, so every
microsecond it spends per round trip is one the measurement cannot use. A
general-purpose client (Autobahn, websockets) parses every frame through a
state machine and masks every payload; this one speaks just enough RFC 6455
for an echo benchmark and does almost nothing per message:

* every message is a chat-like JSON text padded to a fixed size whose text
  starts with an 8-digit sequence number, so no two messages on a connection
  are alike (no cache in a server can answer a repeated value) yet all have
  the same length; a connection's masked frame (random key per connection)
  is built once, and per message only the 8 digits are masked and spliced in;
* the echo of each message is known byte for byte, so received data is
  checked with one ``bytes`` comparison per batch instead of being parsed;
  anything else (close, ping, a frame that does not match) drops to a real
  parser;
* the sends triggered by one ``data_received`` go out in one write.

Three modes, each printing one JSON object on stdout:

``throughput``  N connections, each keeping W messages in flight (closed
                loop); warm-up, then a measured window with latencies and the
                CPU time of the watched processes (``/proc/PID/stat``).
``rate``        open loop: N connections, messages sent on a fixed schedule
                at an aggregate rate R (message k at t0 + k/R, on connection
                k mod N); latency = echo arrival - *scheduled* send time, so a
                late send (the generator falling behind) counts against the
                figure instead of being omitted; the generator's own lag
                (actual - scheduled send) and CPU are reported beside it. If
                more than one second of traffic (R messages) is ever
                unanswered the target cannot sustain R: sending stops and the
                result says when (``overloaded_at_s``).
``idle``        K connections opened at bounded concurrency and left idle;
                the watched server's VmRSS before and after; then one message
                on each to count the connections still alive.

Every wait is bounded; on its deadline the generator reports what it has.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import random
import resource
import string
import struct
import sys
from time import monotonic_ns

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- frames ---------------------------------------------------------------------

def chat_message(size: int, rng: random.Random, user: int) -> bytes:
    """A chat-like JSON text of exactly ``size`` bytes: ``{"type":"chat","user":..,"text":..}``."""
    head = f'{{"type":"chat","user":"u{user:05d}","text":"'.encode()
    tail = b'"}'
    room = size - len(head) - len(tail)
    if room < 0:
        raise ValueError(f"message size {size} is below the {len(head) + len(tail)}-byte JSON envelope")
    words, length = [], -1
    while length < room:
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8)))
        words.append(word)
        length += len(word) + 1
    text = " ".join(words).encode()[:room]
    return head + text + tail


def _length_header(first: int, mask_bit: int, n: int) -> bytes:
    if n < 126:
        return struct.pack("!BB", first, mask_bit | n)
    if n < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, n)
    return struct.pack("!BBQ", first, mask_bit | 127, n)


def client_frame(payload: bytes, opcode: int = TEXT, key: bytes | None = None) -> bytes:
    """A masked, final frame, as a client must send it."""
    key = os.urandom(4) if key is None else key
    reps = -(-len(payload) // 4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((key * reps)[:len(payload)], "big"))
    masked = masked.to_bytes(len(payload), "big") if payload else b""
    return _length_header(0x80 | opcode, 0x80, len(payload)) + key + masked


def server_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """The unmasked, final frame a server sends for ``payload``: what an echo must look like."""
    return _length_header(0x80 | opcode, 0, len(payload)) + payload


def parse_frame(buf: bytes, pos: int):
    """One server frame at ``pos``: ``(fin, opcode, payload, next_pos)``, or None if incomplete."""
    if len(buf) - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    n, p = b1 & 0x7F, pos + 2
    if n == 126:
        if len(buf) - p < 2:
            return None
        (n,), p = struct.unpack_from("!H", buf, p), p + 2
    elif n == 127:
        if len(buf) - p < 8:
            return None
        (n,), p = struct.unpack_from("!Q", buf, p), p + 8
    key = None
    if b1 & 0x80:  # servers must not mask, but tolerate it
        if len(buf) - p < 4:
            return None
        key, p = buf[p:p + 4], p + 4
    if len(buf) - p < n:
        return None
    payload = buf[p:p + n]
    if key is not None:
        payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload, p + n


SEQ_DIGITS = 8
SEQ_MOD = 10 ** SEQ_DIGITS


class Messages:
    """One connection's messages: ``chat_message(size)`` whose text starts with an 8-digit sequence number.

    Message ``seq`` differs from every other one on the connection (no server
    cache can answer it) but all have the same length, so the client frames and
    the echoes are split from precomputed parts, and only the 8 digits (masked
    with the connection's key for the client frame) change per message.
    """

    def __init__(self, size: int, rng: random.Random, user: int, key: bytes | None = None):
        payload = chat_message(size, rng, user)
        at = payload.index(b'"text":"') + len(b'"text":"')
        if at + SEQ_DIGITS + 1 > len(payload) - 2:
            raise ValueError(f"message size {size} leaves no room for the {SEQ_DIGITS}-digit sequence number")
        payload = payload[:at] + b"0" * SEQ_DIGITS + b" " + payload[at + SEQ_DIGITS + 1:]
        key = os.urandom(4) if key is None else key
        frame, echo = client_frame(payload, TEXT, key), server_frame(payload)
        f, e = len(frame) - len(payload) + at, len(echo) - len(payload) + at  # where the digits go
        self.size = size
        self.frame_head, self.frame_tail = frame[:f], frame[f + SEQ_DIGITS:]
        self.echo_head, self.echo_tail = echo[:e], echo[e + SEQ_DIGITS:]
        self.payload_head, self.payload_tail = payload[:at], payload[at + SEQ_DIGITS:]
        self.mask = int.from_bytes((key * (SEQ_DIGITS // 4 + 2))[at % 4:at % 4 + SEQ_DIGITS], "big")
        self.echo_len = len(echo)

    def frame(self, seq: int) -> bytes:
        """The masked client frame of message ``seq``."""
        digits = int.from_bytes(b"%08d" % (seq % SEQ_MOD), "big") ^ self.mask
        return self.frame_head + digits.to_bytes(SEQ_DIGITS, "big") + self.frame_tail

    def frames(self, seq: int, n: int) -> bytes:
        if n == 1:
            return self.frame(seq)
        return b"".join([self.frame(s) for s in range(seq, seq + n)])

    def echo(self, seq: int) -> bytes:
        """The server frame an echo of message ``seq`` must be, byte for byte."""
        return self.echo_head + b"%08d" % (seq % SEQ_MOD) + self.echo_tail

    def echoes(self, seq: int, n: int) -> bytes:
        if n == 1:
            return self.echo(seq)
        return b"".join([self.echo(s) for s in range(seq, seq + n)])

    def payload(self, seq: int) -> bytes:
        return self.payload_head + b"%08d" % (seq % SEQ_MOD) + self.payload_tail


# -- process figures --------------------------------------------------------------

def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a daemon with worker processes counts as one server)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def _ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm


def proc_cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process and its descendants (all threads), in clock ticks."""
    total = _ticks(pid)
    if total is None:
        return None
    for child in proc_tree(pid)[1:]:
        total += _ticks(child) or 0
    return total


def proc_rss_kib(pid: int) -> int | None:
    """VmRSS of a process plus its descendants' (pages they share are counted once per process)."""
    total = None
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total = (total or 0) + int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_jiffies() -> dict[str, dict[str, int]]:
    """Per-CPU busy, idle and steal jiffies from /proc/stat (``cpu`` is the total)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *vals = line.split()
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, vals[:8])
            out[name] = {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}
    return out


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Sample:
    """The CPU clocks of the watched processes, this process and the machine at one instant."""

    def __init__(self, watch: dict[str, int], stats: "Stats | None" = None):
        self.mono = monotonic_ns()
        self.wall = self.mono / 1e9
        self.echoed = stats.echoed if stats is not None else None
        self.self_cpu = self_cpu_seconds()
        self.ticks = {name: proc_cpu_ticks(pid) for name, pid in watch.items()}
        self.cpus = cpu_jiffies()


def cpu_report(a: Sample, b: Sample) -> dict:
    """CPU use between two samples: seconds per watched process, % of one core, per-CPU load."""
    wall = b.wall - a.wall
    procs = {}
    for name in a.ticks:
        if a.ticks[name] is None or b.ticks[name] is None:
            procs[name] = None
            continue
        secs = (b.ticks[name] - a.ticks[name]) / CLK_TCK
        procs[name] = {"cpu_s": secs, "cpu_pct": 100 * secs / wall}
    cpus = {}
    for name in b.cpus:
        d = {k: b.cpus[name][k] - a.cpus[name].get(k, 0) for k in b.cpus[name]} if name in a.cpus else None
        if d is None:
            continue
        total = d["busy"] + d["idle"] + d["steal"]
        cpus[name] = {"busy_pct": 100 * d["busy"] / total if total else None,
                      "steal_pct": 100 * d["steal"] / total if total else None}
    gen = b.self_cpu - a.self_cpu
    return {"wall_s": wall, "procs": procs, "cpus": cpus,
            "generator": {"cpu_s": gen, "cpu_pct": 100 * gen / wall}}


# -- the client -------------------------------------------------------------------

class Stats:
    """Shared by all connections of a run."""

    def __init__(self):
        self.running = False     # closed loop: answer every echo with a new message
        self.measuring = False   # inside the measured window
        self.count = 0
        self.latencies: list[int] = []
        self.echoed = 0          # all echoes received, on every connection
        self.records: list[tuple[int, int, int]] = []  # open loop: (scheduled, sent, echoed) per message
        self.bad = 0             # frames that were not the expected echo
        self.closed_by_server = 0


class Conn(asyncio.Protocol):
    """One WebSocket client connection sending its numbered messages (see ``Messages``).

    Closed loop (``start`` and ``stats.running``): every echo is answered with
    the next message. Open loop (``open_loop``): messages go out only through
    ``send_at``, and each echo is recorded with its scheduled and actual send times.
    """

    def __init__(self, stats: Stats, host: str, path: str, msgs: Messages, open_loop: bool = False):
        self.stats = stats
        self.host = host
        self.path = path
        self.msgs = msgs
        self.open_loop = open_loop
        self.tx = 0                      # sequence number of the next message to send
        self.rx = 0                      # ... and of the next echo expected
        self.sent = collections.deque()  # per message in flight: send time (ns), open loop (scheduled, sent)
        self.echoed = 0
        self.buf = b""
        self.transport = None
        self.state = "connecting"
        loop = asyncio.get_running_loop()
        self.opened = loop.create_future()
        self.lost = loop.create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._echo_waiter = None

    # transport events

    def connection_made(self, transport):
        self.transport = transport
        self.state = "handshake"
        transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        % (self.path.encode(), self.host.encode(), self._key))

    def connection_lost(self, exc):
        self.state = "closed"
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"lost during handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake()

    def data_received(self, data):
        if self.state == "open":
            buf = self.buf + data if self.buf else data
            size = self.msgs.echo_len
            n = len(buf) // size
            if not n:
                self.buf = buf
                return
            whole = n * size
            if buf[:whole] != self.msgs.echoes(self.rx, n):
                self._slow(buf)
                return
            self.buf = buf[whole:]
            self._echoes(n)
        elif self.state == "handshake":
            self._handshake(data)
        elif self.state == "closing":
            self._slow(self.buf + data)

    # the fast path

    def start(self, window: int) -> None:
        """Put ``window`` messages in flight."""
        now = monotonic_ns()
        self.transport.write(self.msgs.frames(self.tx, window))
        self.tx += window
        self.sent.extend(itertools.repeat(now, window))

    def send_at(self, scheduled: int) -> None:
        """Open loop: send the next message, due at ``scheduled`` (ns, CLOCK_MONOTONIC)."""
        now = monotonic_ns()
        self.transport.write(self.msgs.frame(self.tx))
        self.tx += 1
        self.sent.append((scheduled, now))

    def _echoes(self, n: int) -> None:
        now = monotonic_ns()
        stats, sent = self.stats, self.sent
        self.echoed += n
        self.rx += n
        stats.echoed += n
        if self.open_loop:
            records = stats.records
            for _ in range(n):
                scheduled, t = sent.popleft()
                records.append((scheduled, t, now))
            self._wake()
            return
        if stats.measuring:
            stats.count += n
            lat = stats.latencies
            for _ in range(n):
                lat.append(now - sent.popleft())
        else:
            for _ in range(n):
                sent.popleft()
        if stats.running:
            self.transport.write(self.msgs.frames(self.tx, n))
            self.tx += n
            if n == 1:
                sent.append(now)
            else:
                sent.extend(itertools.repeat(now, n))
        self._wake()

    # everything else

    def _handshake(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 16384:
                self._fail("handshake response too long")
            return
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            self._fail(f"handshake refused: {lines[0]!r}")
            return
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            self._fail("bad Sec-WebSocket-Accept")
            return
        self.state = "open"
        self.opened.set_result(self)
        if self.buf:
            data, self.buf = self.buf, b""
            self.data_received(data)

    def _slow(self, buf: bytes) -> None:
        """Frame by frame: echoes are counted, anything else handled or counted as bad."""
        pos, echoes = 0, 0
        while True:
            frame = parse_frame(buf, pos)
            if frame is None:
                break
            fin, opcode, payload, pos = frame
            if opcode in (TEXT, BINARY) and fin and len(self.sent) > echoes and \
                    payload == self.msgs.payload(self.rx + echoes):
                echoes += 1
            elif opcode == PING:
                self.transport.write(client_frame(payload, PONG))
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                if self.state == "open":
                    self.stats.closed_by_server += 1
                    self.transport.write(client_frame(payload[:2], CLOSE))
                self.state = "closing"
                self.buf = b""
                if echoes:
                    self._echoes(echoes)
                return
            else:
                self.stats.bad += 1
        self.buf = buf[pos:]
        if echoes and self.state == "open":
            self._echoes(echoes)

    def _fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        self.transport.abort()

    def _wake(self) -> None:
        waiter = self._echo_waiter
        if waiter is not None and not waiter.done() and (not self.sent or self.state == "closed"):
            waiter.set_result(None)

    async def drained(self) -> None:
        """Until no message is in flight (or the connection is gone)."""
        if self.sent and self.state != "closed":
            self._echo_waiter = asyncio.get_running_loop().create_future()
            await self._echo_waiter

    async def close(self, timeout: float) -> bool:
        """Close handshake, then wait for the server to drop TCP; abort past ``timeout``. True if clean."""
        if self.state == "open":
            self.state = "closing"
            self.transport.write(client_frame(struct.pack("!H", 1000), CLOSE))
        if self.state != "closed":
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), timeout)
                return True
            except asyncio.TimeoutError:
                self.transport.abort()
                return False
        return True


class Timer:
    """Calls ``callback`` at absolute CLOCK_MONOTONIC times, to the microsecond.

    asyncio's own timers wake through epoll's millisecond timeout, rounded
    up: up to 1 ms late, which an open-loop latency measured from the
    scheduled send time would count. A timerfd (Linux, through ctypes) in the
    loop's reader set fires on time; elsewhere, ``loop.call_at``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback):
        self.loop, self.callback, self.fd, self._handle = loop, callback, -1, None
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self.fd = self._libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC
        except (OSError, AttributeError):
            self.fd = -1
        if self.fd >= 0:
            self._spec = (ctypes.c_long * 4)()  # struct itimerspec {it_interval, it_value}, no interval
            loop.add_reader(self.fd, self._fired)

    @property
    def precise(self) -> bool:
        return self.fd >= 0

    def at(self, ns: int) -> None:
        if self.fd >= 0:
            self._spec[2], self._spec[3] = divmod(max(ns, 1), 10 ** 9)
            self._libc.timerfd_settime(self.fd, 1, self._spec, None)  # TFD_TIMER_ABSTIME
        else:
            self._handle = self.loop.call_at(ns / 1e9, self.callback)  # loop.time() is time.monotonic()

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return
        self.callback()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        elif self._handle is not None:
            self._handle.cancel()


class Schedule:
    """The open-loop sender: message k is due at ``t0 + k / rate`` on connection ``k mod N``.

    Every wake-up sends all messages due by then, each stamped with its due
    time. Stops at ``end``, or early when more than ``max_backlog`` messages
    are unanswered (the target cannot keep up; ``overloaded_at`` says when).
    """

    def __init__(self, loop, conns, stats: Stats, rate: float, t0: int, end: int, max_backlog: int):
        self.conns, self.stats, self.rate, self.t0, self.end = conns, stats, rate, t0, end
        self.max_backlog = max_backlog
        self.k = 0
        self.sent = 0
        self.not_sent: list[int] = []    # due times of messages whose connection was gone
        self.overloaded_at: int | None = None
        self.stopped_at: int | None = None
        self.done = loop.create_future()
        self.timer = Timer(loop, self._fire)
        self.precise_timer = self.timer.precise

    def due(self, k: int) -> int:
        return self.t0 + int(k * 1e9 / self.rate)

    def start(self) -> None:
        self.timer.at(self.t0)

    def _fire(self) -> None:
        if self.done.done():
            return
        now = monotonic_ns()
        conns, n, k = self.conns, len(self.conns), self.k
        due = self.due(k)
        while due <= now and due < self.end:
            conn = conns[k % n]
            if conn.state == "open":
                conn.send_at(due)
                self.sent += 1
            else:
                self.not_sent.append(due)
            k += 1
            due = self.due(k)
        self.k = k
        if self.sent - self.stats.echoed > self.max_backlog:
            self.overloaded_at = now
            self._stop(now)
        elif due >= self.end:
            self._stop(now)
        else:
            self.timer.at(due)

    def _stop(self, now: int) -> None:
        self.stopped_at = now
        self.timer.close()
        self.done.set_result(None)


# -- runs -------------------------------------------------------------------------

async def open_conns(stats, args, count: int, concurrency: int, messages, deadline: float, open_loop=False):
    """Open ``count`` connections (connection i sends ``messages(i)``), at most ``concurrency``
    handshakes at a time, until ``deadline``."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    conns, errors = [], collections.Counter()
    hostport = f"{args.host}:{args.port}"

    async def one(i: int):
        async with gate:
            left = deadline - loop.time()
            if left <= 0:
                errors["deadline"] += 1
                return
            try:
                _, conn = await asyncio.wait_for(loop.create_connection(
                    lambda: Conn(stats, hostport, args.path, messages(i), open_loop), args.host, args.port), left)
                await asyncio.wait_for(asyncio.shield(conn.opened), max(0.01, deadline - loop.time()))
                conns.append(conn)
            except asyncio.TimeoutError:
                errors["timeout"] += 1
            except OSError as e:
                errors[type(e).__name__ + (f" errno {e.errno}" if e.errno else f": {e}")] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns, dict(errors)


async def close_all(conns, timeout: float) -> dict:
    results = await asyncio.gather(*(c.close(timeout) for c in conns))
    return {"clean": sum(results), "aborted": len(results) - sum(results)}


def percentile(sorted_values, q: float, total: int | None = None):
    """The q-quantile of ``total`` values of which ``sorted_values`` are the smallest (the rest
    unknown, e.g. never answered): None if it falls among the unknown ones."""
    total = len(sorted_values) if total is None else total
    if not total:
        return None
    i = min(total - 1, int(q * total))
    return sorted_values[i] if i < len(sorted_values) else None


QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))


async def throughput(args) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(args.seed)
    messages = [Messages(args.size, rng, i) for i in range(args.conns)]
    t0 = loop.time()
    conns, errors = await open_conns(stats, args, args.conns, args.conns, messages.__getitem__, t0 + 30)
    out = {"mode": "throughput", "size": args.size, "conns": len(conns), "window": args.window,
           "open_errors": errors}
    if len(conns) < args.conns:
        await close_all(conns, 2)
        out["error"] = f"only {len(conns)} of {args.conns} connections opened"
        return out
    stats.running = True
    for conn in conns:
        conn.start(args.window)
    await asyncio.sleep(args.warmup)
    before = Sample(args.watch)
    stats.count, stats.latencies, stats.measuring = 0, [], True
    await asyncio.sleep(args.duration)
    stats.measuring = False
    after = Sample(args.watch)
    count, lat = stats.count, stats.latencies
    stats.running = False
    try:
        await asyncio.wait_for(asyncio.gather(*(c.drained() for c in conns)), 10)
        drained = True
    except asyncio.TimeoutError:
        drained = False
    out["closed"] = await close_all(conns, 5)
    cpu = cpu_report(before, after)
    lat.sort()
    out.update({
        "round_trips": count,
        "seconds": cpu["wall_s"],
        "rate": count / cpu["wall_s"],
        "latency_us": {name: percentile(lat, q) / 1000 if lat else None for name, q in QUANTILES},
        "cpu": cpu,
        "in_flight_drained": drained,
        "bad_frames": stats.bad,
        "closed_by_server": stats.closed_by_server,
    })
    return out


async def rate(args) -> dict:
    """Open loop at ``args.rate`` messages/s over ``args.conns`` connections: latency from the schedule."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(args.seed)
    messages = [Messages(args.size, rng, i) for i in range(args.conns)]
    conns, errors = await open_conns(stats, args, args.conns, args.conns, messages.__getitem__, loop.time() + 30,
                                     open_loop=True)
    out = {"mode": "rate", "rate_target": args.rate, "size": args.size, "conns": len(conns),
           "warmup_s": args.warmup, "duration_s": args.duration, "open_errors": errors}
    if len(conns) < args.conns:
        await close_all(conns, 2)
        out["error"] = f"only {len(conns)} of {args.conns} connections opened"
        return out

    s = 10 ** 9
    t0 = monotonic_ns() + s // 20
    lo, hi = t0 + int(args.warmup * s), t0 + int((args.warmup + args.duration) * s)
    schedule = Schedule(loop, conns, stats, args.rate, t0, hi, max_backlog=max(int(args.rate), 100))
    schedule.start()

    async def until(ns: int) -> None:  # until ``ns`` or the schedule stopping, whichever is first
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(schedule.done), max(0.0, (ns - monotonic_ns()) / s))

    await until(t0)
    first = Sample(args.watch, stats)
    await until(lo)
    before = Sample(args.watch, stats) if not schedule.done.done() else first
    await schedule.done
    overloaded = schedule.overloaded_at is not None
    after = Sample(args.watch, stats) if not overloaded else None
    # The window is [lo, hi), cut short by an overload; one in the warm-up makes it [t0, overload).
    w_lo = lo if before is not first else t0
    w_hi = min(hi, schedule.stopped_at)

    # Drain: every message sent gets until the deadline to come back; the rest are unanswered.
    try:
        await asyncio.wait_for(asyncio.gather(*(c.drained() for c in conns)), args.drain)
    except asyncio.TimeoutError:
        pass
    if overloaded:
        # The server was saturated from the overload until its backlog was answered: CPU time and
        # echoes up to now give what it achieves flat out, and its CPU cost per round trip.
        after = Sample(args.watch, stats)
    in_window = [(due, sent, echoed) for due, sent, echoed in stats.records if w_lo <= due < w_hi]
    unanswered = [(due, sent) for c in conns for due, sent in c.sent]  # sent, never echoed
    closed = await close_all(conns, 5)
    # Percentiles are over every message due in the window: unanswered or never sent, it is lost.
    lost = sum(w_lo <= due < w_hi for due, _ in unanswered) + sum(w_lo <= due < w_hi for due in schedule.not_sent)
    total = len(in_window) + lost
    from_schedule = sorted(echoed - due for due, _, echoed in in_window)
    from_send = sorted(echoed - sent for _, sent, echoed in in_window)
    lag = sorted([sent - due for due, sent, _ in in_window] +
                 [sent - due for due, sent in unanswered if w_lo <= due < w_hi])
    cpu = cpu_report(before, after)
    seconds = (after.mono - before.mono) / s
    round_trips = after.echoed - before.echoed
    out.update({
        "precise_timer": schedule.precise_timer,
        "window_s": (w_hi - w_lo) / s,
        "overloaded_at_s": (schedule.overloaded_at - t0) / s if schedule.overloaded_at is not None else None,
        "scheduled": total,
        "answered": len(in_window),
        "lost_in_window": lost,
        "unanswered": len(unanswered),              # over the whole run, warm-up included
        "not_sent_closed": len(schedule.not_sent),  # due on a connection the server had closed
        "due_rate": total / ((w_hi - w_lo) / s) if w_hi > w_lo else None,
        # achieved: echoes that arrived in the window, per second (CPU figures: between the samples)
        "rate": sum(w_lo <= echoed < w_hi for _, _, echoed in stats.records) / ((w_hi - w_lo) / s)
        if w_hi > w_lo else None,
        "round_trips": round_trips,
        "seconds": seconds,
        "latency_us": {name: (v / 1000 if (v := percentile(from_schedule, q, total)) is not None else None)
                       for name, q in QUANTILES},
        "latency_from_send_us": {name: (v / 1000 if (v := percentile(from_send, q, total)) is not None else None)
                                 for name, q in QUANTILES},
        "send_lag_us": {name: (v / 1000 if (v := percentile(lag, q)) is not None else None)
                        for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "cpu": cpu,
        "closed": closed,
        "bad_frames": stats.bad,
        "closed_by_server": stats.closed_by_server,
    })
    out["generator_behind"] = bool(
        (out["send_lag_us"]["p99"] or 0) > args.max_lag_us or cpu["generator"]["cpu_pct"] > 90)
    return out


async def idle(args) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(args.seed)
    msgs = Messages(args.size, rng, 0)  # stateless: shared by all connections
    server = args.watch.get("server")
    out = {"mode": "idle", "target": args.conns, "size": args.size}

    # Warm the server's code paths (handshake, relay, close) before its RSS is read.
    warm, _ = await open_conns(stats, args, 10, 10, lambda i: msgs, loop.time() + 10)
    for c in warm:
        c.start(1)
    await asyncio.wait_for(asyncio.gather(*(c.drained() for c in warm)), 10)
    await close_all(warm, 3)
    await asyncio.sleep(0.5)

    out["server_processes"] = len(proc_tree(server))
    out["rss_before_kib"] = proc_rss_kib(server)
    before = Sample(args.watch)
    conns, errors = await open_conns(stats, args, args.conns, args.concurrency, lambda i: msgs,
                                     loop.time() + args.open_timeout)
    after = Sample(args.watch)
    opened_s = after.wall - before.wall
    out["cpu"] = cpu_report(before, after)  # while the connections were being opened
    out.update({"opened": len(conns), "open_errors": errors, "open_seconds": opened_s,
                "handshakes_per_s": len(conns) / opened_s if opened_s else None})
    await asyncio.sleep(args.settle)
    out["rss_after_kib"] = proc_rss_kib(server)
    if out["rss_before_kib"] is not None and out["rss_after_kib"] is not None and conns:
        out["kib_per_conn"] = (out["rss_after_kib"] - out["rss_before_kib"]) / len(conns)
    out["open_after_settle"] = sum(c.state == "open" for c in conns)

    for c in conns:
        if c.state == "open":
            c.start(1)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.drained() for c in conns)), args.echo_timeout)
    except asyncio.TimeoutError:
        pass
    out["alive"] = sum(c.echoed == 1 and c.state == "open" for c in conns)
    out["bad_frames"] = stats.bad
    out["closed"] = await close_all(conns, 10)
    return out


def parse_watch(values) -> dict[str, int]:
    out = {}
    for value in values or ():
        name, _, pid = value.partition("=")
        out[name] = int(pid)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("throughput", "rate", "idle"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--window", type=int, default=10, help="messages in flight per connection")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="rate mode: messages/s over all connections")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="rate mode: how long messages still in flight after the schedule get to come back")
    parser.add_argument("--max-lag-us", type=float, default=1000.0,
                        help="rate mode: the generator counts as behind schedule past this p99 send lag")
    parser.add_argument("--concurrency", type=int, default=100, help="idle mode: handshakes at a time")
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--echo-timeout", type=float, default=20.0)
    parser.add_argument("--watch", action="append", metavar="NAME=PID",
                        help="a process whose CPU (and, for 'server', RSS) is reported")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.watch = parse_watch(args.watch)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.mode == "idle" and args.conns + 64 > hard:
        print(f"loadgen: {args.conns} connections need more than the fd limit {hard}", file=sys.stderr)
        return 2
    result = asyncio.run({"throughput": throughput, "rate": rate, "idle": idle}[args.mode](args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
