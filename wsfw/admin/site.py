"""The admin ``Site``: read-only HTTP for operators and their monitoring.

``/healthz``   200 while the reactor answers (liveness)
``/readyz``    200 when every public listener is bound and wsfw accepts connections, else 503
``/metrics``   Prometheus exposition of the private registry
``/api/stats`` totals, per-step rates, top rules and clients (what the dashboard draws)
``/api/events`` recent audit events, newest first (``?limit=``, ``?since=``, ``?blocked=1``;
               ``?scope=fleet``: every node's, from the fleet's Redis Stream)
``/``           the dashboard (``/static/...`` holds its script and style sheet)

``/metrics`` is rendered with ``generate_latest`` here, in the reactor thread,
rather than through ``prometheus_client.twisted.MetricsResource``: that one
imports the global reactor at import time and renders through WSGI in the
thread pool, where reading the relays' counters would race the reactor.

Every response carries a strict Content-Security-Policy (no inline script or
style: the page's JavaScript and CSS are files served here), ``nosniff`` and
no-referrer. With the listener on loopback, requests must name an IP address
or ``localhost`` as their Host, so a web page cannot reach the admin data
through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import json
import time
from importlib import resources
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet import defer
from twisted.web import resource, server

from wsfw import __version__
from wsfw.logs import logger

log = logger("wsfw.admin")

CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"server", b"wsfw"),
)
STATIC = {
    "/": ("index.html", b"text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", b"image/svg+xml"),
}
EVENTS_DEFAULT = 50
TOP = 10
#: ``/api/stats?top=N`` bound: a supervisor asks each worker for more than it shows,
#: so the merged top ten is right even when the workers' own top tens differ.
TOP_MAX = 100


def _load_static() -> dict[str, tuple[bytes, bytes]]:
    folder = resources.files("wsfw.admin") / "static"
    return {path: ((folder / name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()}


def host_is_local(host: bytes | None) -> bool:
    """Whether a Host header names this machine by address or as ``localhost`` (not a DNS name)."""
    if not host:
        return True  # HTTP/1.0 without Host: nothing a browser would send
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    if text in ("localhost", "localhost."):
        return True
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class AdminResource(resource.Resource):
    """Every admin path, answered from one ``render`` (GET and HEAD only)."""

    isLeaf = True

    def __init__(self, *, config, metrics, history, events, readiness, clock, fleet=None):
        super().__init__()
        self.config = config
        self.fleet = fleet  # wsfw.cluster.events.FleetEvents: the fleet's stream, with [cluster] redis
        self.metrics = metrics
        self.history = history
        self.events = events
        self.readiness = readiness
        self.now = getattr(clock, "seconds", time.time)  # a MemoryReactor (service tests) has no clock
        self.started = self.now()
        self.static = _load_static()
        self.handlers = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.render_metrics,
                         "/api/stats": self.stats, "/api/events": self.recent_events}

    def render(self, request):
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        if not self.config.admin.allow_remote and not host_is_local(request.getHeader(b"host")):
            return _plain(request, 421, "the admin listener answers only to an IP address or localhost")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _plain(request, 405, "the admin listener is read-only")
        path = request.path.decode("latin-1")
        handler = self.handlers.get(path)
        if handler is not None:
            return handler(request)
        found = self.static.get(path)
        if found is None:
            return _plain(request, 404, "not found")
        body, ctype = found
        request.setHeader(b"content-type", ctype)
        request.setHeader(b"cache-control", b"no-cache")
        return body

    # -- probes ------------------------------------------------------------------

    def healthz(self, request):
        return _plain(request, 200, "ok")

    def readyz(self, request):
        ready, detail = self.readiness()
        return _json(request, {"ready": ready, **detail}, 200 if ready else 503)

    def render_metrics(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self.metrics.registry)

    # -- the dashboard's data ------------------------------------------------------

    def stats(self, request):
        try:
            top = top_count(request)
        except ValueError:
            return _plain(request, 400, "top must be a whole number")
        metrics, history = self.metrics, self.history
        live = metrics.live()
        ready, _ = self.readiness()
        now = self.now()
        body = {
            "version": __version__,
            "now": now,
            "uptime": now - self.started,
            "ready": ready,
            "step": history.step,
            "window": history.window,
            "routes": [{"name": r.name, "path": r.path, "host": r.host, "mode": self.config.mode_for(r)}
                       for r in self.config.routes],
            "totals": {
                "connections_open": live["connections_open"],
                "handshakes_pending": live["handshakes_pending"],
                "messages": live["messages"],
                "bytes": live["bytes"],
                "withheld": live["dropped"],
                "blocked": metrics.blocked,
                "detected": metrics.detected,
                "blocked_window": history.recent_total(3, history.window, metrics.blocked),
                "handshakes_ok": metrics.handshakes_ok,
                "handshakes_failed": metrics.handshakes_failed,
                "upstream_failures": metrics.upstream_failure_count,
                "http_responses": metrics.http_responses,
                "inspector_errors": metrics.inspector_error_count,
            },
            "series": history.series(),
            "top_rules": [{"rule": rule, "class": cls, "count": n} for (rule, cls), n in metrics.rule_hits.top(top)],
            "top_clients": [{"client": client, "count": n} for client, n in metrics.client_hits.top(top)],
        }
        return _json(request, body)

    def recent_events(self, request):
        size = self.events.events.maxlen
        try:
            limit, since, blocked = events_query(request, size)
        except ValueError:
            return _plain(request, 400, "limit and since must be whole numbers")
        if query(request).get("scope") == ["fleet"]:
            return self._later(request, self.fleet_events(request, limit, blocked))
        return self.local_events(request, size, limit, since, blocked)

    def local_events(self, request, size: int, limit: int, since: int, blocked: bool):
        """This process's recent events (a supervisor's: its workers', merged)."""
        return _json(request, {"events": self.events.recent(limit, since, blocked), "last_id": self.events.last_id,
                               "size": size})


    def fleet_events(self, request, limit: int, blocked: bool) -> defer.Deferred:
        """``?scope=fleet``: the newest events of every node, from the fleet's Redis Stream."""
        if self.fleet is None:
            return defer.succeed(_plain(request, 404, "no fleet: [cluster] redis is not set"))

        def unavailable(failure):
            from wsfw.cluster.link import RedisUnavailable

            failure.trap(RedisUnavailable)
            return _json(request, {"error": f"Redis unavailable: {failure.getErrorMessage()}"}, 503)

        return self.fleet.recent(limit, blocked).addCallbacks(
            lambda events: _json(request, {"events": events, "scope": "fleet", "size": limit}), unavailable)

    def _later(self, request, d: defer.Deferred):
        """Finish ``request`` with what ``d`` fires with (the bytes a ``_json``/``_plain`` call made)."""
        gone = []
        request.notifyFinish().addBoth(gone.append)

        def write(body: bytes):
            if not gone:
                request.write(body)
                request.finish()

        def failed(failure):
            log.failure("admin: answering {path} failed", failure, path=request.path)
            if not gone:
                write(_plain(request, 500, "internal error"))

        d.addCallback(write).addErrback(failed)
        return server.NOT_DONE_YET


def query(request) -> dict[str, list[str]]:
    return parse_qs(request.uri.decode("latin-1").partition("?")[2])


def events_query(request, size: int) -> tuple[int, int, bool]:
    """``/api/events``' ``?limit=`` (1..size), ``?since=`` and ``?blocked=``; ``ValueError`` if not numbers."""
    args = query(request)
    limit = min(max(int(args.get("limit", [EVENTS_DEFAULT])[0]), 1), size)
    since = max(int(args.get("since", ["0"])[0]), 0)
    return limit, since, args.get("blocked", ["0"])[0] in ("1", "yes", "true")


def top_count(request) -> int:
    """``?top=N`` (default :data:`TOP`, at most :data:`TOP_MAX`); ``ValueError`` if not a number."""
    return min(max(int(query(request).get("top", [TOP])[0]), 1), TOP_MAX)


def _plain(request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return (text + "\n").encode("utf-8")


def _json(request, body, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    # ensure_ascii: every non-ASCII character escaped, so the bytes are plain ASCII whatever the excerpt held
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")


class AdminSite(server.Site):
    """The admin listener's ``Site``: quiet, no tracebacks, a short idle timeout."""

    noisy = False
    displayTracebacks = False

    def __init__(self, root, reactor):
        super().__init__(root, reactor=reactor, timeout=60)

    def log(self, request):
        """No access log: Prometheus scrapes and dashboard polls would drown the operational log."""


def build_site(*, config, metrics, history, events, readiness, reactor, fleet=None) -> AdminSite:
    return AdminSite(AdminResource(config=config, metrics=metrics, history=history, events=events, fleet=fleet,
                                   readiness=readiness, clock=reactor), reactor)

