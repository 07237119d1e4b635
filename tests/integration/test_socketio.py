"""Real Socket.IO peers through a real `twistd wsfw`: python-socketio clients (protocol v5 over
Engine.IO v4, forced to `websocket` and to `polling`) against the chat example app
(examples/socketio-chat, python-socketio on uvicorn) with test-only events (tests/peers/sio_server.py).

Every test uses fresh clients on one module-wide stack; the app's ``received`` event is
the oracle for "the attack never reached the app", wsfw's audit trail and log for "wsfw
is what stopped it".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import struct
import sys
import zlib

import pytest
import requests
import socketio  # pinned in requirements-test.txt

from tests import support

XSS = "<img src=x onerror=alert(document.cookie)>"
SQLI = "1' UNION SELECT username, password FROM users--"
NOSQL = {"user": "admin", "password": {"$ne": None}}  # the classic MongoDB login bypass
TRANSPORTS = ["websocket", "polling"]
_names = itertools.count()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The chat app on uvicorn and a `twistd wsfw` in front of it, both real processes."""
    folder = tmp_path_factory.mktemp("sio")
    argv = [sys.executable, "-m", "tests.peers.sio_server", "0"]
    with support.app_behind_wsfw(folder, argv) as (app, app_port, daemon, port, audit):
        yield Stack(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{app_port}", audit, daemon, app)


class Stack:
    def __init__(self, url, app_url, audit, daemon, app):
        self.url, self.app_url, self.audit, self.daemon, self.app = url, app_url, audit, daemon, app

    def received(self) -> dict:
        """What the app itself got, asked directly (not through wsfw)."""
        probe = socketio.Client(reconnection=False)
        probe.connect(self.app_url, transports=["websocket"], wait_timeout=5, auth={"name": "probe"})
        try:
            return probe.call("received", timeout=5)
        finally:
            probe.disconnect()


class Records(logging.Handler):
    """Collects the python-engineio client's log lines (where it reports an HTTP status)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


class Chatter:
    """A python-socketio client through wsfw that records everything it gets and how it ended."""

    def __init__(self, stack: Stack, transport: str, role: str):
        self.name = f"{role}{next(_names)}"
        self.chat: list[tuple[str, str]] = []
        self.blobs: list[bytes] = []
        self.history: list | None = None
        self.disconnects: list = []
        self.left: list[str] = []
        self.answer = f"42, says {self.name}"
        self.records = Records()
        eio_log = logging.getLogger(f"tests.eio.{self.name}")
        eio_log.propagate = False
        eio_log.setLevel(logging.INFO)
        eio_log.addHandler(self.records)
        self.client = socketio.Client(reconnection=False, engineio_logger=eio_log)
        self.client.on("chat message", lambda m: self.chat.append((m["name"], m["text"])))
        self.client.on("history", lambda items: setattr(self, "history", items))
        self.client.on("blob", self.blobs.append)
        self.client.on("left", self.left.append)
        self.client.on("question", lambda q: self.answer)
        self.client.on("disconnect", lambda *reason: self.disconnects.append(reason))
        self.client.connect(stack.url, transports=[transport], wait_timeout=10, auth={"name": self.name})
        self.transport = self.client.transport()
        self.sid = self.client.eio.sid

    def texts(self) -> list[str]:
        return [text for _, text in self.chat]

    def close(self):
        # abort: python-engineio's graceful polling disconnect waits ~30 s for
        # its pending long-poll, with or without wsfw in between
        if self.client.connected:
            self.client.eio.disconnect(abort=True)


@pytest.fixture
def chatters(stack):
    made: list[Chatter] = []

    def make(transport: str, role: str) -> Chatter:
        chatter = Chatter(stack, transport, role)
        made.append(chatter)
        return chatter
    yield make
    for chatter in made:
        chatter.close()


def assert_cut_off(stack: Stack, attacker: Chatter, transport: str, log_mark: int) -> None:
    """The attacker's session ended because of wsfw: disconnected (WebSocket: closed with 1008;
    polling: its requests refused with 403, and its session id refused from then on).

    ``log_mark``: the length of wsfw's output before the attack.
    """
    assert support.wait_until(lambda: attacker.disconnects, timeout=10), "the attacker stays connected"
    assert not attacker.client.connected
    if transport == "polling":
        assert any("Unexpected status code 403" in line for line in attacker.records.lines), attacker.records.lines
        # the Engine.IO session is over: its id is refused from now on
        poll = requests.get(f"{stack.url}/socket.io/", params={"EIO": "4", "transport": "polling", "sid": attacker.sid},
                            timeout=5)
        assert poll.status_code == 403, (poll.status_code, poll.text)
    else:
        # wsfw's close event for the attacker's connection: policy close 1008 to the client
        assert support.wait_until(lambda: _closed_with_1008(stack.daemon.output[log_mark:]), timeout=5), \
            stack.daemon.output[log_mark:]


def _closed_with_1008(output: str) -> bool:
    return any("1008" in line and "close" in line.lower() for line in output.splitlines())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_events_delivered_both_ways_in_order(stack, chatters, transport):
    """Two users chat through wsfw: every event reaches the app and the room, in order, with acks."""
    alice, bob = chatters(transport, "alice"), chatters(transport, "bob")
    assert alice.transport == bob.transport == transport
    assert alice.history is not None and bob.history is not None  # server -> client on connect
    acks: list = []
    # Rounds of 3 pipelined emits per user: python-engineio's own client refuses a
    # long-polling response of more than 16 packets (engineio.payload.max_decode_packets)
    # and its server batches without that bound, so bursts are kept small (wsfw or not).
    n = 12
    for start in range(0, n, 3):
        for i in range(start, start + 3):
            alice.client.emit("chat message", f"from alice {i} via {transport}", callback=acks.append)
            bob.client.emit("chat message", f"from bob {i} via {transport}", callback=acks.append)
        assert support.wait_until(lambda: len(acks) == 2 * (start + 3), timeout=10), acks
    assert acks == ["ok"] * 2 * n
    for chatter in (alice, bob):
        assert support.wait_until(lambda: len([t for t in chatter.texts() if transport in t]) == 2 * n, timeout=10)
        mine = [(name, t) for name, t in chatter.chat if t.endswith(f"via {transport}")]
        # each sender's messages arrive in the order sent, under the name from the connect auth payload
        assert [t for name, t in mine if name == alice.name] == [f"from alice {i} via {transport}" for i in range(n)]
        assert [t for name, t in mine if name == bob.name] == [f"from bob {i} via {transport}" for i in range(n)]
    received = stack.received()["texts"]
    assert [t for t in received if t.startswith("from alice") and t.endswith(f"via {transport}")] == \
        [f"from alice {i} via {transport}" for i in range(n)]


ATTACKS = {
    # name: (event, argument, detector class, parameter wsfw names in the audit trail)
    "xss": ("chat message", XSS, "xss", "socketio.args[0]"),
    "sqli": ("chat message", SQLI, "sqli", "socketio.args[0]"),
    "nosql": ("login", NOSQL, "nosqli", 'socketio.args[0].password["$ne"]<key>'),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_in_event_blocked(stack, chatters, transport, attack):
    """An attack in an event argument never reaches the app or the room; only the attacker is cut off."""
    event, argument, detector, param = ATTACKS[attack]
    victim, attacker = chatters(transport, "victim"), chatters(transport, "attacker")
    assert attacker.client.call("chat message", f"hi before {attack} via {transport}", timeout=5) == "ok"
    assert support.wait_until(lambda: f"hi before {attack} via {transport}" in victim.texts())
    stack.audit.mark()
    log_mark = len(stack.daemon.output)
    try:
        attacker.client.emit(event, argument)
    except Exception:
        pass  # polling: the POST may be refused before emit returns
    assert_cut_off(stack, attacker, transport, log_mark)
    # the app ended the attacker's session at once (polling: wsfw sent it a close packet in
    # the attack's place), so the room hears that the attacker left
    assert support.wait_until(lambda: attacker.name in victim.left, timeout=5), victim.left
    entries = stack.audit.wait_since_mark(lambda e: e.get("enforced") is True)
    blocked = [e for e in entries if e.get("enforced") is True]
    assert {e["kind"] for e in blocked} == {"message" if transport == "websocket" else "http"}
    assert any(detector in e["classes"] and e["param"] == param for e in blocked), blocked
    # the victim keeps chatting through wsfw and never sees the payload
    assert victim.client.connected
    assert victim.client.call("chat message", f"still chatting after {attack} via {transport}", timeout=5) == "ok"
    assert support.wait_until(lambda: f"still chatting after {attack} via {transport}" in victim.texts())
    assert argument not in victim.texts()
    assert victim.chat[-1] == (victim.name, f"still chatting after {attack} via {transport}")
    got = stack.received()
    assert argument not in got["texts"], "the app received the attack"
    assert [event, [argument]] not in got["events"], "the app received the attack"


def png(width: int, height: int) -> bytes:
    """A real (deterministic) RGB PNG: compressed image data, every byte value likely."""
    rows = b"".join(b"\x00" + b"".join(bytes(((x * 5 + y * 11) % 256, (x * y) % 256, (x ^ y) % 256))
                                        for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def relay_blob(stack: Stack, chatters, transport: str, blob: bytes) -> None:
    """``blob`` as a bytes argument reaches the app and the other member byte-exact."""
    sender, receiver = chatters(transport, "sender"), chatters(transport, "receiver")
    stack.audit.mark()
    acks: list = []
    sender.client.emit("blob", blob, callback=acks.append)
    assert support.wait_until(lambda: acks or sender.disconnects, timeout=5)
    assert not sender.disconnects, f"wsfw cut the sender off: {stack.audit.since_mark()}"
    assert acks == [{"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}]  # what the app got
    assert support.wait_until(lambda: receiver.blobs)
    assert receiver.blobs == [blob]  # ... and the room, through wsfw again


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_binary_attachment_relayed_byte_exact(stack, chatters, transport):
    """A benign bytes argument (a Socket.IO binary attachment) that is UTF-8 text passes byte-exact both ways."""
    blob = json.dumps({"file": "notes.txt", "body": "caf\u00e9 \u2603 \u65e5\u672c\u8a9e\r\nline 2\n"},
                      ensure_ascii=False).encode()
    relay_blob(stack, chatters, transport, blob)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_binary_attachment_opaque_relayed_byte_exact(stack, chatters, transport):
    """A benign bytes argument that is not text (a real PNG) passes byte-exact both ways."""
    blob = png(32, 32)
    assert re.search(rb"\r[^\n]", blob)  # a lone CR byte, as in most binary data of this size
    relay_blob(stack, chatters, transport, blob)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attack_in_binary_attachment_blocked(stack, chatters, transport):
    """A bytes argument is decoded as the attachment of its event and inspected: an XSS in it is blocked."""
    receiver = chatters(transport, "receiver")
    before = stack.received()["blobs"]
    attacker = chatters(transport, "attacker")
    stack.audit.mark()
    log_mark = len(stack.daemon.output)
    try:
        attacker.client.emit("blob", XSS.encode())
    except Exception:
        pass
    assert_cut_off(stack, attacker, transport, log_mark)
    entries = stack.audit.wait_since_mark(lambda e: e.get("enforced") is True)
    assert any("xss" in e["classes"] and e["param"] == "socketio.args[0]<binary>" for e in entries), entries
    assert receiver.client.call("chat message", f"after the binary attack via {transport}", timeout=5) == "ok"
    assert support.wait_until(lambda: f"after the binary attack via {transport}" in receiver.texts())
    assert receiver.blobs == []
    assert stack.received()["blobs"] == before, "the app received the attack"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_acks_both_ways(stack, chatters, transport):
    """A client emit with a callback gets the server's ack; a server emit with a callback gets the client's."""
    user = chatters(transport, "user")
    assert user.client.call("chat message", f"acked via {transport}", timeout=5) == "ok"
    got: list = []
    user.client.emit("chat message", f"callback via {transport}", callback=lambda *args: got.append(args))
    assert support.wait_until(lambda: got)
    assert got == [("ok",)]
    # the server calls the client (its own ack id) and acks the client's answer back
    assert user.client.call("ask", "what is 6 times 7?", timeout=10) == \
        {"question": "what is 6 times 7?", "answer": user.answer}
    assert user.answer in stack.received()["answers"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attack_in_ack_answer_blocked(stack, chatters, transport):
    """A client's ack (answer to a server call) is inspected like any event."""
    attacker = chatters(transport, "attacker")
    attacker.answer = XSS
    stack.audit.mark()
    log_mark = len(stack.daemon.output)
    replies: list = []
    attacker.client.emit("ask", "what is your name?", callback=replies.append)
    assert_cut_off(stack, attacker, transport, log_mark)
    entries = stack.audit.wait_since_mark(lambda e: e.get("enforced") is True)
    assert any("xss" in e["classes"] and e["param"] == "socketio.args[0]" for e in entries), entries
    assert replies == []  # the server's own ack (which would carry the answer back) never came
    assert XSS not in stack.received()["answers"], "the app received the attack"
