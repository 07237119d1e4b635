"""The supervisor's admin listener: each worker's admin data, fetched and merged per request.

With ``[wsfw] workers`` above 1 every worker runs the ordinary admin site on a
private unix socket (in a directory only wsfw's user can enter) and tells the
supervisor where. The supervisor's admin listener, the only one operators
see, answers ``/metrics``, ``/api/stats``, ``/api/events`` and ``/readyz``
by asking every worker (``twisted.web.client.Agent``, a short timeout) and
merging the answers (:mod:`wsfw.admin.merge`); ``/healthz``, the dashboard's
files, the Host and method checks and the security headers are the
single-process site's own. A worker that does not answer in time is left out
of the answer, and ``wsfw_worker_up{worker}`` says so, rather than holding up
a Prometheus scrape.

Events get ids of the supervisor's own: each worker numbers its events from 1,
so the supervisor keeps an event ring of its own, takes each worker's events
newer than the last it saw from that worker process, and numbers them in
time order. ``?since=`` (what the dashboard polls with) then means what it
means on a single process, and events outlive the worker that saw them.
"""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory, readBody
from twisted.web.http_headers import Headers

from wsfw import __version__
from wsfw.admin import merge
from wsfw.admin.site import (
    TOP_MAX,
    AdminResource,
    AdminSite,
    _json,
    _plain,
)
from wsfw.admin.stats import STEP, WINDOW, EventRing
from wsfw.logs import logger

log = logger("wsfw.admin")

#: How long the supervisor waits for a worker's admin answer.
WORKER_TIMEOUT = 2.0


class _OneEndpoint:
    """``Agent.usingEndpointFactory``'s factory for one worker: every URI goes to its socket."""

    def __init__(self, reactor, description: str):
        self.endpoint = clientFromString(reactor, description)

    def endpointForURI(self, uri):
        return self.endpoint


class _QuietClientFactory(_HTTP11ClientFactory):
    """No "Starting factory" / "Stopping factory" lines for each connection to a worker."""

    noisy = False


class WorkerAdmin:
    """HTTP client of one worker's private admin socket (``description``: a client endpoint string).

    Connections are kept between requests (the dashboard asks every two
    seconds); the pool is the worker's own, because the pool's key is the
    URI's host, which is ``localhost`` for every worker.
    """

    def __init__(self, reactor, description: str, timeout: float = WORKER_TIMEOUT):
        self.reactor = reactor
        self.description = description
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 2
        self.pool._factory = _QuietClientFactory  # Twisted's documented-in-tests hook for the factory
        self.agent = Agent.usingEndpointFactory(reactor, _OneEndpoint(reactor, description), pool=self.pool)

    def close(self) -> defer.Deferred:
        return self.pool.closeCachedConnections()

    def get(self, path: str) -> defer.Deferred:
        """``(status, body)`` of ``GET path``; fails on a connection error or after ``timeout``.

        The Host is ``localhost``: the worker's site checks it as the admin
        listener always does (no DNS names, against rebinding)."""
        d = self.agent.request(b"GET", b"http://localhost" + path.encode("ascii"),
                               Headers({b"user-agent": [b"wsfw-supervisor"]}))
        d.addCallback(lambda response: readBody(response).addCallback(lambda body: (response.code, body)))
        return d.addTimeout(self.timeout, self.reactor)


def _json_field(body: bytes, key: str):
    """``key`` of a worker's JSON answer, or None when it is not JSON (a worker that failed)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) else None


class FleetAdminResource(AdminResource):
    """The admin paths of a supervisor, answered from its workers (see the module docstring).

    ``supervisor`` is a :class:`wsfw.supervisor.Supervisor`: its ``slots``
    (``label``, ``pid``, ``admin``: the reported endpoint or None), ``expected``,
    ``restarts``, ``accepting`` and ``listeners``.
    """

    def __init__(self, *, config, supervisor, clock, timeout: float = WORKER_TIMEOUT):
        super().__init__(config=config, metrics=None, history=None, events=EventRing(config.admin.events),
                         readiness=None, clock=clock)
        self.supervisor = supervisor
        self.reactor = clock
        self.timeout = timeout
        self._clients: dict[str, WorkerAdmin] = {}
        self._cursors: dict[tuple[str, int], int] = {}
        self._process = ProcessCollector(registry=None)
        self._platform = PlatformCollector(registry=None)

    # -- asking the workers ------------------------------------------------------

    def _client(self, description: str) -> WorkerAdmin:
        client = self._clients.get(description)
        if client is None:
            current = {slot.admin for slot in self.supervisor.slots}
            for old in [d for d in self._clients if d not in current]:
                self._clients.pop(old).close()
            client = self._clients[description] = WorkerAdmin(self.reactor, description, self.timeout)
        return client

    def close(self) -> defer.Deferred:
        """Drop the kept connections to the workers (the supervisor is stopping)."""
        clients, self._clients = self._clients, {}
        return defer.DeferredList([client.close() for client in clients.values()])

    def ask(self, path: str | None = None, paths=None) -> defer.Deferred:
        """``[(slot, status, body or None)]`` for every worker slot, in slot order (``paths``:
        a function of the slot, for per-worker queries). A slot with no serving worker, a
        connection error or a timeout gives ``(slot, None, None)``."""
        slots = list(self.supervisor.slots)

        def one(slot):
            if slot.admin is None:
                return defer.succeed((slot, None, None))
            d = self._client(slot.admin).get(paths(slot) if paths else path)
            d.addCallbacks(lambda result: (slot, result[0], result[1]), lambda failure: (slot, None, None))
            return d

        return defer.gatherResults([one(slot) for slot in slots])

    # -- the paths -----------------------------------------------------------------

    def readyz(self, request):
        def answer(results):
            workers = {slot.label: code == 200 for slot, code, _ in results}
            listeners = {service.label: service.port is not None for service in self.supervisor.listeners}
            accepting = self.supervisor.accepting
            ready = bool(accepting and workers and all(workers.values()) and all(listeners.values())
                         and len(workers) == self.supervisor.expected)
            detail = {"ready": ready, "config": self.config.path, "listeners": listeners, "accepting": accepting,
                      "workers": workers}
            clusters = [_json_field(body, "cluster") for _, code, body in results if body]
            if any(clusters):
                # Each worker has its own Redis link: the fleet is "up" only if every one is.
                detail["cluster"] = "up" if all(c == "up" for c in clusters) else "degraded"
            return _json(request, detail, 200 if ready else 503)

        return self._later(request, self.ask("/readyz").addCallback(answer))

    def render_metrics(self, request):
        def answer(results):
            parts = [("supervisor", list(self._process.collect()) + list(self._platform.collect()))]
            up = GaugeMetricFamily("wsfw_worker_up", "1 when the worker's metrics are in this scrape, 0 when it "
                                   "was not serving or did not answer in time.", labels=[merge.WORKER_LABEL])
            for slot, code, body in results:
                families = None
                if code == 200:
                    try:
                        families = list(text_string_to_metric_families(body.decode("utf-8")))
                    except Exception:
                        log.warn("worker {worker}: unparsable /metrics", worker=slot.label)
                up.add_metric([slot.label], 1 if families is not None else 0)
                if families is not None:
                    parts.append((slot.label, families))
            fleet = [
                GaugeMetricFamily("wsfw_workers", "Worker processes running now.",
                                  value=sum(1 for slot in self.supervisor.slots if slot.pid is not None)),
                CounterMetricFamily("wsfw_worker_restarts", "Workers started again after one died.",
                                    value=self.supervisor.restarts),
                up,
            ]
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.setHeader(b"cache-control", b"no-store")
            return merge.exposition(fleet + merge.merge_families(parts))

        return self._later(request, self.ask("/metrics").addCallback(answer))

    def stats(self, request):
        def answer(results):
            parts = []
            for slot, code, body in results:
                if code == 200:
                    try:
                        parts.append((slot.label, json.loads(body)))
                    except ValueError:
                        log.warn("worker {worker}: unparsable /api/stats", worker=slot.label)
            now = self.now()
            ready = (self.supervisor.accepting and len(parts) == self.supervisor.expected
                     and all(body.get("ready") for _, body in parts))
            base = {"version": __version__, "now": now, "uptime": now - self.started, "ready": bool(ready),
                    "step": STEP, "window": WINDOW,
                    "routes": [{"name": r.name, "path": r.path, "host": r.host, "mode": self.config.mode_for(r)}
                               for r in self.config.routes]}
            return _json(request, merge.merge_stats(parts, base, STEP))

        return self._later(request, self.ask(f"/api/stats?top={TOP_MAX}").addCallback(answer))

    def local_events(self, request, size: int, limit: int, since: int, blocked: bool):
        def path(slot):
            return f"/api/events?limit={size}&since={self._cursors.get((slot.label, slot.pid), 0)}"

        def answer(results):
            self.ingest(results)
            return _json(request, {"events": self.events.recent(limit, since, blocked),
                                   "last_id": self.events.last_id, "size": size})

        return self._later(request, self.ask(paths=path).addCallback(answer))

    def fleet_events(self, request, limit: int, blocked: bool) -> defer.Deferred:
        """``?scope=fleet``: every worker reads the same Redis Stream; the first that answers speaks."""
        path = f"/api/events?scope=fleet&limit={limit}" + ("&blocked=1" if blocked else "")

        def answer(results):
            for _, status, body in results:
                if status is not None:
                    request.setResponseCode(status)
                    request.setHeader(b"content-type", b"application/json")
                    return body
            return _plain(request, 503, "no worker answered")

        return self.ask(path).addCallback(answer)

    def ingest(self, results) -> None:
        """Number the workers' events not seen before, oldest first, into the supervisor's ring.

        Cursors are per worker *process* (label and pid): a replacement numbers
        its events from 1 again. Two requests answered at once cannot add an
        event twice: the cursor moves before the next answer is looked at.
        """
        fresh = []
        live = set()
        for slot, code, body in results:
            key = (slot.label, slot.pid)
            live.add(key)
            if code != 200:
                continue
            try:
                events = json.loads(body).get("events") or []
            except (ValueError, AttributeError):
                continue
            cursor = self._cursors.get(key, 0)
            new = [e for e in events if isinstance(e, dict) and isinstance(e.get("id"), int) and e["id"] > cursor]
            if new:
                self._cursors[key] = max(e["id"] for e in new)
                fresh.extend({**e, "worker": slot.label} for e in new)
        self._cursors = {key: value for key, value in self._cursors.items() if key in live}
        fresh.sort(key=lambda e: (e.get("time") or 0, e["worker"], e["id"]))
        for event in fresh:
            self.events.append(event)


def build_fleet_site(*, config, supervisor, reactor) -> AdminSite:
    return AdminSite(FleetAdminResource(config=config, supervisor=supervisor, clock=reactor), reactor)
