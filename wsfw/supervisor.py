"""The supervisor: ``[wsfw] workers`` above 1 runs that many worker reactors and keeps them running.

One Python process relays on one core. With ``workers = N`` the twistd process
becomes a supervisor that never accepts a public connection itself:

* it binds every ``[listen:*]`` endpoint while starting (``ListenerService``,
  as a single process would), so a port in use or a privileged port is
  reported with its section before anything forks, and a low port is bound
  before twistd drops privileges; then it stops reading from those sockets;
* it starts N ``python -m wsfw.worker`` processes (``reactor.spawnProcess``),
  each handed the listening sockets as file descriptors, the configuration
  text it validated and the TLS files it read (on stdin), and a pipe on which
  the worker says when it is serving and where its private admin socket is
  (:mod:`wsfw.inherit`, :mod:`wsfw.worker`);
* a worker that dies is logged with its exit status or signal and started
  again after a backoff (0.5 s, doubling while replacements keep dying young,
  capped at 30 s); when workers keep dying (more than ``max(5, N)`` deaths
  within 60 s) it gives up and exits with status 1, so systemd's
  ``Restart=on-failure`` starts wsfw afresh;
* SIGTERM (or SIGINT) stops restarting, passes SIGTERM on to every worker,
  which drains its connections as a single process does, and waits for them
  (``[timeouts] shutdown_drain`` plus a margin, then SIGKILL); SIGUSR1 and
  SIGHUP are handled here and passed on;
* its admin listener answers for all workers (:mod:`wsfw.admin.fleet`).

Workers also die with the supervisor: ``PR_SET_PDEATHSIG`` and a parent-pid
watchdog in :mod:`wsfw.worker`, so a supervisor killed outright never leaves
workers holding the port its replacement needs.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import shutil
import signal
import sys
import tempfile

from twisted.application.service import MultiService, Service
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.protocol import Factory

from wsfw import endpoints, listeners as sockets, logs
from wsfw.config import Config
from wsfw.reload import load_again, restart_note, restart_only_changes
from wsfw.service import ListenerService, LogService, OnStop, SignalService

log = logs.logger("wsfw.supervisor")

#: The worker's end of the pipe it reports on (JSON lines); listening sockets follow it.
STATUS_FD = 3
FIRST_SOCKET_FD = 4
#: Seconds past ``[timeouts] shutdown_drain`` a stopping worker gets before SIGKILL.
STOP_MARGIN = 5.0
#: Exit status when workers keep dying: non-zero, so systemd's Restart=on-failure applies.
EXIT_GAVE_UP = 1
#: A worker not serving this long after it started is killed (and replaced): a first start
#: compiles the signature database, which takes seconds, not minutes.
STARTUP_TIMEOUT = 120.0


class RestartPolicy:
    """When to start a dead worker again, and when to stop trying.

    A slot's delay doubles from ``first`` up to ``cap`` while its workers keep
    dying before ``stable`` seconds; one that lived longer resets it. Deaths
    across all slots are counted over ``window`` seconds: past ``limit`` the
    fault is not going away by restarting (a broken upstream certificate, an
    exhausted machine), and a fresh start by the service manager is better
    than a supervisor spinning.
    """

    def __init__(self, clock, *, limit: int = 5, window: float = 60.0, first: float = 0.5, cap: float = 30.0,
                 stable: float = 60.0):
        self.clock = clock
        self.limit = limit
        self.window = window
        self.first = first
        self.cap = cap
        self.stable = stable
        self.deaths: collections.deque = collections.deque()
        self.streaks: dict[int, int] = {}

    def died(self, slot: int, lived: float) -> float | None:
        """Record a death in ``slot`` after ``lived`` seconds: the delay before the next
        start, or None to give up."""
        now = self.clock.seconds()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] <= now - self.window:
            self.deaths.popleft()
        if len(self.deaths) > self.limit:
            return None
        streak = 1 if lived >= self.stable else self.streaks.get(slot, 0) + 1
        self.streaks[slot] = streak
        return min(self.first * 2 ** (streak - 1), self.cap)


class Slot:
    """One worker position (``label`` 1..N) and the process in it now, if any."""

    def __init__(self, index: int):
        self.index = index
        self.label = str(index)
        self.process: WorkerProcess | None = None
        self.pending = None  # the delayed call starting the next worker

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def admin(self) -> str | None:
        """The client endpoint of the worker's admin socket, once it said it is serving."""
        return self.process.admin if self.process is not None and self.process.serving else None


def describe_exit(reason) -> str:
    """``exited with status 1`` / ``was killed by signal 9 (SIGKILL)``."""
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "?"
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {getattr(value, 'exitCode', None) or 0}"


class WorkerProcess(protocol.ProcessProtocol):
    """One worker process: hands it its bootstrap on stdin, reads its reports, sees it end."""

    def __init__(self, supervisor: "Supervisor", slot: Slot, bootstrap: bytes, clock):
        self.supervisor = supervisor
        self.slot = slot
        self.bootstrap = bootstrap
        self.started = clock.seconds()
        self.pid: int | None = None
        self.admin: str | None = None
        self.serving = False
        self.ended: defer.Deferred = defer.Deferred()
        self.startup_timer = None
        self._buffer = b""

    def connectionMade(self):
        self.pid = self.transport.pid
        self.transport.write(self.bootstrap)
        self.transport.closeStdin()

    def childDataReceived(self, fd, data):
        if fd != STATUS_FD:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                report = json.loads(line)
            except ValueError:
                log.warn("worker {slot}: unreadable report {line!r}", slot=self.slot.label, line=line[:200])
                continue
            if isinstance(report, dict):
                self.supervisor.reported(self, report)

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except (error.ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason):
        self.serving = False
        if self.startup_timer is not None and self.startup_timer.active():
            self.startup_timer.cancel()
        self.supervisor.exited(self, reason)
        self.ended.callback(None)


class _NeverAccept(Factory):
    """The supervisor's factory for the public sockets: it stops reading them before any
    connection can arrive, so this only guards against a bug (closing what it is given)."""

    noisy = False

    def buildProtocol(self, addr):
        return None


class Supervisor(Service):
    """Starts, watches and stops the worker processes (see the module docstring)."""

    name = "workers"

    def __init__(self, reactor, config: Config, count: int, listeners: list[ListenerService], argv0=None):
        self.reactor = reactor
        self.config = config
        self.expected = count
        self.listeners = listeners
        self.argv0 = argv0 or sys.executable
        self.slots = [Slot(i) for i in range(1, count + 1)]
        self.policy = RestartPolicy(reactor, limit=max(5, count))
        self.restarts = 0
        self.stopping = False
        self.gave_up = False
        self.admin_dir: str | None = None
        self.tls_files: dict[str, bytes] = {}

    @property
    def accepting(self) -> bool:
        return bool(self.running and not self.stopping)

    # -- starting --------------------------------------------------------------------

    def privilegedStartService(self):
        """Read the TLS files now, before twistd drops privileges (``--uid``), as a single
        process reads them: the workers, started later as the unprivileged user, get the bytes."""
        super().privilegedStartService()
        for listener in self.config.listeners:
            if listener.is_tls:
                try:
                    self.tls_files.update(endpoints.read_tls_files(listener.endpoint))
                except ValueError as e:
                    raise SystemExit(f"wsfw: [listen:{listener.name}] {e}")

    def startService(self):
        super().startService()
        if self.config.admin.enabled:
            # The workers' admin sockets: a fresh 0700 directory, in systemd's RuntimeDirectory= if any.
            base = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
            try:
                self.admin_dir = tempfile.mkdtemp(prefix="wsfw-workers-", dir=base)
            except OSError as e:
                raise SystemExit(f"wsfw: cannot create a directory for the workers' admin sockets in "
                                 f"{base or tempfile.gettempdir()}: {e.strerror}")
        log.info("starting {n} workers (supervisor pid {pid})", n=self.expected, pid=os.getpid(), event="workers")
        for slot in self.slots:
            self.spawn(slot)

    def _bootstrap(self) -> bytes:
        return json.dumps({
            "config": self.config.path,
            "text": self.config.text,
            "tls_files": {path: base64.b64encode(data).decode("ascii") for path, data in self.tls_files.items()},
        }).encode("utf-8")

    def _admin_endpoint(self, slot: Slot) -> str | None:
        if self.admin_dir is None:
            return None
        path = os.path.join(self.admin_dir, f"worker-{slot.label}.sock")
        if os.path.exists(path):
            os.unlink(path)  # left by a worker that died
        return f"unix:{quoteStringArgument(path)}:mode=600"

    def spawn(self, slot: Slot) -> None:
        slot.pending = None
        child_fds = {0: "w", 1: 1, 2: 2, STATUS_FD: "r"}
        # -P: the working directory does not go first on the worker's sys.path (as with ``-m`` it
        # would), so the worker imports the same wsfw the supervisor runs, wherever it was started.
        argv = [self.argv0, "-P", "-m", "wsfw.worker", "--worker", slot.label, "--parent", str(os.getpid()),
                "--status-fd", str(STATUS_FD)]
        for n, service in enumerate(self.listeners):
            child_fds[FIRST_SOCKET_FD + n] = sockets.fileno_for(service.port, slot.index)
            argv += ["--listen", f"{service.label}={FIRST_SOCKET_FD + n}"]
        admin = self._admin_endpoint(slot)
        if admin is not None:
            argv += ["--admin", admin]
        process = WorkerProcess(self, slot, self._bootstrap(), self.reactor)
        slot.process = process
        try:
            self.reactor.spawnProcess(process, self.argv0, argv, env=dict(os.environ), childFDs=child_fds)
        except OSError as e:  # out of processes, memory or descriptors: a death like any other
            slot.process = None
            self._died(slot, f"worker {slot.label} could not be started ({e.strerror or e})", 0.0,
                       how=str(e))
            return
        process.startup_timer = self.reactor.callLater(STARTUP_TIMEOUT, self._not_serving, process)
        log.info("worker {slot} started (pid {pid}){again}", slot=slot.label, pid=process.pid,
                 again=f", restart {self.restarts}" if self.restarts else "", event="worker_started")

    def _not_serving(self, process: WorkerProcess) -> None:
        if not process.serving and not process.ended.called:
            log.error("worker {slot} (pid {pid}) is not serving {t:g}s after it started: SIGKILL",
                      slot=process.slot.label, pid=process.pid, t=STARTUP_TIMEOUT, event="worker_stuck")
            process.signal(signal.SIGKILL)

    def reported(self, process: WorkerProcess, report: dict) -> None:
        if report.get("event") == "serving" and process is process.slot.process:
            if process.startup_timer is not None and process.startup_timer.active():
                process.startup_timer.cancel()
            process.admin = report.get("admin") or None
            process.serving = True
            log.info("worker {slot} (pid {pid}) is serving", slot=process.slot.label, pid=process.pid,
                     event="worker_serving")

    # -- deaths --------------------------------------------------------------------

    def exited(self, process: WorkerProcess, reason) -> None:
        slot = process.slot
        if slot.process is process:
            slot.process = None
        how = describe_exit(reason)
        lived = self.reactor.seconds() - process.started
        if self.stopping:
            log.info("worker {slot} (pid {pid}) {how}", slot=slot.label, pid=process.pid, how=how,
                     event="worker_stopped")
            return
        self._died(slot, f"worker {slot.label} (pid {process.pid}) {how} after {lived:.1f}s", lived,
                   pid=process.pid, how=how)

    def _died(self, slot: Slot, what: str, lived: float, **fields) -> None:
        """Start a replacement after the backoff, or give up (see :class:`RestartPolicy`); ``fields``
        go into the log event (JSON logs keep the pid and exit status as fields)."""
        delay = self.policy.died(slot.index, lived)
        if delay is None:
            log.critical("{what}: workers died {n} times within {window:g}s, so restarting them is not "
                         "helping. Giving up: wsfw exits with status {status} (systemd's Restart=on-failure "
                         "starts it afresh)", what=what, slot=slot.label, n=len(self.policy.deaths),
                         window=self.policy.window, status=EXIT_GAVE_UP, lived=lived, event="workers_gave_up",
                         **fields)
            self.give_up()
            return
        log.error("{what}; starting a replacement in {delay:g}s", what=what, slot=slot.label, delay=delay,
                  lived=lived, event="worker_died", **fields)
        slot.pending = self.reactor.callLater(delay, self._restart, slot)

    def _restart(self, slot: Slot) -> None:
        slot.pending = None
        if self.stopping:
            return
        self.restarts += 1
        self.spawn(slot)

    def give_up(self) -> None:
        """Stop everything and leave twistd with a failure status: once the reactor has
        stopped (the remaining workers stopped with it), exit with :data:`EXIT_GAVE_UP`."""
        if self.gave_up:
            return
        self.gave_up = True

        def leave():
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(EXIT_GAVE_UP)

        self.reactor.addSystemEventTrigger("after", "shutdown", leave)
        self.reactor.stop()

    # -- signals and stopping ------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: validate the config on disk; when it loads, workers started from now on get it
        and every serving worker is told to reload (each re-reads and logs its policy version).
        When it does not, nothing is signalled: every worker keeps the policy it runs."""
        new = load_again(self.config, "the workers keep")
        if new is None:
            return
        log.info("SIGHUP: {path} is valid (policy {version}): the workers reload it{pending}", path=new.path,
                 version=new.version, pending=restart_note(restart_only_changes(self.config, new)), event="reload")
        self.config = new
        self.forward(signal.SIGHUP)

    def forward(self, signum: int) -> None:
        """Pass SIGUSR1 or SIGHUP on to every serving worker. One still starting may not handle
        them yet (their default action ends a process); it opened its files moments ago anyway."""
        for slot in self.slots:
            if slot.process is not None and slot.process.serving:
                slot.process.signal(signum)

    def stopService(self):
        super().stopService()
        self.stopping = True
        for slot in self.slots:
            if slot.pending is not None and slot.pending.active():
                slot.pending.cancel()
            slot.pending = None
        running = [slot.process for slot in self.slots if slot.process is not None]
        grace = self.config.timeouts.shutdown_drain + STOP_MARGIN
        if running:
            log.info("stopping {n} worker(s) (SIGTERM), waiting up to {grace:g}s", n=len(running), grace=grace,
                     event="workers_stopping")
        for process in running:
            process.signal(signal.SIGTERM)
        timer = self.reactor.callLater(grace, self._kill, running)
        done = defer.DeferredList([p.ended for p in running])

        def finished(result):
            if timer.active():
                timer.cancel()
            if self.admin_dir is not None:
                shutil.rmtree(self.admin_dir, ignore_errors=True)
            return None

        return done.addBoth(finished)

    def _kill(self, processes: list[WorkerProcess]) -> None:
        for process in processes:
            if not process.ended.called:
                log.warn("worker {slot} (pid {pid}) still running after the drain: SIGKILL",
                         slot=process.slot.label, pid=process.pid, event="worker_killed")
                process.signal(signal.SIGKILL)


class SupervisorService(MultiService):
    """The supervisor's service tree: logs, signals, admin, the bound public sockets, the workers.

    Children start in that order (the sockets are bound before any worker
    starts) and stop in reverse: the workers first, draining, while the admin
    listener still answers (``/readyz`` 503), then the sockets, then the rest.
    """

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.listeners: list[ListenerService] = []
        self.admin: ListenerService | None = None
        self.supervisor: Supervisor | None = None

    @property
    def ready(self) -> defer.Deferred:
        return defer.gatherResults([listener.bound for listener in self.listeners])

    def startService(self):
        log.info("wsfw starting with {config}: {n} listener(s), {m} route(s), {w} workers",
                 config=self.config.path, n=len(self.config.listeners), m=len(self.config.routes),
                 w=self.supervisor.expected if self.supervisor else 0)
        super().startService()


def build_supervisor(config: Config, reactor, count: int) -> SupervisorService:
    """The daemon as a supervisor of ``count`` workers (``tap.makeService`` when ``workers`` > 1)."""
    top = SupervisorService(config)
    log_service = LogService(config)
    log_service.setServiceParent(top)
    listeners: list[ListenerService] = []
    supervisor = Supervisor(reactor, config, count, listeners)
    SignalService(reactor, [log_service], supervisor.reload, forward=supervisor.forward).setServiceParent(top)
    if config.admin.enabled:
        from wsfw.admin.fleet import build_fleet_site

        site = build_fleet_site(config=config, supervisor=supervisor, reactor=reactor)
        OnStop("admin-clients", site.resource.close).setServiceParent(top)
        admin = ListenerService("admin", config.admin.endpoint,
                                endpoints.server_endpoint(reactor, config.admin.endpoint), site, section="admin")
        admin.setServiceParent(top)
        top.admin = admin
    never = _NeverAccept()
    for listener in config.listeners:
        service = ListenerService(listener.name, listener.endpoint,
                                  sockets.supervisor_endpoint(reactor, listener.endpoint, count), never)
        service.bound.addCallback(_stop_reading)
        service.setServiceParent(top)
        listeners.append(service)
    top.listeners = listeners
    supervisor.setServiceParent(top)
    top.supervisor = supervisor
    return top


def _stop_reading(port):
    """The supervisor holds the listening socket for its workers and never accepts on it."""
    port.stopReading()
    return port
