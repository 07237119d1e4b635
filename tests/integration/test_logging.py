"""Log files through a real ``twistd -n wsfw``: JSON or text, reopened on SIGUSR1, SIGHUP survived.

logrotate renames a file and sends SIGUSR1; wsfw must then write into a new
file at the old path, so nothing is lost and nothing lands in the renamed
file afterwards. These tests do exactly that to a running daemon.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import support

pytestmark = pytest.mark.slow

ATTACK = '{"text": "<img src=x onerror=alert(document.cookie)>"}'


@pytest.fixture
def demo():
    proc, port = support.start_demo()
    yield port
    proc.stop()


def start(tmp_path, upstream: int, log: str):
    path = tmp_path / "wsfw.ini"
    path.write_text(support.config_text(f"ws://127.0.0.1:{upstream}", log=log))
    daemon, ports = support.start_twistd(str(path))
    return daemon, ports["listen:public"], path


def relay_and_attack(port: int, word: str) -> None:
    """One benign message echoed, then an attack closed with 1008."""
    with connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
        ws.send(word)
        assert ws.recv(timeout=5) == word
    with connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
        ws.send(ATTACK)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1008


def wait_lines(path, n: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            lines = [line for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {n} lines after {timeout}s")


def test_sigusr1_reopens_json_files_and_sighup_keeps_running(tmp_path, demo):
    """JSON log and audit files: after a rename and SIGUSR1 new events go to fresh files at the same
    paths, old events stay in the renamed ones; SIGHUP reloads (tests/integration/test_reload.py has the
    details) and the daemon keeps relaying, also when the file on disk no longer loads."""
    log_file, audit_file = tmp_path / "wsfw.log", tmp_path / "audit.json"
    daemon, port, config = start(tmp_path, demo, f"connections = yes\nformat = json\nfile = {log_file}\n"
                                                f"audit_file = {audit_file}")
    try:
        relay_and_attack(port, "before rotation")
        wait_lines(audit_file, 1)
        os.rename(log_file, tmp_path / "wsfw.log.1")
        os.rename(audit_file, tmp_path / "audit.json.1")
        daemon.signal(signal.SIGUSR1)
        daemon.wait_for(r"SIGUSR1: log files reopened", timeout=10)
        relay_and_attack(port, "after rotation")
        new_audit = [json.loads(line) for line in wait_lines(audit_file, 1)]
        old_audit = [json.loads(line) for line in wait_lines(tmp_path / "audit.json.1", 1)]
        assert len(old_audit) == 1 and len(new_audit) == 1
        assert old_audit[0]["log_time"] < new_audit[0]["log_time"]
        assert new_audit[0]["action"] == "block" and new_audit[0]["param"] == "json.text"
        new_log = [json.loads(line) for line in wait_lines(log_file, 3)]
        old_log = [json.loads(line) for line in wait_lines(tmp_path / "wsfw.log.1", 1)]
        assert any(e.get("event") == "reopen" for e in new_log)
        assert {e.get("event") for e in new_log} >= {"open", "close", "audit"}
        assert not any(e.get("event") == "reopen" for e in old_log)
        last_old = max(e["log_time"] for e in old_log)
        assert all(e["log_time"] >= last_old for e in new_log)

        daemon.signal(signal.SIGHUP)
        daemon.wait_for(r"SIGHUP: reloaded .*: policy \w+ -> \w+", timeout=10)
        config.write_text(config.read_text() + "\n[limits]\nmax_message_bytes = lots\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for(r"has 1 problem\(s\); still running policy", timeout=10)
        assert daemon.proc.poll() is None, "SIGHUP must not stop wsfw"
        relay_and_attack(port, "after SIGHUP")
    finally:
        daemon.stop()
    # twistd ends by re-raising the SIGTERM it handled, so systemd sees a clean stop by signal
    assert daemon.proc.returncode == -signal.SIGTERM, daemon.output
    assert "Server Shut Down." in daemon.output


def test_text_format(tmp_path, demo):
    """`format = text`: the log file has classic Twisted lines and the audit file key=value lines."""
    log_file, audit_file = tmp_path / "wsfw.log", tmp_path / "audit.log"
    daemon, port, _ = start(tmp_path, demo, f"connections = yes\nformat = text\nfile = {log_file}\n"
                                           f"audit_file = {audit_file}")
    try:
        relay_and_attack(port, "plain text please")
        audit = wait_lines(audit_file, 1)
        assert " audit block message " in audit[0] and "param=json.text" in audit[0] and "rule_ids=xss-" in audit[0]
        assert 'excerpt="<img src=x onerror=alert(document.cookie)>"' in audit[0]
        lines = wait_lines(log_file, 3)
        assert any("[wsfw.relay#info]" in line and " open 127.0.0.1:" in line for line in lines)
        assert not any(line.startswith("{") for line in lines)
    finally:
        daemon.stop()
