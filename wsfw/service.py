"""Assembles the daemon from a validated config: ``build(config, reactor) -> MultiService``.

The reactor is a parameter (never imported at module level), so the same
assembly runs under twistd, in tests on the real reactor with port 0, and
against a ``MemoryReactor``.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from wsfw import endpoints, logs
from wsfw.config import Config
from wsfw.inspection.audit import Audit
from wsfw.inspection.pipeline import build_pipelines
from wsfw.http.proxy import ProxyResource
from wsfw.http.site import Dispatch, PublicSite
from wsfw.relay.frontend import FrontendFactory
from wsfw.relay.tracker import ConnectionTracker

log = logs.logger("wsfw.service")


class ListenerService(Service):
    """Binds one ``[listen:NAME]`` endpoint; a bind failure stops startup with the reason."""

    def __init__(self, name: str, description: str, endpoint, factory):
        self.setName(f"listen:{name}")
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
            raise SystemExit(f"wsfw: [listen:{self.label}] cannot listen on {self.description}: "
                             f"{failure[0].getErrorMessage()}")

    def _bound(self, port):
        self.port = port
        address = port.getHost()
        log.info("listening [listen:{name}] on {host}:{port} ({description})", name=self.label,
                 host=getattr(address, "host", address), port=getattr(address, "port", ""),
                 description=self.description, event="listening")
        self.bound.callback(port)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class _LogService(Service):
    """Applies ``[log]`` at start and closes the JSON file at stop."""

    name = "log"

    def __init__(self, config: Config):
        self.config = config
        self.json = None

    def startService(self):
        super().startService()
        logs.set_level(self.config.log.level)
        if self.config.log.json_file:
            self.json = logs.JSONFile(self.config.log.json_file, self.config.log.level)
            self.json.open()

    def stopService(self):
        super().stopService()
        if self.json is not None:
            self.json.close()


class _OnStop(Service):
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

    @property
    def ready(self) -> defer.Deferred:
        return defer.gatherResults([listener.bound for listener in self.listeners])

    def startService(self):
        log.info("wsfw starting with {config}: {n} listener(s), {m} route(s)", config=self.config.path,
                 n=len(self.config.listeners), m=len(self.config.routes))
        super().startService()


def build(config: Config, reactor, hook=None) -> WsfwService:
    """The whole daemon as a service tree. Children stop in reverse order: listeners
    first (no new connections), then open connections drain, then the logs close.

    ``hook`` replaces the configured inspection pipelines on every route (tests
    and embedders); by default each route gets its own pipeline.
    """
    top = WsfwService(config)
    _LogService(config).setServiceParent(top)
    audit = Audit(config.log.audit_file)
    _OnStop("audit", audit.close).setServiceParent(top)
    # With a hook given, no pipeline is built: building one compiles the detectors.
    pipelines = build_pipelines(config, audit) if hook is None else {}
    hooks = pipelines or {r.name: hook for r in config.routes}
    pool = HTTPConnectionPool(reactor, persistent=True)
    _OnStop("http-pool", pool.closeCachedConnections).setServiceParent(top)
    tracker = ConnectionTracker(reactor, config.timeouts.shutdown_drain)
    tracker.setServiceParent(top)
    top.tracker = tracker
    websockets = {r.name: WebSocketResource(FrontendFactory(config, r, hooks[r.name], reactor, tracker))
                  for r in config.routes}
    proxies = {r.name: ProxyResource(config, r, reactor, pool, pipelines.get(r.name))
               for r in config.routes}
    site = PublicSite(Dispatch(config, websockets, proxies), config, reactor)
    for listener in config.listeners:
        service = ListenerService(listener.name, listener.endpoint,
                                  endpoints.server_endpoint(reactor, listener.endpoint), site)
        service.setServiceParent(top)
        top.listeners.append(service)
    return top
