"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven through /usr/bin/chromedriver.

Selenium is given both paths, so selenium-manager is never run and nothing is
downloaded; as a guard, ``SE_MANAGER_PATH`` points at /bin/false while a
session starts (were selenium-manager consulted, starting would fail loudly)
and its cache directory must stay uncreated. Without /usr/bin/chromium and
/usr/bin/chromedriver the tests using ``requires_chromium`` are skipped; ``make test`` installs
chromium and chromium-driver when it runs as root on Debian.

    browsers = Browsers(tmp_path)       # or the ``browsers`` fixture below
    page = browsers.new()               # one independent browser (own profile, cookies)
    ...
    browsers.close()                    # quits them all
"""

from __future__ import annotations

import os
import time

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

requires_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install chromium chromium-driver "
           "(make test does it when run as root on Debian)")


class Browsers:
    """Starts headless Chromium sessions, each with its own profile under ``folder``; ``close()`` quits all."""

    def __init__(self, folder, window: str = "1200,900"):
        self.folder = str(folder)
        self.window = window
        self.drivers: list = []
        self.cache = os.path.join(self.folder, "selenium-cache")

    def new(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = os.path.join(self.folder, f"profile-{len(self.drivers)}")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions", f"--window-size={self.window}",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SE_MANAGER_PATH", "/bin/false")
            env.setenv("SE_CACHE_PATH", self.cache)
            env.setenv("SE_OFFLINE", "true")
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.drivers.append(driver)
        return driver

    def close(self) -> None:
        drivers, self.drivers = self.drivers, []
        for driver in drivers:
            try:
                driver.quit()
            except Exception:
                pass
        assert not os.path.exists(self.cache), "selenium-manager ran: only the system browser and driver may be used"


@pytest.fixture
def browsers(tmp_path):
    """A ``Browsers`` for one test; every browser it started is quit afterwards."""
    made = Browsers(tmp_path)
    yield made
    made.close()


def wait_for(driver, predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate(driver)`` until truthy and return it; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate(driver)
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def console_errors(driver, ignore: tuple[str, ...] = ()) -> list[dict]:
    """SEVERE browser-console entries (failed loads, script errors, CSP violations), minus ``ignore`` substrings."""
    return [entry for entry in driver.get_log("browser")
            if (entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"])
            and not any(text in entry["message"] for text in ignore)]
