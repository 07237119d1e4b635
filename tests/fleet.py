"""A fleet on loopback for the scale-out tests: a real ``redis-server``, several real
``twistd wsfw`` nodes sharing it, and a real HAProxy in TCP mode in front of them sending
the PROXY protocol. Everything is started and stopped by the test; Debian's packages
provide the programs (``make test`` installs redis-server and haproxy as root)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests import support

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

requires_fleet_programs = pytest.mark.skipif(
    not (os.access(REDIS, os.X_OK) and os.access(HAPROXY, os.X_OK)),
    reason="no redis-server / haproxy: apt-get install redis-server haproxy (make test does it as root on Debian)")


def free_port() -> int:
    """A loopback port nothing listens on now (for programs that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """``redis-server`` on a fixed loopback port, so it can be stopped and started again at the same address."""

    def __init__(self, folder, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.proc = None

    def start(self) -> "Redis":
        self.proc = support.Process([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--dir", str(self.folder)])
        self.proc.wait_for(r"Ready to accept connections", timeout=20)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def command(self, *args: str):
        """One command over a raw socket (RESP), for the test's own look into Redis."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args))
            return _read_reply(s.makefile("rb"))


def _read_reply(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ValueError(f"unexpected Redis reply {line!r}")


class HAProxy:
    """HAProxy in TCP mode, round-robin over ``backends`` (ports), sending PROXY protocol v2 (or v1)."""

    def __init__(self, folder, backends: list[int], version: int = 2):
        self.port = free_port()
        send = "send-proxy-v2" if version == 2 else "send-proxy"
        servers = "\n".join(f"    server node{n} 127.0.0.1:{port} {send}" for n, port in enumerate(backends, 1))
        self.path = os.path.join(str(folder), "haproxy.cfg")
        with open(self.path, "w") as f:
            f.write(f"""global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend public
    bind 127.0.0.1:{self.port}
    default_backend wsfw
backend wsfw
    balance roundrobin
{servers}
""")
        self.proc = None

    def start(self) -> "HAProxy":
        check = support.Process([HAPROXY, "-c", "-f", self.path])
        check.proc.wait(20)
        assert check.proc.returncode == 0, check.output
        self.proc = support.Process([HAPROXY, "-db", "-f", self.path])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.proc.poll() is None, self.proc.output
                time.sleep(0.05)
        raise AssertionError(f"haproxy did not listen on {self.port}:\n{self.proc.output}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class Node:
    """One ``twistd wsfw`` node of the fleet: its own config file, public and admin ports."""

    def __init__(self, folder, name: str, upstream: int, redis_port: int, extra: str = "", listen_proxy=True,
                 workers: int = 1):
        self.name = name
        self.path = os.path.join(str(folder), f"{name}.ini")
        listen = ("haproxy:" if listen_proxy else "") + "tcp:0:interface=127.0.0.1"
        with open(self.path, "w") as f:
            f.write(support.config_text(f"ws://127.0.0.1:{upstream}", listen=listen, workers=workers,
                                        extra=f"[cluster]\nredis = tcp:127.0.0.1:{redis_port}\nnode = {name}\n"
                                              f"{extra}"))
        self.proc = None
        self.ports: dict[str, int] = {}

    def start(self) -> "Node":
        self.proc, self.ports = support.start_twistd(self.path)
        return self

    @property
    def port(self) -> int:
        return self.ports["listen:public"]

    def admin(self, path: str):
        """(status, parsed JSON) of an admin path."""
        url = f"http://127.0.0.1:{self.ports['admin']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
