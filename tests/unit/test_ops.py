"""Operations without sockets: [admin] and [log] config, endpoint identity, metric and dashboard helpers."""

from __future__ import annotations

import json

import pytest

from wsfw import config_ini, endpoints
from wsfw.admin.site import host_is_local
from wsfw.admin.stats import EventRing
from wsfw.errors import ConfigError
from wsfw.inspection.audit import text_line
from wsfw.metrics import LABEL_SETS_MAX, BoundedTally, LiteHistogram, Metrics, client_address, label, primary_rule

BASE = "[listen:public]\nendpoint = tcp:8080:interface=127.0.0.1\n[route:r]\nupstream = ws://127.0.0.1:1\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config_ini.load("t.ini", BASE + text)
    return [str(p) for p in e.value.problems]


def test_admin_defaults_to_loopback_9180():
    """No [admin] section: the admin listener is on 127.0.0.1:9180 with a 500-event ring."""
    admin = config_ini.load("t.ini", BASE).admin
    assert (admin.endpoint, admin.events, admin.allow_remote, admin.enabled) == \
        ("tcp:9180:interface=127.0.0.1", 500, False, True)


@pytest.mark.parametrize("value", ["", "off", "no", "OFF"])
def test_admin_can_be_switched_off(value):
    """An empty or `off` endpoint disables the admin listener."""
    admin = config_ini.load("t.ini", BASE + f"[admin]\nendpoint = {value}\n").admin
    assert admin.endpoint is None and not admin.enabled


@pytest.mark.parametrize("endpoint, fragment", [
    ("tcp:8080:interface=127.0.0.1", "same socket as [listen:public]"),
    ("tcp:8080", "same socket as [listen:public]"),  # a wildcard overlaps the loopback listener
    ("tcp:9180", "is not on a loopback interface"),
    ("tcp:9180:interface=10.0.0.5", "is not on a loopback interface"),
    ("systemd:domain=INET:index=0", "cannot tell where it listens"),
    ("tcp:nope", "invalid endpoint"),
])
def test_admin_endpoint_refused(endpoint, fragment):
    """The admin listener is never a public socket, and stays on loopback unless allowed."""
    found = problems(f"[admin]\nendpoint = {endpoint}\n")
    assert any("[admin] endpoint" in p and fragment in p for p in found), found


def test_admin_remote_needs_allow_remote_and_unix_is_local(tmp_path):
    """allow_remote = yes permits a non-loopback admin endpoint; a unix: socket is local anyway."""
    remote = config_ini.load("t.ini", BASE + "[admin]\nendpoint = tcp:9180\nallow_remote = yes\n").admin
    assert remote.endpoint == "tcp:9180" and remote.allow_remote
    unix = config_ini.load("t.ini", BASE + f"[admin]\nendpoint = unix:{tmp_path}/admin.sock\n").admin
    assert unix.endpoint.startswith("unix:")


def test_admin_events_bounds_and_unknown_key():
    """`events` is bounded; unknown [admin] keys are errors with a suggestion."""
    found = problems("[admin]\nevents = 0\nallow_remot = yes\n")
    assert any("[admin] events: must be between 1 and 10000" in p for p in found)
    assert any("[admin] allow_remot: unknown key (did you mean 'allow_remote'?)" in p for p in found)


def test_log_keys(tmp_path):
    """[log] format/file/syslog load; bad values and shared or missing files are reported together."""
    good = config_ini.load("t.ini", BASE + f"[log]\nformat = text\nfile = {tmp_path}/wsfw.log\n"
                                           f"audit_file = {tmp_path}/audit.log\nsyslog = yes\n"
                                           "syslog_facility = local3\n").log
    assert (good.format, good.file, good.syslog, good.syslog_facility) == \
        ("text", f"{tmp_path}/wsfw.log", True, "local3")
    found = problems(f"[log]\nformat = xml\nfile = -\naudit_file = {tmp_path}/a.json\n"
                     f"json_file = {tmp_path}/a.json\nsyslog_facility = kern\n")
    assert any("[log] format: 'xml' is not one of json, text" in p for p in found)
    assert any("[log] file: stdout already carries" in p for p in found)
    assert any("[log] audit_file: same file as json_file" in p for p in found)
    assert any("[log] syslog_facility" in p for p in found)
    missing = problems("[log]\nfile = /nonexistent-dir/wsfw.log\n")
    assert any("directory '/nonexistent-dir' does not exist" in p for p in missing)


def test_shipped_config_documents_every_key():
    """etc/wsfw.ini names every key of every section, so operators see them all."""
    text = open("etc/wsfw.ini").read()
    for section, keys in config_ini.SECTION_KEYS.items():
        header = f"\n[{section}:" if section in ("listen", "route") else f"\n[{section}]\n"
        assert header in text, f"no {header.strip()} section in etc/wsfw.ini"
        body = text.split(header, 1)[1].split("\n[", 1)[0]
        for key in keys:
            assert f"\n{key} =" in body, f"[{section}] {key} is not in etc/wsfw.ini"


@pytest.mark.parametrize("a, b, same", [
    ("tcp:80", "tcp:80:interface=127.0.0.1", True),
    ("tcp:80:interface=127.0.0.1", "ssl:80:privateKey=k:interface=127.0.0.1", True),
    ("tcp:80:interface=127.0.0.1", "tcp:80:interface=127.0.0.2", False),
    ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", False),
    ("tcp6:80", "tcp:80:interface=::1", True),
    ("unix:/run/a.sock", "unix:/run/a.sock", True),
    ("unix:/run/a.sock", "tcp:80", False),
])
def test_same_socket(a, b, same):
    """Endpoint strings that would bind the same (or an overlapping) socket are recognised."""
    assert endpoints.same_socket(a, b) is same


@pytest.mark.parametrize("description, local", [
    ("tcp:1:interface=127.0.0.1", True), ("tcp:1:interface=127.1.2.3", True), ("tcp6:1:interface=\\:\\:1", True),
    ("tcp:1:interface=localhost", True), ("unix:/tmp/x", True), ("tcp:1", False), ("tcp6:1", False),
    ("tcp:1:interface=192.0.2.1", False), ("systemd:domain=INET:index=0", None),
])
def test_is_loopback(description, local):
    """Only loopback interfaces and unix sockets count as local."""
    assert endpoints.is_loopback(description) is local


def test_lite_histogram_buckets_are_cumulative():
    """Values land in the first bucket whose bound is >= the value (Prometheus `le`), cumulated on export."""
    h = LiteHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        h.observe(value)
    assert h.buckets() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.sum == pytest.approx(2.65)


def test_bounded_tally_forgets_the_rare_half():
    """Past its limit the tally keeps the most frequent keys, so a spray of addresses cannot grow it."""
    tally = BoundedTally(limit=4)
    for key, n in (("a", 5), ("b", 4), ("c", 1), ("d", 1)):
        tally.add(key, n)
    tally.add("e")
    assert len(tally.counts) <= 4 and tally.top(2) == [("a", 5), ("b", 4)]


def test_labels_and_primary_rule():
    """The deciding rule is the highest-scoring match; labels are sanitised and bounded."""
    event = {"kind": "message", "peer": "10.1.2.3:5555", "inspector": "detect", "rule_ids": ["a", "b"],
             "matches": [{"rule_id": "xss-010", "class": "xss", "score": 2},
                         {"rule_id": "xss-002", "class": "xss", "score": 5}]}
    assert primary_rule(event) == ("xss-002", "xss")
    assert primary_rule({"inspector": "decoder"}) == ("decoder", "decoder")
    assert client_address(event) == "10.1.2.3"
    assert client_address({"kind": "http", "peer": "::1"}) == "::1"
    assert label('x"} evil{') == "x___evil_" and len(label("r" * 500)) == 64


def test_metric_label_sets_are_capped():
    """A plugin inventing rule ids cannot grow a metric past LABEL_SETS_MAX label sets."""
    config = config_ini.load("t.ini", BASE)
    metrics = Metrics(config)
    for i in range(LABEL_SETS_MAX + 50):
        metrics.audit_event({"kind": "message", "route": "r", "action": "block", "enforced": True,
                             "inspector": "plugin", "rule_ids": [f"rule-{i}"], "classes": ["x"], "peer": "1.2.3.4:1"})
    assert len(metrics._blocks.children) <= LABEL_SETS_MAX + 1
    assert ("x", "other", "other") not in metrics._blocks.children  # folded whole, not per label
    assert ("other", "other", "other") in metrics._blocks.children
    assert metrics.blocked == LABEL_SETS_MAX + 50


def test_event_ring_is_bounded_and_filters():
    """The ring keeps the newest events only, with ids, plain fields, and the `since`/blocked filters."""
    ring = EventRing(3)
    for i in range(5):
        ring({"log_time": float(i), "kind": "message", "action": "block" if i % 2 else "log", "enforced": True,
              "param": f"p{i}", "matches": ({"rule_id": "r", "class": "c", "score": 5, "extra": "dropped"},),
              "log_format": "not kept"})
    assert [e["id"] for e in ring.recent(10)] == [5, 4, 3]
    assert [e["id"] for e in ring.recent(10, since=4)] == [5]
    assert [e["param"] for e in ring.recent(10, blocked_only=True)] == ["p3"]
    record = ring.recent(1)[0]
    assert "log_format" not in record and record["matches"] == [
        {"rule_id": "r", "class": "c", "severity": None, "score": 5, "path": None}]
    json.dumps(record)


@pytest.mark.parametrize("host, ok", [(b"127.0.0.1:9180", True), (b"[::1]:9180", True), (b"localhost:9180", True),
                                      (None, True), (b"evil.example:9180", False), (b"127.0.0.1.nip.io", False)])
def test_admin_host_check(host, ok):
    """DNS-rebinding guard: a loopback admin listener answers only to addresses and localhost."""
    assert host_is_local(host) is ok


def test_audit_text_line_escapes():
    """`format = text` audit lines are key=value, one line, control characters escaped."""
    line = text_line({"log_time": 0.0, "action": "block", "kind": "message", "peer": "1.2.3.4:5", "route": "r",
                      "param": "json.q", "rule_ids": ["sqli-001", "sqli-libinjection"], "score": 5,
                      "excerpt": "x' OR 1=1\n-- <b>", "enforced": True})
    assert line.count("\n") == 1 and line.endswith("\n")
    assert " audit block message " in line and "param=json.q" in line and "rule_ids=sqli-001,sqli-libinjection " in line
    assert "excerpt=\"x' OR 1=1\\n-- <b>\"" in line


def test_syslog_observer_gets_wsfw_events(monkeypatch):
    """`syslog = yes`: wsfw's events at or above the level reach syslog(3) through Twisted's
    SyslogObserver with the configured facility, and stop when the service stops.
    (The libc calls are captured: there is no syslog daemon in the test environment.)"""
    import syslog

    from twisted.internet.testing import MemoryReactor
    from twisted.python.syslog import SyslogObserver

    from wsfw import logs
    from wsfw.service import build

    opened, sent = [], []
    monkeypatch.setattr(SyslogObserver, "openlog", lambda self, *args: opened.append(args))
    monkeypatch.setattr(SyslogObserver, "syslog", lambda self, *args: sent.append(args))
    config = config_ini.load("t.ini", BASE + "[log]\nlevel = info\nsyslog = yes\nsyslog_facility = local3\n"
                                             "[admin]\nendpoint = off\n")
    service = build(config, MemoryReactor()).getServiceNamed("log")
    before = list(logs.ROUTER.observers)
    service.startService()
    try:
        log = logs.logger("wsfw.test")
        log.debug("below the level {n}", n=1)
        log.warn("upstream {name} unreachable", name="app")
    finally:
        service.stopService()
        logs.set_level("info")
    log.warn("after stop")
    assert opened == [("wsfw", 0, syslog.LOG_LOCAL3)]
    assert sent == [(syslog.LOG_WARNING, "[wsfw.test] upstream app unreachable")]
    assert logs.ROUTER.observers == before


def test_check_config_exit_codes_for_exec_start_pre(tmp_path, capsys):
    """`wsfw check-config` as systemd's ExecStartPre: 0 valid, 1 invalid or unreadable (every problem on
    stderr, one per line), 2 for a bad command line."""
    from wsfw import cli

    assert cli.main(["check-config", str(tmp_path / "missing.ini")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("1 configuration error:\n") and "missing.ini: cannot read: No such file" in err
    bad = tmp_path / "bad.ini"
    bad.write_text(BASE + "[admin]\nendpoint = tcp:8080\n[log]\nformat = xml\n")
    assert cli.main(["check-config", str(bad)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "3 configuration errors:" and len(lines) == 4
    with pytest.raises(SystemExit) as e:
        cli.main(["check-config", "--strict"])
    assert e.value.code == 2
