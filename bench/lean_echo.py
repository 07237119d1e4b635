"""The relays' upstream: a lean asyncio WebSocket echo server, so the load side has room to spare.

The generator and the upstream share one core (the relay under test has the
other). Through a relay at 5,000 msg/s, where every message arrives on its
own, the Autobahn echo server (``echo_upstream.py``) needs about 120 µs per
message, and with the generator that core was at 95 %: the figures measured
the load side as much as the relay. This server speaks just enough RFC 6455
for an echo: it parses frames, unmasks them with one integer XOR, and sends
every message back in one unmasked frame with its opcode (fragments are
reassembled; pings answered; a close is answered and TCP closed, as a server
should). No UTF-8 validation, no size limits, no extensions (a
permessage-deflate offer is ignored, i.e. refused); all the replies to one
``data_received`` go out in one write.

``direct`` still measures ``echo_upstream.py``: that target is the cost of an
Autobahn server hop, this one only has to be cheap.

    python bench/lean_echo.py [--port 0]

Prints ``lean echo listening on PORT`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import resource
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def server_frame(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


class Echo(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.buf = b""
        self.open = False
        self.fragments: list[bytes] = []
        self.fragment_opcode = TEXT

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self.transport.abort()
                self.buf = buf
                return
            self._handshake(buf[:end])
            buf = buf[end + 4:]
            if self.transport.is_closing():
                return
        out, pos, size = [], 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, p = b1 & 0x7F, pos + 2
            if n == 126:
                if size - p < 2:
                    break
                (n,), p = struct.unpack_from("!H", buf, p), p + 2
            elif n == 127:
                if size - p < 8:
                    break
                (n,), p = struct.unpack_from("!Q", buf, p), p + 8
            if b1 & 0x80:
                if size - p < 4 + n:
                    break
                payload, p = unmask(buf[p + 4:p + 4 + n], buf[p:p + 4]), p + 4 + n
            else:  # clients must mask; echo it anyway
                if size - p < n:
                    break
                payload, p = buf[p:p + n], p + n
            pos = p
            fin, opcode = b0 & 0x80, b0 & 0x0F
            if opcode in (TEXT, BINARY, CONT):
                if opcode != CONT:
                    self.fragment_opcode = opcode
                if fin and not self.fragments:
                    out.append(server_frame(payload, opcode if opcode != CONT else self.fragment_opcode))
                else:
                    self.fragments.append(payload)
                    if fin:
                        out.append(server_frame(b"".join(self.fragments), self.fragment_opcode))
                        self.fragments = []
            elif opcode == PING:
                out.append(server_frame(payload, PONG))
            elif opcode == CLOSE:
                out.append(server_frame(payload[:2], CLOSE))
                self.transport.write(b"".join(out))
                self.transport.close()
                self.buf = b""
                return
        self.buf = buf[pos:]
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _handshake(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        key = headers.get("sec-websocket-key")
        if not lines[0].startswith("GET ") or "websocket" not in headers.get("upgrade", "").lower() or not key:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.open = True


async def serve(port: int, backlog: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=backlog)
    print(f"lean echo listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of sockets in the idle phase
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(serve(args.port, args.backlog))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
