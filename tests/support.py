"""Real peers for loopback tests: an upstream app (WebSocket + HTTP), clients, and wsfw itself.

Everything listens on 127.0.0.1 port 0 and is torn down by the test that made
it. Nothing here fakes wsfw: the daemon under test is ``wsfw.service.build``
on the real reactor, driven through real sockets.
"""

from __future__ import annotations

import contextlib

import json
import os
import tempfile

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.web import resource, server

from wsfw import config_ini
from wsfw.service import build


def write_config(text: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".ini", prefix="wsfw-test-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def config_text(upstream: str, *, listen: str = "tcp:0:interface=127.0.0.1", extra: str = "",
                route_extra: str = "", log: str = "connections = yes",
                admin: str = "endpoint = tcp:0:interface=127.0.0.1", workers: int | str = 1) -> str:
    """A one-route config; the admin listener takes a fresh port too (never the default 9180,
    which a developer's ``make run`` may hold). ``[wsfw] workers`` is 1 (one process, as every
    test but the supervisor's wants) unless asked; it joins a ``[wsfw]`` section in ``extra``."""
    setting = f"workers = {workers}\n"
    if "[wsfw]" in extra:
        extra = extra.replace("[wsfw]\n", "[wsfw]\n" + setting, 1)
    else:
        extra = f"[wsfw]\n{setting}{extra}"
    return (f"[listen:public]\nendpoint = {listen}\n"
            f"[route:app]\npath = /\nupstream = {upstream}\n{route_extra}\n"
            f"[log]\n{log}\n[admin]\n{admin}\n{extra}\n")


# -- the upstream app ----------------------------------------------------------


class UpstreamWS(WebSocketServerProtocol):
    """Echoes messages; ``CLOSE <code> <reason>`` makes it close; records what it saw."""

    def onConnect(self, request):
        self.factory.requests.append(request)
        if request.path.startswith("/ws/refuse"):
            raise ConnectionDeny(401, "no credentials")
        for wanted in self.factory.accept_protocols:
            if wanted in request.protocols:
                return wanted
        return None

    def onOpen(self):
        self.factory.opened.append(self)
        if self.http_request_path.startswith("/ws/stall"):
            self.transport.pauseProducing()  # a receiver that never reads
        if self.http_request_path.startswith("/ws/greet"):
            self.sendMessage(b"hello from upstream")

    def onMessage(self, payload, isBinary):
        self.factory.received.append((payload, isBinary))
        if not isBinary and payload.startswith(b"CLOSE "):
            _, code, reason = payload.decode().split(" ", 2)
            # sendCloseFrame, not sendClose: the latter refuses 1001
            self.sendCloseFrame(code=int(code), reasonUtf8=reason.encode(), isReply=False)
            return
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self.factory.closes.append((wasClean, code, reason))
        waiters, self.factory.close_waiters = self.factory.close_waiters, []
        for d in waiters:
            d.callback((wasClean, code, reason))


class UpstreamWSFactory(WebSocketServerFactory):
    protocol = UpstreamWS

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        self.requests, self.opened, self.received, self.closes, self.close_waiters = [], [], [], [], []
        self.accept_protocols: list[str] = []

    def next_close(self) -> defer.Deferred:
        d = defer.Deferred()
        self.close_waiters.append(d)
        return d


class Big(resource.Resource):
    """Streams ``?mib=N`` MiB of a repeating pattern, with Content-Length."""

    isLeaf = True

    def render_GET(self, request):
        mib = int(request.args.get(b"mib", [b"1"])[0])
        chunk = bytes(range(256)) * 4096  # 1 MiB
        request.setHeader(b"content-length", str(mib * len(chunk)).encode())
        remaining = [mib]

        def more():
            while remaining[0] and not request._disconnected:
                remaining[0] -= 1
                request.write(chunk)
                yield None
            if not request._disconnected:
                request.finish()
        task.cooperate(more())
        return server.NOT_DONE_YET


class EchoBody(resource.Resource):
    """Answers a POST with its body; records (uri, body) of every POST (and DELETE) it got."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.bodies: list[tuple[bytes, bytes]] = []

    def render_POST(self, request):
        body = request.content.read()
        self.bodies.append((request.uri, body))
        request.setHeader(b"content-type", b"application/octet-stream")
        return body

    def render_DELETE(self, request):
        """SignalR's end of a long-polling connection: recorded with the body ``DELETE``."""
        self.bodies.append((request.uri, b"DELETE"))
        return b""


class Headers(resource.Resource):
    """Returns the request line and headers it received, as JSON; sets repeated headers."""

    isLeaf = True

    def render(self, request):
        request.responseHeaders.setRawHeaders(b"set-cookie", [b"a=1; Path=/", b"b=2; Path=/"])
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({
            "method": request.method.decode(), "uri": request.uri.decode(),
            "headers": {k.decode().lower(): [v.decode() for v in vs]
                        for k, vs in request.requestHeaders.getAllRawHeaders()},
        }).encode()


class Never(resource.Resource):
    """Never answers (for 504)."""

    isLeaf = True

    def render(self, request):
        return server.NOT_DONE_YET


class UpstreamApp:
    """A WebSocket + HTTP upstream on loopback: ``/ws/...`` upgrades, ``/http/...`` plain HTTP."""

    def __init__(self):
        self.ws = UpstreamWSFactory()
        ws = WebSocketResource(self.ws)
        http = resource.Resource()
        echo = EchoBody()
        self.http_bodies = echo.bodies
        for name, child in ((b"big", Big()), (b"echo", echo), (b"headers", Headers()), (b"never", Never())):
            http.putChild(name, child)

        class Root(resource.Resource):
            def getChild(self, name, request):
                if name == b"ws":
                    return ws
                if name == b"http":
                    return http
                return resource.NoResource()
        self.site = server.Site(Root())
        self.site.noisy = False
        self.port = None

    @defer.inlineCallbacks
    def start(self, endpoint: str = "tcp:0:interface=127.0.0.1"):
        self.port = yield endpoints.serverFromString(reactor, endpoint).listen(self.site)
        return self

    @property
    def port_number(self) -> int:
        return self.port.getHost().port

    def stop(self):
        for proto in self.ws.opened:
            if proto.transport is not None and proto.state != proto.STATE_CLOSED:
                proto.transport.abortConnection()
        return self.port.stopListening()


# -- wsfw ----------------------------------------------------------------------


class Wsfw:
    """wsfw built from config text and started on the real reactor."""

    def __init__(self, text: str, hook=None):
        self.path = write_config(text)
        self.config = config_ini.load(self.path)
        self.service = build(self.config, reactor, hook=hook)
        self.stopped = False

    @defer.inlineCallbacks
    def start(self):
        self.service.privilegedStartService()
        self.service.startService()
        ports = yield self.service.ready
        self.port = ports[0].getHost().port
        admin = self.service.admin
        self.admin_port = admin.port.getHost().port if admin is not None and admin.port is not None else None
        return self

    def admin_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    @defer.inlineCallbacks
    def drained(self, within: float = 3.0):
        """Wait until no connection is tracked any more; fail if one lingers."""
        deadline = reactor.seconds() + within
        while len(self.service.tracker) and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.02, lambda: None)
        left = [(r.conn_id, sorted(r.lost_sides)) for r in self.service.tracker.relays]
        if left:
            raise AssertionError(f"connections still tracked after {within}s: {left}")

    def url(self, path: str = "/ws/echo", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @defer.inlineCallbacks
    def stop(self):
        if not self.stopped:
            self.stopped = True
            yield self.service.stopService()
            os.unlink(self.path)


def cancel_autobahn_timers() -> None:
    """Cancel Autobahn's leftover batched timers (global reactor), as its own tests do.

    Aborted connections leave close-handshake and auto-ping timers behind;
    trial would report them as a dirty reactor.
    """
    for call in reactor.getDelayedCalls():
        if "_BatchedTimer" in repr(call.func) or "autobahn" in getattr(call.func, "__module__", ""):
            call.cancel()


@defer.inlineCallbacks
def settle():
    """Let pending closes finish, then clear Autobahn's timers."""
    yield task.deferLater(reactor, 0.05, lambda: None)
    cancel_autobahn_timers()


@defer.inlineCallbacks
def start_stack(test, *, hook=None, **config):
    """An UpstreamApp and a Wsfw in front of it (``config_text`` keywords), torn down with ``test``."""
    test.addCleanup(settle)
    app = yield UpstreamApp().start()
    test.addCleanup(app.stop)
    wsfw = Wsfw(config_text(f"ws://127.0.0.1:{app.port_number}", **config), hook=hook)
    yield wsfw.start()
    test.addCleanup(wsfw.stop)
    return app, wsfw


@defer.inlineCallbacks
def start_stack_with_rules(test, rules: str, *, route_extra: str = "", wsfw_extra: str = ""):
    """``start_stack`` with ``rules`` (dedented) in a rules file and the audit trail in a file of
    its own, both in a temporary folder removed with ``test``; returns (app, wsfw, audit path)."""
    import tempfile
    import textwrap

    folder = tempfile.mkdtemp(prefix="wsfw-test-")
    audit_path = os.path.join(folder, "audit.json")
    rules_path = os.path.join(folder, "rules.ini")
    with open(rules_path, "w") as f:
        f.write(textwrap.dedent(rules))

    def cleanup():
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    test.addCleanup(cleanup)
    app, wsfw = yield start_stack(test, log=f"connections = yes\naudit_file = {audit_path}",
                                  route_extra=textwrap.dedent(route_extra),
                                  extra=f"[inspection]\nrules = {rules_path}\n{textwrap.dedent(wsfw_extra)}")
    return app, wsfw, audit_path


# -- clients -------------------------------------------------------------------


class Client(WebSocketClientProtocol):
    """Collects messages in a queue and reports how the connection closed."""

    def onConnect(self, response):
        self.response = response

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.messages.put((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionRefused(self))
        self.factory.closed.callback((wasClean, code, reason))


class ConnectionRefused(Exception):
    def __init__(self, protocol):
        self.status_line = getattr(protocol, "http_status_line", None)
        super().__init__(self.status_line or "connection failed before open")


class ClientFactory(WebSocketClientFactory):
    protocol = Client

    def __init__(self, url, **kwargs):
        super().__init__(url=url, **kwargs)
        self.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        self.opened, self.closed = defer.Deferred(), defer.Deferred()
        self.messages = defer.DeferredQueue()


@defer.inlineCallbacks
def connect(url: str, *, tls_options=None, **kwargs):
    """Open an Autobahn client; returns the open protocol (errback ConnectionRefused if denied)."""
    factory = ClientFactory(url, **kwargs)
    host, port = factory.host, factory.port
    endpoint = endpoints.HostnameEndpoint(reactor, host, port)
    if tls_options is not None:
        endpoint = endpoints.wrapClientTLS(tls_options, endpoint)
    yield endpoint.connect(factory)
    proto = yield factory.opened
    return proto


@defer.inlineCallbacks
def connect_for(test, url: str, **kwargs):
    """``connect``, with the connection dropped when ``test`` ends."""
    proto = yield connect(url, **kwargs)
    test.addCleanup(abort, proto)
    return proto


def abort(proto) -> None:
    """Drop a test connection if it is still up (cleanup helper)."""
    if proto.transport is not None and proto.state != proto.STATE_CLOSED:
        proto.transport.abortConnection()


def next_message(proto, timeout: float = 5):
    return proto.factory.messages.get().addTimeout(timeout, reactor)


def closed(proto, timeout: float = 5):
    return proto.factory.closed.addTimeout(timeout, reactor)


class RawClient(Protocol):
    """Writes raw bytes and collects whatever comes back, for HTTP edge cases."""

    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


@defer.inlineCallbacks
def raw(port: int, payload: bytes = b"", close_after: bool = False):
    proto = RawClient()
    yield endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
    if payload:
        proto.transport.write(payload)
    if close_after:
        proto.transport.loseConnection()
    return proto


__all__ = ["Factory"]


# -- wsfw and the demo app as real processes (plain pytest, no reactor) --------


class Process:
    """A child process whose combined output is collected by a thread, so tests can wait for log lines.

    Used where the test itself must block (a browser driver, signals to a
    real ``twistd``), which it cannot do on the reactor that runs wsfw.
    """

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None):
        import subprocess
        import threading

        self.argv = argv
        self.output = ""
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self._lock:
                self.output += raw.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 30.0):
        """The first match of regex ``pattern`` in the output; fails with the output so far."""
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                match = re.search(pattern, self.output)
            if match:
                return match
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"{self.argv[0]} exited ({self.proc.returncode}) before {pattern!r}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.output}")

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> None:
        import signal as _signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(_signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)


def venv_tool(name: str) -> str:
    import sys

    return os.path.join(os.path.dirname(sys.executable), name)


def start_demo() -> tuple[Process, int]:
    """The bundled demo app (chat + echo) on a fresh loopback port."""
    import sys

    demo = Process([sys.executable, "-m", "wsfw.demo", "--listen", "tcp:0:interface=127.0.0.1"])
    try:
        port = int(demo.wait_for(r"demo upstream listening on .*port=(\d+)").group(1))
    except BaseException:
        demo.stop()
        raise
    return demo, port


def start_twistd(config_path: str, env: dict | None = None) -> tuple[Process, dict[str, int]]:
    """``twistd -n wsfw --config PATH``; returns it and the bound ports by section (``listen:public``, ``admin``).

    A supervisor (``[wsfw] workers`` above 1) is returned once every worker says it is serving."""
    import re

    daemon = Process([venv_tool("twistd"), "-n", "--pidfile=", "wsfw", "--config", config_path], env=env)
    try:
        started = daemon.wait_for(r"wsfw starting with [^\n]*", timeout=60).group(0)
        workers = re.search(r", (\d+) workers$", started.rstrip())
        for n in range(1, int(workers.group(1)) + 1 if workers else 1):
            daemon.wait_for(rf"\[wsfw\.supervisor#info\] worker {n} \(pid \d+\) is serving", timeout=60)
    except BaseException:
        daemon.stop()
        raise
    ports = {m.group(1): int(m.group(2))
             for m in re.finditer(r"listening \[([^\]]+)\] on [^ ]*:(\d+) ", daemon.output)}
    return daemon, ports


# -- framework peers behind a real `twistd wsfw` (plain pytest, no reactor) -----

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(argv: list[str], timeout: float = 30.0) -> tuple[Process, int]:
    """A server process run from the repository root that prints ``... listening on http://HOST:PORT/``
    once bound (port 0 in, the real port out: no free-port race)."""
    proc = Process(argv, cwd=ROOT)
    try:
        port = int(proc.wait_for(r"listening on http://[^\s/]+:(\d+)/", timeout).group(1))
    except BaseException:
        proc.stop()
        raise
    return proc, port


def start_wsfw_in_front(folder, upstream_port: int, *, route_extra: str = "", extra: str = "",
                        config: str | None = None) -> tuple[Process, int, "AuditTrail"]:
    """``twistd wsfw`` on a fresh loopback port in front of ``upstream_port``, auditing to ``folder``.

    ``config``: a whole config text to use instead (its ``[listen:public]`` must use port 0).
    Returns the daemon, its public port and its audit trail.
    """
    audit = AuditTrail(os.path.join(str(folder), "audit.json"))
    if config is None:
        config = config_text(f"ws://127.0.0.1:{upstream_port}", route_extra=route_extra,
                             log=f"connections = yes\naudit_file = {audit.path}",
                             extra="[timeouts]\nshutdown_drain = 1\n" + extra)
    path = os.path.join(str(folder), "wsfw.ini")
    with open(path, "w") as f:
        f.write(config)
    daemon, ports = start_twistd(path)
    if "listen:public" not in ports:
        daemon.stop()
        raise AssertionError(f"no public listener in the log:\n{daemon.output}")
    return daemon, ports["listen:public"], audit


@contextlib.contextmanager
def app_behind_wsfw(folder, argv: list[str], config=None):
    """A peer app process (``argv``, see start_server) and a real ``twistd wsfw`` in front of it,
    both stopped on exit; yields (app, app_port, daemon, wsfw_port, audit). ``config``, when
    given, is a function of the app's port returning wsfw's config text."""
    app, app_port = start_server(argv)
    try:
        extra = {} if config is None else {"config": config(app_port)}
        daemon, port, audit = start_wsfw_in_front(folder, app_port, **extra)
    except BaseException:
        app.stop()
        raise
    try:
        yield app, app_port, daemon, port, audit
    finally:
        daemon.stop()
        app.stop()


class AuditTrail:
    """The JSON-lines audit file of a running daemon; ``mark()`` then ``since_mark()`` for one test's entries."""

    def __init__(self, path: str):
        self.path = path
        self._offset = 0

    def _read(self, offset: int) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data.decode("utf-8").split("\n")[:-1]  # a line still being written is left for later
        return [json.loads(line) for line in complete if line.strip()]

    def mark(self) -> None:
        self._offset = os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def since_mark(self) -> list[dict]:
        return self._read(self._offset)

    def wait_since_mark(self, predicate, timeout: float = 5.0) -> list[dict]:
        """The entries since ``mark()`` once one satisfies ``predicate``; fails with what was there."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            entries = self.since_mark()
            if any(predicate(e) for e in entries):
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching audit entry within {timeout}s: {entries}")
            time.sleep(0.05)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
