"""Assembles the daemon from a validated config: ``build(config, reactor) -> MultiService``.

The reactor is a parameter (never imported at module level), so the same
assembly runs under twistd, in tests on the real reactor with port 0, and
against a ``MemoryReactor``.
"""

from __future__ import annotations

import signal
import threading

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from wsfw import endpoints, logs, loop
from wsfw.config import Config
from wsfw.guard import Guard
from wsfw.inspection.audit import Audit
from wsfw.http.site import Dispatch, PublicSite
from wsfw.reload import Generations, Reloader
from wsfw.relay.tracker import NO_OBSERVER, ConnectionTracker

log = logs.logger("wsfw.service")


class ListenerService(Service):
    """Binds one ``[listen:NAME]`` (or the ``[admin]``) endpoint; a bind failure stops startup with the reason."""

    def __init__(self, name: str, description: str, endpoint, factory, section: str | None = None):
        self.section = section or f"listen:{name}"
        self.setName(self.section)
        self.label = name
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port = None
        self.bound: defer.Deferred = defer.Deferred()

    def privilegedStartService(self):
        super().privilegedStartService()
        self._listen()

    def startService(self):
        super().startService()
        if self.port is None:
            self._listen()

    def _listen(self):
        failure = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._bound, failure.append)
        if failure:  # most endpoints bind synchronously: make twistd exit with the reason
            raise SystemExit(f"wsfw: [{self.section}] cannot listen on {self.description}: "
                             f"{failure[0].getErrorMessage()}")

    def _bound(self, port):
        self.port = port
        address = port.getHost()
        log.info("listening [{section}] on {host}:{port} ({description})", section=self.section, name=self.label,
                 host=getattr(address, "host", address), port=getattr(address, "port", ""),
                 description=self.description, event="listening")
        self.bound.callback(port)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class LogService(Service):
    """Applies ``[log]`` at start (level, files, syslog) and closes what it opened at stop."""

    name = "log"

    def __init__(self, config: Config):
        self.config = config
        self.tees: list = []

    def startService(self):
        super().startService()
        c = self.config.log
        logs.set_level(c.level)
        try:
            if c.file:
                self.tees.append(logs.tee_file(c.file, c.format, c.level))
            if c.json_file:
                self.tees.append(logs.tee_json_seq(c.json_file, c.level))
        except OSError as e:
            raise SystemExit(f"wsfw: [log] cannot open {e.filename}: {e.strerror}")
        if c.syslog:
            self.tees.append(logs.tee_syslog(c.syslog_facility, c.level))

    def reopen(self) -> None:
        for tee in self.tees:
            tee.reopen()

    def stopService(self):
        super().stopService()
        tees, self.tees = self.tees, []
        for tee in tees:
            tee.close()


class SignalService(Service):
    """SIGUSR1 reopens every file wsfw writes (logrotate); SIGHUP reloads the configuration.

    Python runs signal handlers between bytecodes of the main thread, at any
    point of the reactor's work, so the handlers only schedule the real work
    with ``reactor.callFromThread``. twistd installs its own SIGUSR1 handler
    (rotating ``--logfile``) when it writes to a file: that one still runs
    after ours. SIGHUP's default action would kill the daemon on
    ``systemctl reload`` (and systemd does not restart a process that SIGHUP
    ended); here it calls ``reload`` (a ``wsfw.reload.Reloader``'s).

    ``forward(signum)``, when given, is called with SIGUSR1 after the local
    handling is scheduled: a supervisor passes it on to its workers, which
    write files of their own. A supervisor's ``reload`` forwards SIGHUP
    itself, once it has found the new config valid.
    """

    name = "signals"

    def __init__(self, reactor, reopenable: list, reload, forward=None):
        self.reactor = reactor
        self.reopenable = reopenable
        self.reload = reload
        self.forward = forward
        self._previous: dict[int, object] = {}

    def startService(self):
        super().startService()
        if threading.current_thread() is not threading.main_thread():
            log.warn("not in the main thread: SIGUSR1 (reopen logs) and SIGHUP are not handled")
            return
        for signum, handler in ((signal.SIGUSR1, self._on_usr1), (signal.SIGHUP, self._on_hup)):
            self._previous[signum] = signal.signal(signum, handler)

    def stopService(self):
        super().stopService()
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _on_usr1(self, signum, frame):
        self.reactor.callFromThread(self.reopen)
        self._forward(signum)
        chained = self._previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    def _on_hup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def _forward(self, signum: int) -> None:
        if self.forward is not None:
            self.reactor.callFromThread(self.forward, signum)

    def reopen(self) -> None:
        failed = 0
        for target in self.reopenable:
            try:
                target.reopen()
            except OSError as e:
                failed += 1
                log.error("SIGUSR1: cannot reopen {path}: {why}", path=e.filename, why=e.strerror, event="reopen")
        log.info("SIGUSR1: log files reopened{failed}", failed=f" ({failed} failed)" if failed else "",
                 event="reopen")

class OnStop(Service):
    """Runs one clean-up when the daemon stops: closing the audit file, the upstream HTTP pool."""

    def __init__(self, name: str, cleanup):
        self.name = name
        self.cleanup = cleanup

    def stopService(self):
        super().stopService()
        return self.cleanup()


class WsfwService(MultiService):
    """The daemon. ``ready`` fires with the bound ports once every listener is up."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.listeners: list[ListenerService] = []
        self.tracker: ConnectionTracker | None = None
        self.admin: ListenerService | None = None
        self.metrics = None
        self.audit: Audit | None = None
        self.reloader: Reloader | None = None
        self.guard = None  # the wsfw.interfaces.IClientGuard: bans, connection caps, handshake rate
        self.cluster = None  # wsfw.cluster.link.RedisLink with [cluster] redis
        self.fleet_events = None  # wsfw.cluster.events.FleetEvents with it

    @property
    def ready(self) -> defer.Deferred:
        """Fires with the public listeners' ports once all are bound."""
        return defer.gatherResults([listener.bound for listener in self.listeners])

    def readiness(self) -> tuple[bool, dict]:
        """``/readyz``: config loaded (it was, or there would be no service), every public
        listener bound, and new connections accepted (not draining for shutdown)."""
        bound = {listener.label: listener.port is not None for listener in self.listeners}
        accepting = self.tracker is not None and self.tracker.accepting
        ready = bool(self.running and accepting and bound and all(bound.values()))
        detail = {"config": self.config.path, "listeners": bound, "accepting": accepting}
        if self.cluster is not None:
            # Still ready without Redis (the node relays and inspects on its own state), but say so.
            detail["cluster"] = "up" if self.cluster.up else "degraded"
        return ready, detail

    def startService(self):
        log.info("wsfw starting with {config} (policy {version}): {n} listener(s), {m} route(s)",
                 config=self.config.path, version=self.config.version, n=len(self.config.listeners),
                 m=len(self.config.routes), event="starting")
        super().startService()

    def stopService(self):
        """Stop in two stages: the public listeners and the connection drain first, then
        the rest. Meanwhile the admin listener still answers, and ``/readyz`` says 503."""
        Service.stopService(self)
        children = list(self)
        children.reverse()
        first = [s for s in children if s in self.listeners or s is self.tracker]
        rest = [s for s in children if s not in first]

        def stop(services):
            return defer.DeferredList([defer.maybeDeferred(s.stopService) for s in services])

        return stop(first).addCallback(lambda _: stop(rest))


def build(config: Config, reactor, hook=None, *, listen: dict | None = None,
          admin_endpoint: str | None = None) -> WsfwService:
    """The whole daemon as a service tree. Children stop in reverse order: listeners
    first (no new connections), then open connections drain while the admin
    listener still answers (``/readyz`` says 503), then the logs close.

    ``hook`` replaces the configured inspection pipelines on every route (tests
    and embedders); by default each route gets its own pipeline.

    A worker of a supervisor (``wsfw.worker``) passes ``listen``, the
    ``IStreamServerEndpoint`` of each ``[listen:NAME]`` by name (the sockets it
    inherited), and ``admin_endpoint``, its private admin socket, which only
    the supervisor reads. Without them every endpoint string is bound as given.
    """
    loop.install(reactor)  # every socket event costs less (wsfw/loop.py)
    top = WsfwService(config)
    log_service = LogService(config)
    log_service.setServiceParent(top)
    audit = top.audit = Audit(config.log.audit_file, config.log.format,
                              config.cluster.node if config.cluster.enabled else None)
    SignalService(reactor, [log_service, audit], lambda: top.reloader.reload()).setServiceParent(top)
    OnStop("audit", audit.close).setServiceParent(top)
    if config.cluster.enabled:
        from wsfw.cluster.events import FleetEvents
        from wsfw.cluster.link import RedisLink

        top.cluster = RedisLink(reactor, config.cluster)
        top.cluster.setServiceParent(top)
        top.fleet_events = FleetEvents(top.cluster, config.cluster.events_maxlen)
        audit.publisher.addObserver(top.fleet_events)
        top.fleet_events.setServiceParent(top)
    pool = HTTPConnectionPool(reactor, persistent=True)
    OnStop("http-pool", pool.closeCachedConnections).setServiceParent(top)
    metrics = None
    if config.admin.enabled:
        metrics = top.metrics = _admin(top, config, reactor, audit, admin_endpoint or config.admin.endpoint)
        metrics.cluster = top.cluster
        metrics.fleet_events = top.fleet_events
    tracker = ConnectionTracker(reactor, config.timeouts.shutdown_drain, metrics or NO_OBSERVER)
    tracker.setServiceParent(top)
    top.tracker = tracker
    if metrics is not None:
        metrics.tracker = tracker
    # One guard for the daemon's life: counts, buckets and bans survive reloads (reloaded() reconfigures it).
    if top.cluster is not None:
        from wsfw.cluster.guard import FleetGuard

        guard = top.guard = FleetGuard(config, reactor, top.cluster)
        guard.setServiceParent(top)  # stops (giving the fleet its slots back) before the Redis link
    else:
        guard = top.guard = Guard(config, reactor)
    audit.publisher.addObserver(guard.audit_event)
    if metrics is not None:
        metrics.guard = guard
    generations = Generations(reactor, audit, pool, tracker, metrics, hook)
    dispatch = Dispatch(generations.build(config), guard)
    site = PublicSite(dispatch, config, reactor, metrics.http_response if metrics is not None else None)

    def reloaded(new: Config) -> None:
        site.configure(new)
        guard.configure(new)
        if metrics is not None:
            metrics.reloaded(new)

    top.reloader = Reloader(config, generations, dispatch, on_reload=reloaded)
    for listener in config.listeners:
        if listen is not None and listener.name not in listen:
            continue  # a worker started after a reload added it: the supervisor binds it on restart
        endpoint = listen[listener.name] if listen is not None else endpoints.listener_endpoint(reactor, listener)
        service = ListenerService(listener.name, listener.endpoint, endpoint, site)
        service.setServiceParent(top)
        top.listeners.append(service)
    return top


def _admin(top: WsfwService, config: Config, reactor, audit: Audit, endpoint: str):
    """Metrics, the dashboard's history and event ring, and the admin listener (before the
    connection tracker, so it stops after the drain)."""
    from wsfw.admin.site import build_site
    from wsfw.admin.stats import EventRing, History
    from wsfw.metrics import Metrics

    metrics = Metrics(config)
    events = EventRing(config.admin.events)
    audit.publisher.addObserver(metrics.audit_event)
    audit.publisher.addObserver(events)
    history = History(metrics, reactor)
    history.setServiceParent(top)
    site = build_site(config=config, metrics=metrics, history=history, events=events, readiness=top.readiness,
                      reactor=reactor, fleet=top.fleet_events)
    admin = ListenerService("admin", endpoint, endpoints.server_endpoint(reactor, endpoint), site, section="admin")
    admin.setServiceParent(top)
    top.admin = admin
    return metrics
