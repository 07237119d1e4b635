"""Hot reload: SIGHUP re-reads the config and its rule files and swaps the policy in place.

What a request meets is one :class:`Generation` (routes, their WebSocket and
HTTP resources, their pipelines), built from one validated config. A reload
builds the next generation beside the current one and swaps the pointer the
public ``Dispatch`` reads, so a request sees either the old policy or the new,
never a mix, and nothing is torn down: open sockets keep their relays.

Open connections still get the new policy from their next message on: each
route's hook is a :class:`HookSwitch`, whose target is the route's current
pipeline, and a new pipeline adopts the old one's per-connection decoder state
(a Socket.IO attachment in flight, the encoding a SignalR handshake chose).
Compiling the signature database costs seconds, so inspectors are only rebuilt
when ``[inspection]`` or an ``[inspector:*]`` section changed.

Sockets, processes and files are not reloadable (``[listen:*]``, ``[admin]``,
``[wsfw] workers``, ``[log]``): a reload that changes them applies the rest
and says which sections need a restart, as nginx does for its listeners.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from zope.interface import implementer

from wsfw import config_ini, logs
from wsfw.config import Config
from wsfw.errors import ConfigError
from wsfw.interfaces import IMessageHook

log = logs.logger("wsfw.reload")


@implementer(IMessageHook)
class HookSwitch:
    """A route's hook as relays hold it; ``current`` is swapped by a reload."""

    __slots__ = ("current",)

    def __init__(self, current):
        self.current = current

    def inspect_message(self, view):
        return self.current.inspect_message(view)

    def connection_closed(self, conn_id: str) -> None:
        closed = getattr(self.current, "connection_closed", None)
        if closed is not None:
            closed(conn_id)

    def __getattr__(self, name):  # what the current pipeline offers (its mode, its policy)
        return getattr(self.current, name)


class Generation:
    """Everything a request is dispatched to, built from one config."""

    def __init__(self, config: Config, websockets: dict, proxies: dict, pipelines: dict):
        self.config = config
        self.websockets = websockets
        self.proxies = proxies
        self.pipelines = pipelines


class Generations:
    """Builds generations; keeps what outlives them (hook switches, compiled inspectors)."""

    def __init__(self, reactor, audit, pool, tracker, metrics=None, hook=None):
        self.reactor = reactor
        self.audit = audit
        self.pool = pool
        self.tracker = tracker
        self.metrics = metrics
        self.hook = hook  # replaces every route's pipeline (tests, embedders)
        self.switches: dict[str, HookSwitch] = {}
        self.hooks: dict[str, object] = {}  # what relays hold: the switch, timed when metrics are on
        self._inspectors: tuple | None = None  # (the inspection settings, the inspectors built from them)
        self.current: Generation | None = None

    def inspectors(self, config: Config) -> list:
        key = (config.inspection.inspectors, config.inspection.options)
        if self._inspectors is None or self._inspectors[0] != key:
            from wsfw.inspection.pipeline import build_inspectors

            self._inspectors = (key, build_inspectors(config.inspection))
        return self._inspectors[1]

    def build(self, config: Config) -> Generation:
        from wsfw.http.proxy import ProxyResource
        from wsfw.inspection.pipeline import build_pipelines
        from wsfw.relay.frontend import FrontendFactory

        # With a hook given, no pipeline is built: building one compiles the detectors.
        pipelines = build_pipelines(config, self.audit, self.inspectors(config)) if self.hook is None else {}
        previous = self.current
        websockets, proxies = {}, {}
        for route in config.routes:
            target = pipelines.get(route.name, self.hook)
            switch = self.switches.get(route.name)
            if switch is None:
                switch = self.switches[route.name] = HookSwitch(target)
                hook = switch if self.metrics is None else self.metrics.timed(route.name, switch)
                self.hooks[route.name] = hook
            else:
                adopt = getattr(target, "adopt", None)
                if adopt is not None:
                    adopt(switch.current)
                switch.current = target
            websockets[route.name] = WebSocketResource(
                FrontendFactory(config, route, self.hooks[route.name], self.reactor, self.tracker))
            proxy = proxies[route.name] = ProxyResource(config, route, self.reactor, self.pool,
                                                        pipelines.get(route.name))
            if previous is not None and route.name in previous.proxies:
                proxy.sessions = previous.proxies[route.name].sessions  # long-polling sessions ended by a block
        self.current = Generation(config, websockets, proxies, pipelines)
        return self.current


#: Sections a reload cannot apply to a running daemon: they are sockets, processes or files.
RESTART_ONLY = (("listeners", "[listen:*]"), ("admin", "[admin]"), ("log", "[log]"), ("cluster", "[cluster]"))


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The sections that changed between ``old`` and ``new`` but only apply on a restart."""
    changed = [label for attr, label in RESTART_ONLY if getattr(old, attr) != getattr(new, attr)]
    if old.settings.workers != new.settings.workers:
        changed.append("[wsfw] workers")
    return changed


def restart_note(pending: list[str]) -> str:
    """What a reload log line adds about ``restart_only_changes``."""
    return f"; changes to {', '.join(pending)} apply on restart" if pending else ""


def load_again(old: Config, keeping: str) -> Config | None:
    """SIGHUP's first step, in a daemon or a supervisor: the file ``old`` came from, loaded
    again, or None with every problem logged (``keeping``: who keeps ``old``'s policy)."""
    try:
        return config_ini.load(old.path)
    except ConfigError as e:
        log.error("SIGHUP: {path} has {n} problem(s); {keeping} policy {version}:\n{problems}", path=old.path,
                  n=len(e.problems), keeping=keeping, version=old.version, problems=str(e), event="reload_failed")
        return None


class Reloader:
    """Re-reads the config file and, when it is valid, swaps the generation ``dispatch`` serves."""

    def __init__(self, config: Config, generations: Generations, dispatch, on_reload=None):
        self.config = config
        self.generations = generations
        self.dispatch = dispatch
        self.on_reload = on_reload  # called with the new Config (the guard's limits, the stats' version)

    def reload(self) -> bool:
        """One reload: True when the new config now applies, False when the old one stays."""
        old = self.config
        path = old.path
        new = load_again(old, "still running")
        if new is None:
            return False
        try:
            generation = self.generations.build(new)
        except Exception:
            log.failure("SIGHUP: building the new policy from {path} failed; still running policy {version}",
                        path=path, version=old.version, event="reload_failed")
            return False
        self.dispatch.generation = generation
        self.config = new
        if self.on_reload is not None:
            self.on_reload(new)
        pending = restart_only_changes(old, new)
        log.info("SIGHUP: reloaded {path}: policy {old_version} -> {version} ({routes} route(s), {rules} rule file(s))"
                 "{pending}", path=path, old_version=old.version, version=new.version, routes=len(new.routes),
                 rules=len(getattr(new.policy, "files", ())),
                 pending=restart_note(pending), restart_needed=pending, event="reloaded")
        return True
