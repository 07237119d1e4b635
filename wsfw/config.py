"""The configuration model: frozen values, built only by ``wsfw.config_ini``.

Every value here is immutable so that a running connection can hold the config
it started with while a reload (``wsfw.reload``) swaps in a new one. ``__init__`` stays
dumb: parsing and validation live in the loader, which reports every problem at
once instead of failing on the first.
"""

from __future__ import annotations

import ipaddress

import attrs

MODES = ("block", "detect", "off")
#: Route ``framing =`` values. ``auto`` = by negotiated subprotocol, then sniffed
#: per message; the rest name a decoder in ``wsfw.decoders`` (a test keeps the two in step).
FRAMINGS = ("auto", "text", "json", "socketio", "raw", "signalr", "signalr-msgpack", "stomp", "wamp", "wamp-msgpack",
            "wamp-cbor", "graphqlws", "jsonrpc", "actioncable", "phoenix", "mqtt", "msgpack", "cbor", "bson")
COMPRESSION = ("off", "client", "upstream", "both")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
LOG_FORMATS = ("json", "text")
SYSLOG_FACILITIES = ("daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
                     "local7")
#: Where the admin listener goes unless configured otherwise: loopback only,
#: so metrics, events and the dashboard are never public by accident.
DEFAULT_ADMIN_ENDPOINT = "tcp:9180:interface=127.0.0.1"
#: Bounds of ``[wsfw] workers``. Past a few dozen reactors the supervisor's
#: merged /metrics (one scrape per worker) and the shared accept queue stop
#: scaling; 64 is far beyond the cores a single WebSocket proxy host uses.
WORKERS_MAX = 64


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets, a pinned
    benchmark) where the platform has one, else every CPU the machine has."""
    import os

    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


@attrs.frozen
class Settings:
    """``[wsfw]``: daemon-wide behaviour."""

    on_inspection_error: str = "close"
    mode: str = "block"
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    expose_reason: bool = False
    #: Worker processes; None is ``auto`` (one per available CPU, resolved at start).
    workers: int | None = None

    def worker_count(self) -> int:
        """How many reactor processes to run: ``workers``, or for ``auto`` one per available CPU."""
        if self.workers is not None:
            return self.workers
        return min(available_cpus(), WORKERS_MAX)

    def is_trusted_proxy(self, address: str) -> bool:
        """Whether ``X-Forwarded-*`` headers from ``address`` may be kept and extended."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_proxies)


@attrs.frozen
class Listener:
    """``[listen:NAME]``: one public socket, given as a Twisted endpoint string.

    ``haproxy:`` in front of the string (as Twisted spells it) is kept apart as
    ``proxy_protocol``: every connection then starts with a PROXY protocol v1
    or v2 header from an L4 load balancer, which carries the real client
    address. ``endpoint`` is the socket itself, so everything that binds,
    compares or inherits sockets sees the same strings either way.
    """

    name: str
    endpoint: str
    proxy_protocol: bool = False

    @property
    def is_tls(self) -> bool:
        return self.endpoint.split(":", 1)[0] == "ssl"


@attrs.frozen
class UpstreamTLS:
    """Trust and identity used when dialling a ``wss://`` or ``https://`` upstream."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None


@attrs.frozen
class Upstream:
    """Where one side of a route goes: scheme, host, port and base path."""

    secure: bool
    host: str
    port: int
    path: str

    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


@attrs.frozen
class OriginPattern:
    """One ``origins =`` entry of a route: ``scheme://host[:port]``, lower-cased, with the
    scheme's default port filled in (so ``https://a.example`` and ``https://a.example:443``
    are one origin). ``wildcard`` entries (``https://*.example.com``) admit the subdomains
    of ``host`` at any depth, never ``host`` itself. ``port`` is None only for a scheme
    with no default port (``chrome-extension://ID``)."""

    scheme: str
    host: str
    port: int | None
    wildcard: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(self.scheme)
        port = "" if self.port is None or self.port == default else f":{self.port}"
        return f"{self.scheme}://{'*.' if self.wildcard else ''}{host}{port}"


@attrs.frozen
class Route:
    """``[route:NAME]``: which requests go where.

    A request matches on ``host`` (exact, or ``*.example.com`` for subdomains)
    and the longest ``path`` prefix. ``upstream`` is the WebSocket side,
    ``http_upstream`` the origin for plain HTTP on the same route (polling
    fallbacks, negotiate calls, the app's pages).

    The handshake allow-lists (``wsfw.handshake.screen``) are checked before the
    upstream is dialled; each is off when empty.
    """

    name: str
    path: str
    upstream_url: str
    ws: Upstream
    http: Upstream
    host: str | None = None
    tls: UpstreamTLS = UpstreamTLS()
    preserve_host: bool = False
    websocket: bool = True
    http_enabled: bool = True
    mode: str | None = None  # None: [wsfw] mode
    framing: str = "auto"
    inspect_upstream: bool = False
    #: Origins a browser handshake may come from (against cross-site WebSocket hijacking).
    origins: tuple[OriginPattern, ...] = ()
    #: Host names (``*.example.com`` for subdomains) the handshake's Host may name; port ignored.
    hosts: tuple[str, ...] = ()
    #: Header names (lower case) that must be present and non-empty.
    require_headers: tuple[str, ...] = ()
    #: Cookie names that must be present with a value (a session cookie).
    require_cookies: tuple[str, ...] = ()
    #: Subprotocols a client may offer; the others are removed from its offer.
    subprotocols: tuple[str, ...] = ()
    #: Extension names (lower case) a client may offer; an offer of another is refused.
    extensions: tuple[str, ...] = ()
    #: Run the handshake's path, query, cookies and headers through the route's detectors.
    inspect_handshake: bool = True

    def matches_host(self, host: str) -> bool:
        return self.host is None or host_matches(self.host, host)

    def upstream_path(self, request_path: str, base: Upstream) -> str:
        """Map a request path onto the upstream, like nginx's ``proxy_pass`` with a URI.

        With no base path on the upstream the request path is forwarded
        unchanged; with one, the matched route prefix is replaced by it.
        """
        if base.path in ("", "/"):
            return request_path
        rest = request_path[len(self.path):]
        if base.path.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        return base.path + rest


RATE_ACTIONS = ("close", "drop")


@attrs.frozen
class Rate:
    """A token-bucket rate such as ``20/s`` or ``1MiB/s``: ``count`` per ``period`` seconds.

    The count is also the burst, so ``600/m`` lets a client spend its minute's
    allowance at once and then one every 0.1 s, the way nginx's ``limit_req``
    with ``burst`` equal to the rate behaves. ``text`` is the value as written,
    for logs and refusal messages.
    """

    count: float
    period: float
    text: str = ""

    @property
    def per_second(self) -> float:
        return self.count / self.period

    @property
    def burst(self) -> float:
        """What a full bucket holds: the count, and at least one message (or byte)."""
        return max(self.count, 1.0)


@attrs.frozen
class Limits:
    """``[limits]``: hard caps that apply in every mode, and the abuse limits of ``wsfw.guard``.

    Every abuse limit is off at 0 (or None for a rate), so upgrading wsfw never
    starts refusing traffic a deployment used to accept.
    """

    max_message_bytes: int = 16 * 1024 * 1024
    max_frame_bytes: int = 16 * 1024 * 1024
    max_frames_per_message: int = 100_000
    max_http_body_bytes: int = 1024 * 1024
    max_connections: int = 0
    compression: str = "off"
    #: Concurrent WebSocket connections across every route (503 beyond); 0: no cap.
    max_connections_total: int = 0
    #: Concurrent WebSocket connections of one client address (429 beyond); 0: no cap.
    max_connections_per_ip: int = 0
    #: WebSocket handshakes one client address may start (429 beyond); None: no limit.
    handshake_rate_per_ip: Rate | None = None
    #: Client -> upstream messages per connection; None: no limit.
    message_rate: Rate | None = None
    #: Client -> upstream payload bytes per connection; None: no limit.
    byte_rate: Rate | None = None
    #: What a message over ``message_rate`` or ``byte_rate`` gets: close (1008) or drop.
    on_rate_exceeded: str = "close"
    #: Disruptive decisions against one address within ``ban_window`` that ban it; 0: no bans.
    ban_after: int = 0
    ban_window: float = 60.0
    ban_time: float = 600.0

    @property
    def compress_client(self) -> bool:
        return self.compression in ("client", "both")

    @property
    def compress_upstream(self) -> bool:
        return self.compression in ("upstream", "both")


@attrs.frozen
class Timeouts:
    """``[timeouts]``: every duration in seconds; 0 turns an optional one off."""

    connect: float = 5.0
    open_handshake: float = 10.0
    close_handshake: float = 1.0
    idle: float = 0.0
    auto_ping_interval: float = 0.0
    auto_ping_timeout: float = 10.0
    request_head: float = 10.0
    upstream_response: float = 60.0
    shutdown_drain: float = 10.0
    #: Close a WebSocket connection (1001 on both hops) this long after it opened; 0: never.
    max_lifetime: float = 0.0


@attrs.frozen
class Inspection:
    """``[inspection]`` plus every ``[inspector:NAME]`` section's raw options."""

    inspectors: tuple[str, ...] = ("detect", "leaks")
    options: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    on_decode_error: str = "raw"
    on_decode_limit: str = "log"
    max_decode_depth: int = 8
    max_params: int = 1000
    max_expanded_bytes: int = 1024 * 1024
    #: ``rules``: rule file globs (relative ones to the config file's folder), in load order.
    rules: tuple[str, ...] = ()

    def options_for(self, name: str) -> dict[str, str]:
        return dict(dict(self.options).get(name, ()))


@attrs.frozen
class LogConfig:
    """``[log]``: what wsfw itself says, and where it writes it.

    stdout always carries wsfw's events (twistd writes them there, and
    journald picks them up under systemd). ``file`` and ``audit_file`` are
    files wsfw writes itself, in ``format``; ``json_file`` keeps its RFC 7464
    JSON text sequences whatever ``format`` says. Every file wsfw writes is
    reopened on SIGUSR1, so logrotate can rename it and signal.
    """

    level: str = "info"
    connections: bool = True
    format: str = "json"
    file: str | None = None
    json_file: str | None = None
    audit_file: str | None = None
    syslog: bool = False
    syslog_facility: str = "daemon"


@attrs.frozen
class Admin:
    """``[admin]``: the read-only admin listener (health, readiness, metrics, events, dashboard).

    ``endpoint`` is None when the listener is off. It is loopback-only unless
    ``allow_remote``, because what it shows (attack excerpts, client addresses)
    is for the operators, not for the clients wsfw screens.
    """

    endpoint: str | None = DEFAULT_ADMIN_ENDPOINT
    events: int = 500
    allow_remote: bool = False

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


@attrs.frozen
class Cluster:
    """``[cluster]``: the Redis server a fleet of wsfw nodes shares bans, per-address
    counts and audit events through (``wsfw.cluster``). ``redis`` is None for a single
    node, which keeps all of that in memory and needs no Redis."""

    redis: str | None = None  # a Twisted client endpoint string: tcp:HOST:PORT, tls:HOST:PORT:trustRoots=DIR, unix:PATH
    password: str | None = None
    db: int = 0
    node: str = ""  # this node's name in the fleet (default: the host name)
    prefix: str = "wsfw:"
    #: Fleet audit stream length (XADD MAXLEN ~): the most recent events kept in Redis.
    events_maxlen: int = 10_000

    @property
    def enabled(self) -> bool:
        return self.redis is not None


@attrs.frozen
class Config:
    """A whole validated configuration."""

    path: str
    listeners: tuple[Listener, ...]
    routes: tuple[Route, ...]
    settings: Settings = Settings()
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    log: LogConfig = LogConfig()
    inspection: Inspection = Inspection()
    admin: Admin = Admin()
    cluster: Cluster = Cluster()
    #: The file's text as loaded. A supervisor hands exactly this to its workers,
    #: so one started later runs what was validated, not what the file says by then.
    text: str = attrs.field(default="", repr=False, eq=False)
    #: Rules and positive models ([rule:ID], [model:ROUTE] sections and rule files), compiled:
    #: a wsfw.policy.loader.PolicyConfig; None when built without the loader.
    policy: object = attrs.field(default=None, repr=False, eq=False)

    @property
    def version(self) -> str:
        """The policy version: a short hash of the main file's text and of every rule and
        schema file read with it. Logged at start and on each reload; /api/stats shows it."""
        import hashlib

        digest = hashlib.sha256(self.text.encode("utf-8"))
        for path, sha in getattr(self.policy, "sources", ()):
            digest.update(f"\0{path}\0{sha}".encode("utf-8"))
        return digest.hexdigest()[:12]

    def mode_for(self, route: Route) -> str:
        return route.mode or self.settings.mode

    def match_route(self, host: str | None, path: str) -> Route | None:
        """The route for a request: host-specific routes first, then longest prefix.

        This is nginx's order (server by name, then location by prefix), so
        operators can predict it without reading code.
        """
        host = normalise_host(host)
        candidates = [r for r in self.routes if r.host is not None and r.matches_host(host)]
        if not any(path.startswith(r.path) for r in candidates):
            candidates = [r for r in self.routes if r.host is None]
        best = None
        for route in candidates:
            if path.startswith(route.path) and (best is None or len(route.path) > len(best.path)):
                best = route
        return best


def host_matches(pattern: str, host: str) -> bool:
    """A normalised host name against an exact name or a ``*.domain`` wildcard, which admits
    subdomains at any depth but never the domain itself (routes' ``host``, ``hosts`` allow-lists)."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalise_host(host: str | bytes | None) -> str:
    """Lower-case host name without port, for matching ``Host`` against routes."""
    if host is None:
        return ""
    if isinstance(host, bytes):
        host = host.decode("latin-1")
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")
