"""The inspection pipeline's decisions, the inspector registry and its config checks."""

from __future__ import annotations

import sys
import textwrap

import pytest
from zope.interface import implementer

from wsfw import config_ini, decoders
from wsfw.errors import ConfigError
from wsfw.hook import FORWARD, MessageView
from wsfw.inspection import Finding
from wsfw.inspection.audit import Audit, escape
from wsfw.inspection.pipeline import Pipeline
from wsfw.inspection.registry import factories
from wsfw.interfaces import IInspector

BASE = "[listen:a]\nendpoint = tcp:1\n[route:r]\nupstream = ws://x\n"


@implementer(IInspector)
class Fixed:
    name = "fixed"

    def __init__(self, action="block"):
        self.action = action
        self.seen = []

    def inspect(self, view, decoded):
        self.seen.append(decoded)
        if b"evil" in (view.payload if view else b"evil"):
            return Finding("fixed", self.action, "evil found", score=5, rules=("t-1",), classes=("test",),
                           path="text", excerpt="evil")
        return None


def pipeline(mode="block", inspect_upstream=False, inspector=None):
    return Pipeline(route="r", mode=mode, framing="auto", inspect_upstream=inspect_upstream,
                    inspectors=[inspector or Fixed()], limits=decoders.Limits(), on_decode_error="raw",
                    on_decode_limit="log", on_error="close", audit=Audit(None))


def view(payload: bytes, direction="client"):
    return MessageView(conn_id="c1", route="r", peer="1.2.3.4:5", direction=direction, index=1, payload=payload,
                       is_binary=False, subprotocol=None, path="/")


@pytest.mark.parametrize("mode,blocked", [("block", True), ("detect", False), ("off", False)])
def test_modes(mode, blocked):
    """block closes with 1008; detect and off forward."""
    verdict = pipeline(mode).inspect_message(view(b"some evil text"))
    assert (verdict.action == "close" and verdict.code == 1008) is blocked
    assert (verdict is FORWARD) is not blocked


def test_log_findings_do_not_block():
    """A finding below the threshold (action log) is audited but forwarded."""
    assert pipeline(inspector=Fixed("log")).inspect_message(view(b"evil")) is FORWARD


def test_upstream_direction_only_when_asked():
    """Upstream->client messages are inspected only with inspect_upstream."""
    assert pipeline().inspect_message(view(b"evil", "upstream")) is FORWARD
    assert pipeline(inspect_upstream=True).inspect_message(view(b"evil", "upstream")).code == 1008


def test_decoded_parameters_reach_inspectors():
    """Inspectors get the decoded parameters of the message, JSON included."""
    inspector = Fixed()
    pipeline(inspector=inspector).inspect_message(view(b'{"user": {"name": "bob"}}'))
    assert ("json.user.name", "bob") in inspector.seen[0].params


def test_excerpt_escaping():
    """Excerpts are bounded and control characters escaped."""
    assert escape("a\nb\x00c" + "x" * 500, 20) == "a\\nb\\x00cxxxxxxxxxxxxxxx"[:40]
    assert "\n" not in escape("\n" * 300)


def test_builtin_registry():
    """The built-in detect factory is registered and verified."""
    found, errors = factories()
    assert "detect" in found and errors == []


def test_entry_point_plugins(tmp_path, monkeypatch):
    """Third-party inspectors are discovered through `wsfw.inspectors`; a broken one is reported by name."""
    (tmp_path / "fakeplugin.py").write_text(textwrap.dedent('''
        from zope.interface import implementer
        from wsfw.interfaces import IInspectorFactory

        @implementer(IInspectorFactory)
        class Good:
            name = "good"
            keys = ("level",)
            def check(self, options):
                pass
            def build(self, options):
                return object()

        class Bad:
            pass
    '''))
    dist = tmp_path / "fakeplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[wsfw.inspectors]\ngood = fakeplugin:Good\nbad = fakeplugin:Bad\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found, errors = factories()
    assert "good" in found
    assert any("'bad'" in e and "cannot be used" in e for e in errors)
    sys.modules.pop("fakeplugin", None)


def test_inspection_config_errors():
    """Unknown inspectors, bad inspector options and unknown inspector keys are config errors."""
    with pytest.raises(ConfigError) as e:
        config_ini.load("t.ini", BASE + "[inspection]\ninspectors = detect nope\nmax_params = 0\n"
                                        "[inspector:detect]\nparanoia = 7\nthreshhold = 3\n[inspector:ghost]\n")
    text = str(e.value)
    assert "[inspection] inspectors: no inspector named 'nope'" in text
    assert "[inspection] max_params: must be greater than 0" in text
    assert "[inspector:detect] paranoia: 7 is not 1, 2 or 3" in text
    assert "[inspector:detect] threshhold: unknown key" in text
    assert "[inspector:ghost]: no inspector named 'ghost'" in text


def test_route_modes_and_framing():
    """Routes inherit [wsfw] mode unless they set their own; framing is validated."""
    c = config_ini.load("t.ini", BASE.replace("[route:r]", "[wsfw]\nmode = detect\n[route:r]") +
                        "[route:s]\npath = /s\nupstream = ws://y\nmode = off\nframing = socketio\n")
    assert [c.mode_for(r) for r in c.routes] == ["detect", "off"]
    assert c.routes[1].framing == "socketio"
    with pytest.raises(ConfigError):
        config_ini.load("t.ini", BASE + "framing = morse\n")


@pytest.mark.parametrize("text,leaks", [
    ('Traceback (most recent call last):\n  File "/app/x.py", line 3, in <module>', True),
    ("java.lang.NullPointerException: boom\n\tat com.acme.Foo.bar(Foo.java:42)", True),
    ("ERROR: SQLSTATE[42000]: Syntax error or access violation", True),
    ("You have an error in your SQL syntax; check the manual", True),
    ("my traceback talk is at 5pm, see the java file", False),
    ("ORA is a nice name", False),
])
def test_leaks_inspector(text, leaks):
    """Upstream stack traces and SQL errors are withheld (dropped), prose about them is not."""
    from wsfw.inspection.leaks import LeaksInspector

    p = pipeline(inspect_upstream=True, inspector=LeaksInspector())
    verdict = p.inspect_message(view(json_text(text), "upstream"))
    assert (verdict.action == "drop") is leaks
    assert p.inspect_message(view(json_text(text), "client")) is FORWARD


def json_text(text: str) -> bytes:
    import json

    return json.dumps({"type": "error", "detail": text}).encode()
