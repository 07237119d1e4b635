"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Selenium).

wsfw (``twistd -n wsfw`` with its admin listener) runs in front of the demo
app on loopback. The test loads the dashboard, sends real WebSocket traffic
and an attack through wsfw, and waits until the page's numbers change and the
block appears in its list, rendered as text. The browser and its driver are
the system's: Selenium is given both paths, so selenium-manager never runs
and nothing is downloaded. Without them the test is skipped (``make test``
installs them when it runs as root on Debian).
"""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import support
from tests.browser import Browsers, console_errors, requires_chromium, wait_for

XSS = '{"type": "chat", "text": "<img src=x onerror=alert(document.title)>"}'

pytestmark = [pytest.mark.slow, requires_chromium]


@pytest.fixture(params=[1, 2], ids=["one process", "supervisor with 2 workers"])
def stack(tmp_path, request):
    """The demo app and a twistd wsfw in front of it, as one process or as a supervisor whose admin
    listener merges its workers' data; yields (public port, admin port)."""
    demo, upstream = support.start_demo()
    path = tmp_path / "wsfw.ini"
    path.write_text(support.config_text(f"ws://127.0.0.1:{upstream}", log="connections = no",
                                        workers=request.param))
    try:
        daemon, ports = support.start_twistd(str(path))
    except BaseException:
        demo.stop()
        raise
    yield ports["listen:public"], ports["admin"]
    daemon.stop()
    demo.stop()


@pytest.fixture
def browser(tmp_path):
    browsers = Browsers(tmp_path, window="1400,1000")
    yield browsers.new()
    browsers.close()


def wait_until(driver, predicate, timeout: float = 15.0, what: str = "condition"):
    return wait_for(driver, predicate, timeout=timeout, what=what)


def number(driver, element_id: str) -> int:
    text = driver.find_element("id", element_id).text.replace(",", "").strip()
    return int(text) if text.isdigit() else -1


def test_dashboard_shows_live_traffic_and_blocks(stack, browser):
    """The page loads (no CSP violation), its counters change with traffic, a held connection shows as
    open, an attack appears in the latest-blocks list with its parameter, rule, class and client as
    plain text, and the top rules, top clients and charts fill in."""
    public, admin = stack
    browser.get(f"http://127.0.0.1:{admin}/")
    wait_until(browser, lambda d: d.find_element("id", "status").text == "ready", what="status pill says ready")
    assert browser.title == "wsfw dashboard"
    assert number(browser, "messages-total") == 0 and number(browser, "blocks-total") == 0
    assert browser.find_element("id", "events-empty").is_displayed()

    with connect(f"ws://127.0.0.1:{public}/ws/echo") as ws:
        for i in range(10):
            ws.send(f"hello {i}")
            assert ws.recv(timeout=5) == f"hello {i}"
        wait_until(browser, lambda d: number(d, "connections-open") == 1, what="one open connection")
        wait_until(browser, lambda d: number(d, "messages-total") == 20, what="20 messages relayed")

    with connect(f"ws://127.0.0.1:{public}/ws/echo") as attacker:
        attacker.send(XSS)
        with pytest.raises(ConnectionClosed):
            attacker.recv(timeout=5)
        assert attacker.close_code == 1008

    wait_until(browser, lambda d: number(d, "blocks-total") == 1, what="one block counted")
    wait_until(browser, lambda d: number(d, "connections-open") == 0, what="connections closed")
    row = wait_until(browser, lambda d: d.find_elements("css selector", "#events-body tr"), what="a row")[0]
    cells = [td.text for td in row.find_elements("tag name", "td")]
    _, action, client, route, param, rule, cls, score, excerpt = cells
    assert (action, route, param, cls) == ("BLOCK", "app", "json.text", "xss")
    assert client.startswith("127.0.0.1:") and rule.startswith("xss-") and int(score) >= 5
    # the attack is shown as text: its markup was never parsed into the page
    assert excerpt == "<img src=x onerror=alert(document.title)>"
    assert browser.find_elements("css selector", "#events-body img") == []
    assert browser.title == "wsfw dashboard"
    assert not browser.find_element("id", "events-empty").is_displayed()

    top_rule = browser.find_element("css selector", "#top-rules li").text
    assert top_rule.startswith(rule) and "xss" in top_rule
    assert browser.find_element("css selector", "#top-clients li").text.splitlines()[0] == "127.0.0.1"
    # charts: after two samples (2 s apart) each chart has drawn its lines
    wait_until(browser, lambda d: all(d.find_elements("css selector", f"#{chart} path.line")
                                      for chart in ("chart-messages", "chart-blocks", "chart-connections")),
               timeout=10, what="charts drawn")
    assert number(browser, "blocks-window") == 1

    problems = console_errors(browser)
    assert problems == [], problems
