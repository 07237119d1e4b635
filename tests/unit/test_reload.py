"""Reload logic without sockets: the policy version, what needs a restart, and what a new
generation reuses or takes over (tests/integration/test_reload.py drives SIGHUP on a real daemon)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from wsfw import config_ini
from wsfw.hook import MessageView
from wsfw.inspection.audit import Audit
from wsfw.reload import Generations, restart_only_changes

BASE = """
[listen:a]
endpoint = tcp:1
[route:app]
path = /socket.io/
upstream = ws://127.0.0.1:1
[inspection]
rules = rules.d/*.ini
"""


def load(tmp_path, text=BASE):
    path = tmp_path / "wsfw.ini"
    path.write_text(text)
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    return config_ini.load(str(path))


def test_version_follows_the_config_and_every_rule_file(tmp_path):
    first = load(tmp_path)
    assert load(tmp_path).version == first.version  # nothing changed
    (tmp_path / "rules.d" / "a.ini").write_text('[rule:a]\nwhen = event == "x"\naction = block\n')
    with_rule = load(tmp_path)
    assert with_rule.version != first.version
    (tmp_path / "rules.d" / "a.ini").write_text('[rule:a]\nwhen = event == "y"\naction = block\n')
    assert load(tmp_path).version not in (first.version, with_rule.version)
    assert load(tmp_path, BASE + "[limits]\nmax_connections = 5\n").version != first.version


def test_restart_only_changes_names_sockets_files_and_processes(tmp_path):
    old = load(tmp_path)
    assert restart_only_changes(old, load(tmp_path, BASE + "[wsfw]\nmode = detect\n")) == []
    new = load(tmp_path, BASE.replace("tcp:1", "tcp:2") + "[log]\nlevel = warn\n[wsfw]\nworkers = 3\n")
    assert restart_only_changes(old, new) == ["[listen:*]", "[log]", "[wsfw] workers"]


def socketio_view(payload: bytes, conn="c1"):
    return MessageView(conn_id=conn, route="app", peer="127.0.0.1:1", direction="client", index=0, payload=payload,
                       is_binary=False, subprotocol=None, path="/socket.io/", query="EIO=4&transport=websocket")


def test_a_new_generation_reuses_inspectors_and_takes_over_connection_state(tmp_path):
    audit = Audit(None, "json")
    generations = Generations(MemoryReactorClock(), audit, pool=None, tracker=None)
    first = generations.build(load(tmp_path))
    hook = generations.hooks["app"]
    # A Socket.IO binary event announces one attachment: the decoder waits for it.
    assert hook.inspect_message(socketio_view(b'451-["upload",{"_placeholder":true,"num":0}]')).action == "forward"
    second = generations.build(load(tmp_path, BASE + "[wsfw]\nmode = block\n"))
    assert generations.hooks["app"] is hook  # relays keep the hook they hold; it now leads to the new pipeline
    assert hook.current is second.pipelines["app"] is not first.pipelines["app"]
    assert second.pipelines["app"].inspectors is first.pipelines["app"].inspectors  # no recompilation
    # The attachment still completes the event under the new pipeline: its XSS is found there.
    attachment = MessageView(*socketio_view(b"<script>alert(1)</script>")[:5], payload=b"<script>alert(1)</script>",
                             is_binary=True, subprotocol=None, path="/socket.io/", query="EIO=4&transport=websocket")
    assert hook.inspect_message(attachment).action == "close"
    third = generations.build(load(tmp_path, BASE + "[inspector:detect]\nparanoia = 2\n"))
    assert third.pipelines["app"].inspectors is not first.pipelines["app"].inspectors  # options changed: rebuilt
