"""The Socket.IO chat demo in real headless Chromium browsers, through a real `twistd wsfw`.

Exactly the demo of examples/socketio-chat/README.md: its app.py, its page with
the vendored socket.io-client, and its wsfw.ini (only the listen port and the
app's port changed). A victim and an attacker chat; the attacker's XSS is not
delivered, the attacker is cut off, and the victim stays connected and keeps
chatting. Skipped only when /usr/bin/chromium is absent (tests/browser.py).
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests import support
from tests.browser import Browsers, console_errors, requires_chromium, wait_for

pytestmark = [pytest.mark.slow, requires_chromium]

EXAMPLE = os.path.join(support.ROOT, "examples", "socketio-chat")
XSS = "<img src=x onerror=\"document.title='pwned'\">"
TITLE = "Socket.IO chat behind wsfw"


def example_config(app_port: int) -> str:
    """examples/socketio-chat/wsfw.ini on a free port, in front of the app's actual port."""
    with open(os.path.join(EXAMPLE, "wsfw.ini")) as f:
        text = f.read()
    text, listeners = re.subn(r"(?m)^endpoint = tcp:8080:interface=127\.0\.0\.1$",
                              "endpoint = tcp:0:interface=127.0.0.1", text)
    text, upstreams = re.subn(r"(?m)^upstream = ws://127\.0\.0\.1:5000$", f"upstream = ws://127.0.0.1:{app_port}", text)
    assert (listeners, upstreams) == (1, 2), "examples/socketio-chat/wsfw.ini changed: update this test"
    # a fresh port for the admin listener too, never the default one a developer's wsfw may hold
    assert "[admin]" not in text and "[timeouts]" not in text, "examples/socketio-chat/wsfw.ini changed: update this test"
    return text + "\n[timeouts]\nshutdown_drain = 1\n[admin]\nendpoint = tcp:0:interface=127.0.0.1\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The example app and wsfw with the example's config, as the README runs them."""
    folder = tmp_path_factory.mktemp("chat-demo")
    argv = [sys.executable, os.path.join(EXAMPLE, "app.py"), "--port", "0"]
    with support.app_behind_wsfw(folder, argv, config=example_config) as (app, _, daemon, port, _audit):
        yield Demo(f"http://127.0.0.1:{port}", daemon, app)


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    """Two independent browsers (own profiles), shared by the tests: each test opens fresh pages."""
    browsers = Browsers(tmp_path_factory.mktemp("browsers"))
    try:
        yield browsers.new(), browsers.new()
    finally:
        browsers.close()


class Demo:
    def __init__(self, url, daemon, app):
        self.url, self.daemon, self.app = url, daemon, app


class Page:
    """One user's chat page in its own browser."""

    def __init__(self, driver, demo: Demo, name: str, transport: str | None):
        self.driver, self.name = driver, name
        query = f"?name={name}" + (f"&transport={transport}" if transport else "")
        driver.get(demo.url + "/" + query)
        assert driver.title == TITLE
        self.wait_connected("websocket" if transport in (None, "websocket") else "polling")

    def status(self) -> tuple[str, str]:
        element = self.driver.find_element("id", "status")
        return element.get_attribute("data-state"), element.text

    def wait_connected(self, transport: str) -> None:
        # default transports: long-polling first, then the upgrade to WebSocket
        wait_for(self.driver, lambda d: self.status() == ("connected", f"connected ({transport})"),
                 what=f"{self.name} connected over {transport}")

    def say(self, text: str) -> None:
        box = self.driver.find_element("id", "text")
        box.send_keys(text)
        self.driver.find_element("id", "send").click()

    def lines(self) -> list[str]:
        return [li.text for li in self.driver.find_elements("css selector", "#messages li")]

    def wait_line(self, line: str) -> None:
        wait_for(self.driver, lambda d: line in self.lines(), what=f"{self.name} shows {line!r}")


@pytest.mark.parametrize("transport", [None, "polling"], ids=["default-upgrade-to-websocket", "polling"])
def test_xss_not_delivered_attacker_cut_off(demo, drivers, transport):
    """Two pages chat through wsfw; the attacker's XSS reaches nobody and cuts the attacker off;
    the victim stays connected and keeps receiving benign messages."""
    victim = Page(drivers[0], demo, "alice", transport)
    attacker = Page(drivers[1], demo, "mallory", transport)
    victim.wait_line("mallory joined")

    victim.say("hi mallory")
    attacker.wait_line("alice: hi mallory")
    attacker.say("hi alice")
    victim.wait_line("mallory: hi alice")

    log_mark = len(demo.daemon.output)
    attacker.say(XSS)
    # the attacker is cut off: WebSocket closed with 1008, or (polling) its POST refused and the session ended
    # (what socket.io-client reports: the WebSocket closed under it, or its POST failed)
    expected = "disconnected: transport error" if transport == "polling" else "disconnected: transport close"
    wait_for(attacker.driver, lambda d: attacker.status() == ("disconnected", expected), what="attacker disconnected")
    wsfw_log = demo.daemon.wait_for(r'"enforced": true', timeout=5).string[log_mark:]
    assert '"xss"' in wsfw_log and '"param": "socketio.args[0]"' in wsfw_log
    if transport == "polling":
        assert '"kind": "http"' in wsfw_log and "ended by policy" in wsfw_log
    else:
        assert '"kind": "message"' in wsfw_log and "closing client with 1008" in wsfw_log
    victim.wait_line("mallory left")

    # the victim is still connected, never got the payload, and the page ran nothing
    assert victim.status()[0] == "connected"
    assert not any("onerror" in line for line in victim.lines())
    assert victim.driver.find_elements("css selector", "#messages img") == []
    assert victim.driver.title == TITLE and attacker.driver.title == TITLE

    # ... and keeps chatting: with the attacker, reconnected, and on its own
    attacker.driver.find_element("id", "reconnect").click()
    attacker.wait_connected("websocket" if transport is None else "polling")
    victim.wait_line("mallory joined")
    attacker.say("sorry")
    victim.wait_line("mallory: sorry")
    victim.say("apology accepted")
    attacker.wait_line("alice: apology accepted")
    assert victim.status()[0] == "connected"
    assert XSS not in demo.app.output  # the app logs every message it gets: the attack never reached it
    assert "'hi alice'" in demo.app.output and "'sorry'" in demo.app.output

    # a late joiner's history (kept by the app) has the conversation and no attack
    late = Page(attacker.driver, demo, "carol", transport)
    wait_for(late.driver, lambda d: "alice: apology accepted" in late.lines(), what="history shown")
    assert not any("onerror" in line for line in late.lines())
    assert console_errors(victim.driver) == []
