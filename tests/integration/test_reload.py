"""SIGHUP hot reload through a real ``twistd -n wsfw`` while a client keeps chatting.

A valid config applies to new connections and to the next messages of open
ones; an invalid one leaves the running policy in place and says why. Either
way no open socket is dropped and no message of the chatting client is lost.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import support

pytestmark = pytest.mark.slow

WORD = "launch-codes"
BLOCK_WORD = f"""[rule:no-launch-codes]
when = param:"**" contains "{WORD}"
action = block
msg = nobody asks for the launch codes
"""


class Chatter(threading.Thread):
    """One connection sending numbered messages and checking every echo, in order, until told to stop."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.sent = 0
        self.echoed: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self):
        try:
            with connect(self.url) as ws:
                while not self.done.is_set():
                    text = f"chat line {self.sent}"
                    ws.send(text)
                    self.sent += 1
                    self.echoed.append(ws.recv(timeout=10))
                    self.done.wait(0.01)
        except BaseException as e:  # reported by finish()
            self.error = e

    def still_chatting(self) -> None:
        """Wait until three more lines went through: the connection survived whatever came before."""
        target = self.sent + 3
        deadline = time.monotonic() + 10
        while len(self.echoed) < target and self.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.error is None and len(self.echoed) >= target, f"the chat stalled: {self.error!r}"

    def finish(self) -> None:
        self.done.set()
        self.join(30)
        assert self.error is None, f"the chatting client failed: {self.error!r}"
        assert self.echoed == [f"chat line {n}" for n in range(self.sent)], "a message was lost or reordered"


def blocked(ws, text: str) -> bool:
    """Send ``text``: True when wsfw closes the connection with 1008, False when it is echoed."""
    ws.send(text)
    try:
        echo = ws.recv(timeout=5)
    except ConnectionClosed:
        assert ws.close_code == 1008, ws.close_code
        return True
    assert echo == text
    return False


def reload_and_wait(daemon, pattern: str, seen: int, count: int = 1) -> list[re.Match]:
    """SIGHUP, then wait until ``pattern`` appears ``count`` more times in the output than the ``seen`` before."""
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and daemon.proc.poll() is None:
        found = list(re.finditer(pattern, daemon.output))
        if len(found) >= seen + count:
            return found[seen:]
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} after SIGHUP:\n{daemon.output[-3000:]}")


@pytest.fixture
def demo():
    proc, port = support.start_demo()
    yield port
    proc.stop()


def config(tmp_path, upstream: int, workers: int):
    rules = tmp_path / "rules.d"
    rules.mkdir()
    path = tmp_path / "wsfw.ini"
    text = support.config_text(f"ws://127.0.0.1:{upstream}", workers=workers,
                               extra="[inspection]\nrules = rules.d/*.ini\n")
    path.write_text(text)
    return path, rules, text


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_valid_then_invalid_while_chatting(tmp_path, demo, workers):
    path, rules, text = config(tmp_path, demo, workers)
    daemon, ports = support.start_twistd(str(path))
    url = f"ws://127.0.0.1:{ports['listen:public']}/ws/echo"
    applied = r"SIGHUP: reloaded \S+: policy (\w+) -> (\w+)"
    try:
        first_version = re.search(r"wsfw starting with \S+ \(policy (\w+)\)", daemon.output).group(1)
        chatter = Chatter(url)
        chatter.start()
        with connect(url) as ws:
            assert not blocked(ws, f"what are the {WORD}?")  # no rule yet

        # A valid reload: a new rule file. An open connection's next message meets it too.
        with connect(url) as open_before:
            (rules / "launch.ini").write_text(BLOCK_WORD)
            done = reload_and_wait(daemon, applied, 0, count=workers)
            versions = {(m.group(1), m.group(2)) for m in done}
            assert len(versions) == 1, f"the workers disagree on the policy: {versions}"
            old, new = versions.pop()
            assert old == first_version and new != old
            assert blocked(open_before, f"now the {WORD}")
        chatter.still_chatting()
        for _ in range(2 * workers):  # new connections, spread over the workers
            with connect(url) as ws:
                assert blocked(ws, f"give me the {WORD}")
        with connect(url) as ws:
            assert not blocked(ws, "an ordinary line")

        # An invalid reload: a rule file that does not parse. The policy in force stays.
        (rules / "broken.ini").write_text("[rule:broken]\nwhen = param:\"**\" contains\naction = block\n")
        failed = r"SIGHUP: \S+ has 1 problem\(s\); (?:still running|the workers keep) policy (\w+)"
        done = reload_and_wait(daemon, failed, 0)
        assert done[0].group(1) == new
        assert "broken.ini" in daemon.output
        chatter.still_chatting()
        with connect(url) as ws:
            assert blocked(ws, f"still the {WORD}")

        # Fixed again: the broken file removed, the rule relaxed to a log rule.
        (rules / "broken.ini").unlink()
        (rules / "launch.ini").write_text(BLOCK_WORD.replace("action = block", "action = log"))
        reload_and_wait(daemon, applied, workers, count=workers)
        with connect(url) as ws:
            assert not blocked(ws, f"the {WORD} again")
        chatter.still_chatting()
        chatter.finish()
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()


def test_sighup_reports_sections_that_need_a_restart(tmp_path, demo):
    """A reload changing the listeners applies the rest and says the listeners wait for a restart."""
    path, rules, text = config(tmp_path, demo, 1)
    daemon, ports = support.start_twistd(str(path))
    try:
        path.write_text(text.replace("[listen:public]", "[listen:second]\nendpoint = tcp:0:interface=127.0.0.1\n"
                                     "[listen:public]"))
        done = reload_and_wait(daemon, r"SIGHUP: reloaded .*changes to \[listen:\*\] apply on restart", 0)
        assert done
        with connect(f"ws://127.0.0.1:{ports['listen:public']}/ws/echo") as ws:
            assert not blocked(ws, "still relaying")
    finally:
        daemon.stop()
