"""The load generator: a lean asyncio WebSocket client, one process, many connections.

The generator shares a 2-core machine with the echo server, so every
microsecond it spends per round trip is one the measurement cannot use. A
general-purpose client (Autobahn, websockets) parses every frame through a
state machine and masks every payload; this one speaks just enough RFC 6455
for an echo benchmark and does almost nothing per message:

* each connection's message is fixed (a chat-like JSON text padded to size),
  so its masked frame (random key per connection) is built once and re-sent;
* the echo of that frame is known byte for byte, so received data is checked
  with one ``bytes`` comparison per batch instead of being parsed; anything
  else (close, ping, a frame that does not match) drops to a real parser;
* the sends triggered by one ``data_received`` go out in one write.

Two modes, each printing one JSON object on stdout:

``throughput``  N connections, each keeping W messages in flight (closed
                loop); warm-up, then a measured window with latencies and the
                CPU time of the watched processes (``/proc/PID/stat``).
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
import hashlib
import itertools
import json
import os
import random
import resource
import string
import struct
import sys
import time

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
    words = []
    while sum(map(len, words)) + len(words) < room:
        words.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8))))
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


# -- process figures --------------------------------------------------------------

def proc_cpu_ticks(pid: int) -> int | None:
    """utime + stime of a whole process (all threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm


def proc_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


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

    def __init__(self, watch: dict[str, int]):
        self.wall = time.perf_counter()
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
        self.bad = 0             # frames that were not the expected echo
        self.closed_by_server = 0


class Conn(asyncio.Protocol):
    """One WebSocket client connection sending one fixed message over and over."""

    def __init__(self, stats: Stats, host: str, path: str, payload: bytes):
        self.stats = stats
        self.host = host
        self.path = path
        self.frame = client_frame(payload)
        self.echo = server_frame(payload)
        self.payload = payload
        self.sent = collections.deque()  # send times (perf_counter_ns) of messages in flight
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
            size = len(self.echo)
            n = len(buf) // size
            if not n:
                self.buf = buf
                return
            whole = n * size
            if buf[:whole] != (self.echo if n == 1 else self.echo * n):
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
        now = time.perf_counter_ns()
        self.transport.write(self.frame * window)
        self.sent.extend(itertools.repeat(now, window))

    def _echoes(self, n: int) -> None:
        now = time.perf_counter_ns()
        stats, sent = self.stats, self.sent
        self.echoed += n
        if stats.measuring:
            stats.count += n
            lat = stats.latencies
            for _ in range(n):
                lat.append(now - sent.popleft())
        else:
            for _ in range(n):
                sent.popleft()
        if stats.running:
            self.transport.write(self.frame if n == 1 else self.frame * n)
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
            if opcode in (TEXT, BINARY) and fin and payload == self.payload:
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


# -- runs -------------------------------------------------------------------------

async def open_conns(stats, args, count: int, concurrency: int, sizes_payload, deadline: float):
    """Open ``count`` connections, at most ``concurrency`` handshakes at a time, until ``deadline``."""
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
                    lambda: Conn(stats, hostport, args.path, sizes_payload(i)), args.host, args.port), left)
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


def percentile(sorted_values, q: float):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def throughput(args) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(args.seed)
    payloads = [chat_message(args.size, rng, i) for i in range(args.conns)]
    t0 = loop.time()
    conns, errors = await open_conns(stats, args, args.conns, args.conns, payloads.__getitem__, t0 + 30)
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
        "latency_us": {name: percentile(lat, q) / 1000 if lat else None
                       for name, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))},
        "cpu": cpu,
        "in_flight_drained": drained,
        "bad_frames": stats.bad,
        "closed_by_server": stats.closed_by_server,
    })
    return out


async def idle(args) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(args.seed)
    payload = chat_message(args.size, rng, 0)
    server = args.watch.get("server")
    out = {"mode": "idle", "target": args.conns, "size": args.size}

    # Warm the server's code paths (handshake, relay, close) before its RSS is read.
    warm, _ = await open_conns(stats, args, 10, 10, lambda i: payload, loop.time() + 10)
    for c in warm:
        c.start(1)
    await asyncio.wait_for(asyncio.gather(*(c.drained() for c in warm)), 10)
    await close_all(warm, 3)
    await asyncio.sleep(0.5)

    out["rss_before_kib"] = proc_rss_kib(server)
    t0 = time.perf_counter()
    conns, errors = await open_conns(stats, args, args.conns, args.concurrency, lambda i: payload,
                                     loop.time() + args.open_timeout)
    opened_s = time.perf_counter() - t0
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
    parser.add_argument("mode", choices=("throughput", "idle"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--window", type=int, default=10, help="messages in flight per connection")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
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
    result = asyncio.run(throughput(args) if args.mode == "throughput" else idle(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
