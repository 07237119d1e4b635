"""The twistd plugin, the tap options, ``wsfw check-config`` and service assembly."""

from __future__ import annotations

import subprocess
import sys

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python import usage
from zope.interface.verify import verifyObject

from wsfw import cli, config_ini, tap
from wsfw.service import build

BAD = "[listen:a]\nendpoint = tcp:x\n[route:a]\nupstream = ftp://nope\n[limits]\nmax_message_bytes = big\n"


def test_plugin_is_discovered():
    """twistd's plugin scan finds `wsfw` (the editable-install trap is handled by the Makefile)."""
    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "wsfw" in makers
    verifyObject(IServiceMaker, makers["wsfw"])


def test_tap_bad_config_is_one_usage_error(tmp_path):
    """A bad config gives one UsageError listing every problem, before anything binds."""
    path = tmp_path / "bad.ini"
    path.write_text(BAD)
    options = tap.Options()
    with pytest.raises(usage.UsageError) as e:
        options.parseOptions(["--config", str(path)])
    message = str(e.value)
    assert "3 configuration errors" in message
    for fragment in ("[listen:a] endpoint", "[route:a] upstream", "[limits] max_message_bytes"):
        assert f"{path}: {fragment}" in message


def test_check_config_exit_codes(tmp_path, capsys):
    """`wsfw check-config` exits 0 for a good file and 1, listing problems, for a bad one."""
    bad = tmp_path / "bad.ini"
    bad.write_text(BAD)
    assert cli.main(["check-config", "etc/wsfw.ini"]) == 0
    assert "configuration ok" in capsys.readouterr().out
    assert cli.main(["check-config", str(bad)]) == 1
    assert "3 configuration errors" in capsys.readouterr().err


def test_twistd_check_flag(tmp_path):
    """`twistd wsfw --config BAD --check` exits 1 with the report, like nginx -t."""
    bad = tmp_path / "bad.ini"
    bad.write_text(BAD)
    twistd = [sys.executable, "-m", "twisted", "wsfw"]
    ok = subprocess.run(twistd + ["--config", "etc/wsfw.ini", "--check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "configuration ok" in ok.stdout
    ko = subprocess.run(twistd + ["--config", str(bad), "--check"], capture_output=True, text=True, timeout=60)
    assert ko.returncode == 1 and "[limits] max_message_bytes" in ko.stderr


def test_build_has_named_children():
    """build() assembles the logs, signals, pool, admin (stats + listener), tracker and one service per
    listener, on any reactor; the admin listener comes before the tracker, so it outlives the drain."""
    config = config_ini.load("x.ini", "[listen:a]\nendpoint = tcp:8080\n[listen:b]\nendpoint = tcp:8081\n"
                                      "[route:r]\nupstream = ws://127.0.0.1:1\n")
    service = build(config, MemoryReactor())
    names = [child.name for child in service]
    assert names == ["log", "signals", "audit", "http-pool", "stats", "admin", "connections", "listen:a", "listen:b"]
    assert service.metrics is not None and service.admin is service.getServiceNamed("admin")


def test_build_without_admin():
    """`[admin] endpoint = off`: no admin listener, no metrics, nothing observing the relays."""
    config = config_ini.load("x.ini", "[listen:a]\nendpoint = tcp:8080\n[route:r]\nupstream = ws://127.0.0.1:1\n"
                                      "[admin]\nendpoint = off\n")
    service = build(config, MemoryReactor())
    assert [child.name for child in service] == ["log", "signals", "audit", "http-pool", "connections", "listen:a"]
    assert service.metrics is None and service.admin is None


def test_wsfw_inspect_cli(tmp_path, capsys):
    """`wsfw inspect` prints each message's decoded parameters and the verdict with its reason."""
    messages = tmp_path / "messages.txt"
    messages.write_text('42["chat message","hello there"]\n42["chat message","<script>alert(1)</script>"]\n')
    assert cli.main(["inspect", "--framing", "socketio", str(messages)]) == 0
    out = capsys.readouterr().out
    assert "socketio.args[0] = 'hello there'" in out
    first, second = out.split("message 2:")
    assert "verdict: FORWARD" in first
    assert "verdict: BLOCK (xss" in second and "param=socketio.args[0]" in second
    assert "2 message(s), 1 would be blocked" in out


def test_wsfw_inspect_escaped_frames_by_subprotocol(tmp_path, capsys):
    """`--escaped` puts multi-line and binary frames on one line; `--subprotocol` selects the decoder;
    the lines share one connection's state (a SignalR MessagePack handshake, then binary records)."""
    import msgpack

    stomp = tmp_path / "stomp.txt"
    stomp.write_text("SEND\\ndestination:/queue/chat\\n\\nhi there\\x00\n"
                     "SEND\\ndestination:/queue/chat\\n\\n1' OR '1'='1\\x00\n")
    assert cli.main(["inspect", "--escaped", "--subprotocol", "v12.stomp", str(stomp)]) == 0
    out = capsys.readouterr().out
    first, second = out.split("message 2:")
    assert "framing=stomp event='/queue/chat'" in first and "verdict: FORWARD" in first
    assert "param=stomp.body" in second and "verdict: BLOCK (sqli" in second

    record = msgpack.packb([1, {}, "1", "Send", ["<svg onload=alert(1)>"]])
    escaped = "".join(f"\\x{b:02x}" for b in bytes([len(record)]) + record)
    signalr = tmp_path / "signalr.txt"
    signalr.write_text('{"protocol":"messagepack","version":1}\\x1e\n' f"b:{escaped}\n")
    assert cli.main(["inspect", "--escaped", "--framing", "signalr", str(signalr)]) == 0
    out = capsys.readouterr().out.split("message 2:")[1]
    assert "signalr.target = 'Send'" in out and "param=signalr.arguments[0]" in out and "verdict: BLOCK" in out
