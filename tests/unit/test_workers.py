"""`[wsfw] workers` without processes: the config key, the service trees, the restart policy,
the merging of the workers' admin answers and the socket plumbing (real sockets, no workers)."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import error
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial import unittest

from wsfw import cli, config, config_ini, listeners, tap
from wsfw.admin import merge
from wsfw.admin.fleet import FleetAdminResource
from wsfw.errors import ConfigError
from wsfw.service import WsfwService
from wsfw.supervisor import (RestartPolicy, Supervisor, SupervisorService, WorkerProcess, build_supervisor,
                             describe_exit)

BASE = "[listen:public]\nendpoint = tcp:8080:interface=127.0.0.1\n[route:r]\nupstream = ws://127.0.0.1:1\n"


def load(text: str = ""):
    return config_ini.load("t.ini", BASE + text)


# -- the config key ------------------------------------------------------------------


def test_workers_default_is_auto_one_per_available_cpu():
    """No `workers`: auto, resolved at start to the CPUs this process may run on (its affinity)."""
    settings = load().settings
    assert settings.workers is None
    assert settings.worker_count() == min(config.available_cpus(), config.WORKERS_MAX)
    assert load("[wsfw]\nworkers = AUTO\n").settings.workers is None


@pytest.mark.parametrize("value, count", [("1", 1), ("2", 2), (" 64 ", 64)])
def test_workers_number(value, count):
    """A whole number from 1 to 64 is taken as it is."""
    settings = load(f"[wsfw]\nworkers = {value}\n").settings
    assert (settings.workers, settings.worker_count()) == (count, count)


@pytest.mark.parametrize("value, reason", [
    ("0", "0 is out of range: use auto or a whole number from 1 to 64"),
    ("65", "65 is out of range: use auto or a whole number from 1 to 64"),
    ("-2", "-2 is out of range"),
    ("two", "'two' is not auto or a whole number from 1 to 64"),
    ("1.5", "'1.5' is not auto or a whole number from 1 to 64"),
])
def test_workers_refused_with_file_section_key_and_reason(value, reason):
    """Anything else is one problem naming the file, [wsfw], `workers` and why."""
    with pytest.raises(ConfigError) as e:
        load(f"[wsfw]\nworkers = {value}\n")
    assert len(e.value.problems) == 1
    assert str(e.value.problems[0]).startswith(f"t.ini: [wsfw] workers: {reason}")


def test_check_config_reports_a_bad_workers_value(tmp_path, capsys):
    """`wsfw check-config` exits 1 and names the key, like every other mistake."""
    path = tmp_path / "w.ini"
    path.write_text(BASE + "[wsfw]\nworkers = lots\n")
    assert cli.main(["check-config", str(path)]) == 1
    assert f"{path}: [wsfw] workers: 'lots' is not auto" in capsys.readouterr().err


def test_shipped_config_documents_workers():
    """etc/wsfw.ini sets and explains `workers` in [wsfw] (auto as shipped)."""
    text = open("etc/wsfw.ini").read()
    section = text.split("[wsfw]", 1)[1].split("\n[", 1)[0]
    assert "\nworkers = auto\n" in section
    assert config_ini.load("etc/wsfw.ini").settings.workers is None


def test_config_keeps_the_text_it_was_loaded_from():
    """The supervisor hands its workers the text it validated, not the file as it may be later."""
    assert load("[wsfw]\nworkers = 2\n").text == BASE + "[wsfw]\nworkers = 2\n"


# -- which daemon twistd gets ------------------------------------------------------------


def _options(tmp_path, workers: str) -> dict:
    path = tmp_path / "w.ini"
    path.write_text(BASE + f"[wsfw]\nworkers = {workers}\n[admin]\nendpoint = tcp:0:interface=127.0.0.1\n")
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    return options


def test_one_worker_is_the_single_process_daemon(tmp_path):
    """`workers = 1`: exactly today's daemon, no supervisor."""
    service = tap.makeService(_options(tmp_path, "1"))
    assert type(service) is WsfwService


def test_more_workers_make_a_supervisor(tmp_path):
    """`workers = 3`: a supervisor whose children bind the public listener and start the workers after it."""
    service = tap.makeService(_options(tmp_path, "3"))
    assert isinstance(service, SupervisorService)
    assert [child.name for child in service] == ["log", "signals", "admin-clients", "admin", "listen:public",
                                                 "workers"]
    assert service.supervisor.expected == 3 and [s.label for s in service.supervisor.slots] == ["1", "2", "3"]


def test_supervisor_without_admin():
    """`[admin] endpoint = off`: no admin listener in the supervisor (nor in its workers)."""
    service = build_supervisor(load("[admin]\nendpoint = off\n"), MemoryReactor(), 2)
    assert [child.name for child in service] == ["log", "signals", "listen:public", "workers"]


# -- restarts ----------------------------------------------------------------------


def test_restart_backoff_doubles_for_young_deaths_and_resets_after_a_stable_run():
    """0.5 s, 1 s, 2 s... for a slot whose workers keep dying young, capped at 30 s; a worker that
    lived a minute starts the slot over at 0.5 s. Slots back off independently."""
    clock = Clock()
    policy = RestartPolicy(clock, limit=100)
    delays = []
    for _ in range(8):
        delays.append(policy.died(1, lived=1.0))
        clock.advance(10)
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.died(2, lived=1.0) == 0.5
    assert policy.died(1, lived=3600.0) == 0.5


def test_restarts_give_up_when_workers_keep_dying():
    """More than `limit` deaths within the window: give up (None); deaths older than it are forgotten."""
    clock = Clock()
    policy = RestartPolicy(clock, limit=5, window=60)
    assert all(policy.died(slot, lived=0.1) is not None for slot in (1, 2, 1, 2, 1))
    assert policy.died(2, lived=0.1) is None
    clock.advance(61)
    assert policy.died(1, lived=0.1) is not None


def test_supervisor_replaces_dead_workers_then_gives_up(monkeypatch):
    """A dead worker's slot is started again after the backoff (counted as a restart); once workers
    have died more than max(5, N) times within a minute the supervisor stops the reactor and leaves
    with status 1 once it has stopped, so systemd's Restart=on-failure takes over."""
    reactor = MemoryReactorClock()
    supervisor = Supervisor(reactor, load("[admin]\nendpoint = off\n"), 2, [])
    started = []

    def spawn(slot):
        slot.process = WorkerProcess(supervisor, slot, b"", reactor)
        slot.process.pid = 1000 + len(started)
        started.append(slot.label)

    monkeypatch.setattr(supervisor, "spawn", spawn)
    supervisor.startService()
    assert started == ["1", "2"]
    for death in range(5):
        slot = supervisor.slots[death % 2]
        supervisor.exited(slot.process, Failure(error.ProcessTerminated(signal=9)))
        assert slot.process is None and slot.pending.active()
        reactor.advance(5)
        assert slot.process is not None
    assert supervisor.restarts == 5 and started == ["1", "2", "1", "2", "1", "2", "1"]
    assert not reactor.hasStopped
    supervisor.exited(supervisor.slots[1].process, Failure(error.ProcessTerminated(exitCode=2)))
    assert supervisor.gave_up and reactor.hasStopped and supervisor.slots[1].pending is None
    [(leave, _, _)] = reactor.triggers["after"]["shutdown"]
    assert leave.__name__ == "leave"  # os._exit(EXIT_GAVE_UP) once the reactor has stopped


def test_describe_exit():
    """Exit status or signal, as the supervisor logs it."""
    assert describe_exit(Failure(error.ProcessTerminated(exitCode=3))) == "exited with status 3"
    assert describe_exit(Failure(error.ProcessDone(0))) == "exited with status 0"
    assert describe_exit(Failure(error.ProcessTerminated(signal=9))) == "was killed by signal 9 (SIGKILL)"


# -- merging the workers' answers ------------------------------------------------------


def _exposition(connections: int, handshakes: int, inspection: float) -> str:
    registry = CollectorRegistry()
    Gauge("wsfw_connections_open", "open", registry=registry).set(connections)
    Counter("wsfw_handshakes", "handshakes", ["result"], registry=registry).labels("ok").inc(handshakes)
    Histogram("wsfw_inspection_seconds", "time", ["route"], buckets=(0.001, 0.01),
              registry=registry).labels("r").observe(inspection)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_merged_metrics_keep_every_worker_apart():
    """Each worker's families are parsed, labelled worker="N" and joined by name into one valid
    exposition: counters, gauges and histograms round-trip, and nothing is summed away."""
    parts = [(label, list(text_string_to_metric_families(_exposition(n, 10 * n, seconds))))
             for label, n, seconds in (("1", 1, 0.0005), ("2", 2, 0.05))]
    text = merge.exposition(merge.merge_families(parts)).decode()
    samples = _samples(text)
    assert samples[("wsfw_connections_open", (("worker", "1"),))] == 1
    assert samples[("wsfw_connections_open", (("worker", "2"),))] == 2
    assert samples[("wsfw_handshakes_total", (("result", "ok"), ("worker", "2")))] == 20
    assert samples[("wsfw_inspection_seconds_bucket", (("le", "0.001"), ("route", "r"), ("worker", "1")))] == 1
    assert samples[("wsfw_inspection_seconds_bucket", (("le", "0.01"), ("route", "r"), ("worker", "2")))] == 0
    assert samples[("wsfw_inspection_seconds_count", (("route", "r"), ("worker", "2")))] == 1
    assert text.count("# TYPE wsfw_handshakes_total counter") == 1


def test_merged_metrics_leave_out_a_family_whose_type_differs():
    """A worker disagreeing on a family's type (another version, mid-upgrade) cannot break the scrape."""
    gauge = list(text_string_to_metric_families("# TYPE x gauge\nx 1\n"))
    counter = list(text_string_to_metric_families("# TYPE x_total counter\nx_total 2\n"))
    merged = merge.merge_families([("1", gauge), ("2", counter)])
    assert [(f.name, f.type, [s.labels["worker"] for s in f.samples]) for f in merged] == [("x", "gauge", ["1"])]


def test_totals_are_summed_per_key():
    assert merge.sum_totals([{"a": 1, "m": {"client": 2}, "flag": True}, {"a": 2, "m": {"client": 3, "up": 1}}]) \
        == {"a": 3, "m": {"client": 5, "up": 1}}


def test_series_are_aligned_on_the_step_grid():
    """Workers sample on their own timers: points are summed per 2 s slot, a slot a timer skipped
    (worker two's 102-104) is carried forward, and the series ends at the newest slot every worker has
    reached (worker one's 106 waits for worker two: no dip at the newest point)."""
    one = {"t": [100.1, 102.1, 104.1, 106.1], "connections": [1, 2, 3, 4], "blocks_per_s": [0.0, 0.5, 0.0, 0.0]}
    two = {"t": [101.9, 105.95], "connections": [10, 30], "blocks_per_s": [1.0, 0.25]}
    merged = merge.merge_series([one, two], 2.0)
    assert merged["t"] == [100.0, 102.0, 104.0]
    assert merged["connections"] == [1 + 10, 2 + 10, 3 + 30]
    assert merged["blocks_per_s"] == [1.0, 1.5, 0.25]
    assert merge.merge_series([], 2.0) == {"t": []}


def test_top_lists_are_recounted():
    rules = merge.merge_top([[{"rule": "a", "class": "x", "count": 3}, {"rule": "b", "class": "y", "count": 2}],
                             [{"rule": "b", "class": "y", "count": 2}]], ("rule", "class"), n=1)
    assert rules == [{"rule": "b", "class": "y", "count": 4}]


def test_merged_stats_have_the_dashboard_shape():
    """What the dashboard reads (totals, series, top lists) is there, plus each worker's own figures."""
    body = {"ready": True, "totals": {"connections_open": 2, "messages": {"client": 3, "upstream": 3}},
            "series": {"t": [0.0], "connections": [2]}, "top_rules": [], "top_clients": [{"client": "c", "count": 1}]}
    stats = merge.merge_stats([("1", body), ("2", body)], {"version": "v", "ready": True}, 2.0)
    assert stats["totals"] == {"connections_open": 4, "messages": {"client": 6, "upstream": 6}}
    assert stats["series"] == {"t": [0.0], "connections": [4]}
    assert stats["top_clients"] == [{"client": "c", "count": 2}]
    assert stats["workers"] == [{"worker": "1", "ready": True, "connections_open": 2},
                                {"worker": "2", "ready": True, "connections_open": 2}]
    assert stats["version"] == "v"


class _Slot:
    def __init__(self, label, pid):
        self.label, self.pid, self.admin = label, pid, None


class _Supervisor:
    def __init__(self, slots):
        self.slots, self.expected, self.restarts, self.accepting, self.listeners = slots, len(slots), 0, True, []


def _events(*pairs) -> bytes:
    return json.dumps({"events": [{"id": i, "time": t, "action": "block"} for i, t in pairs]}).encode()


def test_events_get_supervisor_ids_in_time_order_and_are_taken_once():
    """The workers' events are numbered by the supervisor, oldest first across workers; an event seen
    once is not added again; a replacement worker (new pid) is read from its first event."""
    one, two = _Slot("1", 101), _Slot("2", 102)
    resource = FleetAdminResource(config=load(), supervisor=_Supervisor([one, two]), clock=Clock())
    resource.ingest([(one, 200, _events((2, 10.5), (1, 10.0))), (two, 200, _events((1, 10.2)))])
    assert [(e["id"], e["worker"], e["time"]) for e in resource.events.recent(10)] == \
        [(3, "1", 10.5), (2, "2", 10.2), (1, "1", 10.0)]
    resource.ingest([(one, 200, _events((3, 11.0), (2, 10.5))), (two, None, None)])
    assert resource.events.last_id == 4 and resource.events.recent(1)[0]["time"] == 11.0
    replacement = _Slot("2", 202)
    resource.supervisor.slots = [one, replacement]
    resource.ingest([(one, 200, _events()), (replacement, 200, _events((1, 12.0)))])
    assert resource.events.recent(1)[0] == {"id": 5, "time": 12.0, "action": "block", "worker": "2"}


# -- sockets -----------------------------------------------------------------------


@pytest.mark.parametrize("description, parts", [
    ("tcp:8080:interface=127.0.0.1", (socket.AF_INET, "127.0.0.1", 8080, 50)),
    ("tcp:8080:127.0.0.1:100", (socket.AF_INET, "127.0.0.1", 8080, 100)),
    ("tcp:0", (socket.AF_INET, "", 0, 50)),
    ("tcp6:443", (socket.AF_INET6, "::", 443, 50)),
    ("tcp:443:interface=\\:\\:1:backlog=7", (socket.AF_INET6, "::1", 443, 7)),
    ("ssl:443:privateKey=k.pem:interface=127.0.0.2:backlog=9", (socket.AF_INET, "127.0.0.2", 443, 9)),
])
def test_tcp_listener_parts(description, parts):
    """The supervisor binds what Twisted would: family from the interface, Twisted's defaults."""
    assert listeners._tcp_parts(description) == parts


def _bound(endpoint):
    result = []
    endpoint.listen(None).addBoth(result.append)
    return result[0]


def test_reuseport_group_binds_one_socket_per_worker_on_one_port():
    """Port 0 is resolved once; every worker slot gets its own listening socket on that port."""
    group = _bound(listeners.ReusePortEndpoint("tcp:0:interface=127.0.0.1", 3))
    try:
        ports = {s.getsockname() for s in group.sockets}
        assert len(group.sockets) == 3 and len(ports) == 1
        assert group.getHost().port == ports.pop()[1]
        assert len({group.fileno_for(n) for n in (1, 2, 3)}) == 3
    finally:
        group.stopListening()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain listener", "SO_REUSEPORT listener"])
def test_reuseport_group_refuses_a_port_held_by_anyone(reuse_port):
    """A port in use fails as Twisted's would, even when its holder set SO_REUSEPORT (a second wsfw
    must not silently share the port with the first)."""
    holder = socket.socket()
    if reuse_port:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        failure = _bound(listeners.ReusePortEndpoint(f"tcp:{holder.getsockname()[1]}:interface=127.0.0.1", 2))
        assert isinstance(failure, Failure) and failure.check(error.CannotListenError)
        assert "Address already in use" in failure.getErrorMessage()
    finally:
        holder.close()


def test_supervisor_endpoint_kinds(tmp_path):
    """TCP kinds become a SO_REUSEPORT group; unix: stays one socket shared by all workers."""
    assert isinstance(listeners.supervisor_endpoint(MemoryReactor(), "tcp:0", 2), listeners.ReusePortEndpoint)
    assert not isinstance(listeners.supervisor_endpoint(MemoryReactor(), f"unix:{tmp_path}/s", 2),
                          listeners.ReusePortEndpoint)


class InheritedUnixSocketTests(unittest.TestCase):
    def test_worker_leaves_the_supervisors_unix_path_alone(self):
        """A worker adopting a shared unix socket keeps the mode the supervisor set, and does not
        unlink the path when it stops: the other workers and the replacements still need it."""
        from twisted.internet import defer, reactor

        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "s.sock")
        sock = socket.socket(socket.AF_UNIX)
        self.addCleanup(sock.close)
        sock.bind(path)
        os.chmod(path, 0o640)
        sock.listen(5)
        result = []
        listeners.InheritedEndpoint(reactor, os.dup(sock.fileno())).listen(Factory.forProtocol(Protocol)) \
            .addBoth(result.append)
        port = result[0]
        self.assertIsInstance(port, listeners.InheritedUNIXPort)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)

        def check(_):
            self.assertTrue(os.path.exists(path))

        return defer.maybeDeferred(port.stopListening).addCallback(check)
