"""Real Socket.IO peers through wsfw: python-socketio server (uvicorn) and clients, both transports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests import support

import socketio  # noqa: E402  (pinned in requirements-test.txt)

XSS = "<img src=x onerror=alert(document.cookie)>"
SQLI = "1' UNION SELECT username, password FROM users--"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, process, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The Socket.IO app on uvicorn and a `twistd wsfw` in front of it, both real processes."""
    app_port, wsfw_port = free_port(), free_port()
    folder = tmp_path_factory.mktemp("sio")
    app = subprocess.Popen([sys.executable, "-m", "tests.peers.sio_server", str(app_port)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = folder / "wsfw.ini"
    config.write_text(support.config_text(f"ws://127.0.0.1:{app_port}",
                                          listen=f"tcp:{wsfw_port}:interface=127.0.0.1",
                                          log=f"connections = yes\naudit_file = {folder / 'audit.json'}"))
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    daemon = subprocess.Popen([twistd, "-n", "--pidfile=", "wsfw", "--config", str(config)], cwd=ROOT,
                              stdout=open(folder / "wsfw.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_port(app_port, app)
        wait_port(wsfw_port, daemon, timeout=60)  # the first start may compile the signature database
        yield f"http://127.0.0.1:{wsfw_port}", folder
    finally:
        for process in (daemon, app):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


class Chatter:
    """A python-socketio client that records chat messages and its own disconnect."""

    def __init__(self, url: str, transport: str):
        self.messages: list[str] = []
        self.disconnected = False
        self.client = socketio.Client(reconnection=False)
        self.client.on("chat message", self.messages.append)
        self.client.on("disconnect", lambda *args: setattr(self, "disconnected", True))
        self.client.connect(url, transports=[transport], wait_timeout=10)

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def close(self):
        # abort: python-engineio's graceful polling disconnect waits ~30 s for
        # its pending long-poll, with or without wsfw in between
        if self.client.connected:
            self.client.eio.disconnect(abort=True)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_chat_relayed_and_attack_blocked(stack, transport):
    """Benign events flow both ways with acks; an attack ends the attacker's session and reaches nobody."""
    url, folder = stack
    victim, attacker = Chatter(url, transport), Chatter(url, transport)
    try:
        assert attacker.client.call("chat message", f"hello via {transport}", timeout=5) == "ok"
        assert victim.wait_for(lambda: f"hello via {transport}" in victim.messages)
        payload = XSS if transport == "websocket" else SQLI
        try:
            attacker.client.emit("chat message", payload)
        except Exception:
            pass  # polling: the POST is refused (403) and the client gives up on the session
        assert attacker.wait_for(lambda: attacker.disconnected, timeout=10), "the attacker stays connected"
        assert victim.client.call("chat message", "still chatting", timeout=5) == "ok"
        assert victim.wait_for(lambda: "still chatting" in victim.messages)
        assert payload not in victim.messages
        assert payload not in victim.client.call("received", timeout=5), "the app received the attack"
        audit = (folder / "audit.json").read_text()
        assert '"enforced": true' in audit and ("xss" in audit or "sqli" in audit)
    finally:
        victim.close()
        attacker.close()
