"""Load an ini file into a frozen :class:`wsfw.config.Config`, or fail with every problem.

The loader is strict on purpose: an unknown key is far more often a typo that
silently disables a protection than a forward-compatible setting, so it is an
error (with the nearest known key suggested). Every problem is collected with
file, section and key, and raised once as :class:`wsfw.errors.ConfigError`
before anything binds a socket.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import os
import re
from typing import Callable
from urllib.parse import urlsplit

from twisted.internet.testing import MemoryReactor

from wsfw import endpoints
from wsfw.config import (
    COMPRESSION,
    DEFAULT_ADMIN_ENDPOINT,
    FRAMINGS,
    LOG_FORMATS,
    LOG_LEVELS,
    MODES,
    RATE_ACTIONS,
    SYSLOG_FACILITIES,
    WORKERS_MAX,
    is_ip_address,
    Admin,
    Cluster,
    Config,
    Inspection,
    Limits,
    Listener,
    LogConfig,
    Rate,
    Route,
    Settings,
    Timeouts,
    Upstream,
    UpstreamTLS,
)
from wsfw.errors import ConfigError, Problem

_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.I)
_SIZE_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.I)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_OFF = ("off", "no", "none", "false", "0")
#: Bounds of ``[admin] events``: each remembered event is a few hundred bytes.
ADMIN_EVENTS_MAX = 10_000

#: Keys each section accepts. The named constructors below read exactly these.
SECTION_KEYS = {
    "wsfw": ("on_inspection_error", "mode", "trusted_proxies", "expose_reason", "workers"),
    "listen": ("endpoint",),
    "route": ("host", "path", "upstream", "http_upstream", "ca_file", "client_cert", "client_key",
              "server_name", "preserve_host", "websocket", "http", "mode", "framing", "inspect_upstream",
              "origins", "hosts", "require_headers", "require_cookies", "subprotocols", "extensions",
              "inspect_handshake"),
    "limits": ("max_message_bytes", "max_frame_bytes", "max_frames_per_message", "max_http_body_bytes",
               "max_connections", "compression", "max_connections_total", "max_connections_per_ip",
               "handshake_rate_per_ip", "message_rate", "byte_rate", "on_rate_exceeded", "ban_after", "ban_window",
               "ban_time"),
    "timeouts": ("connect", "open_handshake", "close_handshake", "idle", "auto_ping_interval",
                 "auto_ping_timeout", "request_head", "upstream_response", "shutdown_drain", "max_lifetime"),
    "log": ("level", "connections", "format", "file", "json_file", "audit_file", "syslog", "syslog_facility"),
    "admin": ("endpoint", "events", "allow_remote"),
    "cluster": ("redis", "password", "db", "node", "prefix", "events_maxlen"),
    "inspection": ("inspectors", "on_decode_error", "on_decode_limit", "max_decode_depth", "max_params",
                   "max_expanded_bytes", "rules"),
}


class _Section:
    """Typed reads from one section; each bad value becomes a Problem, never an exception."""

    def __init__(self, loader: "_Loader", name: str, kind: str):
        self.loader = loader
        self.name = name
        self.items = dict(loader.parser.items(name)) if loader.parser.has_section(name) else {}
        allowed = SECTION_KEYS[kind]
        for key in self.items:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(allowed)})"
                self.problem(key, f"unknown key{hint}")

    def problem(self, key: str | None, message: str) -> None:
        self.loader.problems.append(Problem(self.loader.path, self.name, key, message))

    def _get(self, key: str, default, convert: Callable, expected: str):
        raw = self.items.get(key)
        if raw is None or raw.strip() == "":
            return default
        try:
            return convert(raw.strip())
        except (ValueError, KeyError):
            self.problem(key, f"{raw.strip()!r} is not {expected}")
            return default

    def str(self, key: str, default: str | None = None) -> str | None:
        return self._get(key, default, str, "a string")

    def required(self, key: str) -> str | None:
        value = self.str(key)
        if value is None:
            self.problem(key, "is required")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._get(key, default, str.lower, "a string")
        if value not in choices:
            self.problem(key, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return value

    def bool(self, key: str, default: bool) -> bool:
        return self._get(key, default, lambda v: _BOOLEANS[v.lower()], "yes or no")

    def size(self, key: str, default: int) -> int:
        def convert(v):
            m = _SIZE.match(v)
            if not m:
                raise ValueError(v)
            return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower() if m.group(2) else None]
        return self._get(key, default, convert, "a size in bytes (e.g. 1048576, 64KiB, 16MiB)")

    def count(self, key: str, default: int) -> int:
        value = self._get(key, default, int, "a whole number")
        if value < 0:
            self.problem(key, "must not be negative")
            return default
        return value

    def rate(self, key: str, sizes: bool = False) -> Rate | None:
        """A token-bucket rate (``100/s``, ``600/m``; with ``sizes`` also ``1MiB/s``), or None when
        the key is empty, 0 or off. The syntax is the rules' ``rate =`` (wsfw.policy.loader)."""
        from wsfw.policy.loader import parse_rate

        raw = (self.items.get(key) or "").strip()
        if not raw or raw.lower() in _OFF:
            return None
        parsed = parse_rate(raw, sizes)
        if parsed is None:
            example = "1MiB/s, 64KiB/s, 100000/m" if sizes else "100/s, 600/m, 1000/h"
            self.problem(key, f"{raw!r} is not a rate (e.g. {example}; empty or 0: off)")
            return None
        count, period = parsed
        return Rate(count=count, period=period, text=raw) if count > 0 else None

    def duration(self, key: str, default: float) -> float:
        def convert(v):
            m = _DURATION.match(v)
            if not m:
                raise ValueError(v)
            return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower() if m.group(2) else None]
        return self._get(key, default, convert, "a duration in seconds (e.g. 5, 0.5, 250ms, 2m)")


class _Loader:
    def __init__(self, path: str, text: str | None = None):
        self.path = path
        self.text = ""
        self.problems: list[Problem] = []
        self.parser = configparser.ConfigParser(
            interpolation=None, strict=True, inline_comment_prefixes=(";", "#"), default_section="\0none"
        )
        try:
            if text is None:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            self.text = text
            self.parser.read_string(text, source=path)
        except OSError as e:
            self.problems.append(Problem(path, None, None, f"cannot read: {e.strerror or e}"))
        except UnicodeDecodeError as e:
            self.problems.append(Problem(path, None, None, f"not UTF-8 text: {e}"))
        except configparser.Error as e:
            self.problems.append(Problem(path, None, None, _parser_message(e)))

    def fail_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def load(self) -> Config:
        self.fail_if_problems()
        listeners, routes, inspector_sections, policy_sections = [], [], {}, []
        for name in self.parser.sections():
            kind, _, label = name.partition(":")
            if kind == "inspector":
                inspector_sections[label] = dict(self.parser.items(name))
            elif kind in ("rule", "model") and label:
                policy_sections.append(name)  # wsfw.policy: checked once the routes are known
            elif kind in ("listen", "route"):
                if not _NAME.match(label):
                    self.problems.append(Problem(self.path, name, None,
                                                 f"needs a name of letters, digits, '.', '_' or '-', e.g. [{kind}:public]"))
                    continue
                section = _Section(self, name, kind)
                (listeners if kind == "listen" else routes).append(
                    self.listener(section, label) if kind == "listen" else self.route(section, label))
            elif name not in SECTION_KEYS or name in ("listen", "route"):
                near = difflib.get_close_matches(name, ["wsfw", "limits", "timeouts", "log", "inspection", "admin",
                                                        "cluster", "listen:NAME", "route:NAME", "inspector:NAME", "rule:ID",
                                                        "model:ROUTE"], n=1)
                hint = f" (did you mean [{near[0]}]?)" if near else ""
                self.problems.append(Problem(self.path, name, None, f"unknown section{hint}"))
        if not listeners:
            self.problems.append(Problem(self.path, None, None, "no [listen:NAME] section: wsfw would accept nothing"))
        if not routes:
            self.problems.append(Problem(self.path, None, None, "no [route:NAME] section: wsfw would forward nothing"))
        settings = self.settings(_Section(self, "wsfw", "wsfw"))
        limits = self.limits(_Section(self, "limits", "limits"))
        timeouts = self.timeouts(_Section(self, "timeouts", "timeouts"))
        log = self.log(_Section(self, "log", "log"))
        inspection = self.inspection(_Section(self, "inspection", "inspection"), inspector_sections)
        admin = self.admin(_Section(self, "admin", "admin"), [x for x in listeners if x is not None])
        cluster = self.cluster(_Section(self, "cluster", "cluster"))
        self.check_routes_unique([r for r in routes if r is not None])
        from wsfw.policy.loader import load_policy

        policy = load_policy(self.path, self.parser, policy_sections, inspection.rules, routes, self.problems)
        self.fail_if_problems()
        return Config(path=self.path, listeners=tuple(listeners), routes=tuple(routes), settings=settings,
                      limits=limits, timeouts=timeouts, log=log, inspection=inspection, admin=admin, cluster=cluster,
                      text=self.text,
                      policy=policy)

    # -- sections ---------------------------------------------------------

    def settings(self, s: _Section) -> Settings:
        proxies = []
        for item in (s.str("trusted_proxies") or "").replace(",", " ").split():
            try:
                proxies.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                s.problem("trusted_proxies", f"{item!r} is not an IP address or CIDR network")
        return Settings(
            on_inspection_error=s.choice("on_inspection_error", "close", ("close", "allow")),
            mode=s.choice("mode", "block", MODES),
            trusted_proxies=tuple(proxies),
            expose_reason=s.bool("expose_reason", False),
            workers=self.workers(s),
        )

    def workers(self, s: _Section) -> int | None:
        """``workers``: ``auto`` (None: one per available CPU) or a whole number from 1 to WORKERS_MAX."""
        raw = (s.str("workers") or "auto").lower()
        if raw == "auto":
            return None
        try:
            count = int(raw)
        except ValueError:
            s.problem("workers", f"{raw!r} is not auto or a whole number from 1 to {WORKERS_MAX}")
            return None
        if not 1 <= count <= WORKERS_MAX:
            s.problem("workers", f"{count} is out of range: use auto or a whole number from 1 to {WORKERS_MAX}")
            return None
        return count

    def listener(self, s: _Section, name: str) -> Listener | None:
        endpoint = s.required("endpoint")
        if endpoint is None:
            return None
        proxy_protocol = endpoint.startswith(endpoints.PROXY_PREFIX)
        if proxy_protocol:
            endpoint = endpoint[len(endpoints.PROXY_PREFIX):]
            if endpoint.split(":", 1)[0] not in ("tcp", "tcp6", "ssl", "unix", "systemd"):
                s.problem("endpoint", f"haproxy: wraps a tcp:, tcp6:, ssl:, unix: or systemd: endpoint, not {endpoint!r}")
                return None
        if endpoint.split(":", 1)[0] != "systemd":  # systemd: resolves only under socket activation
            try:
                endpoints.server_endpoint(MemoryReactor(), endpoint)
            except ValueError as e:
                s.problem("endpoint", str(e))
        return Listener(name=name, endpoint=endpoint, proxy_protocol=proxy_protocol)

    def route(self, s: _Section, name: str) -> Route | None:
        path = s.str("path", "/")
        if not path.startswith("/"):
            s.problem("path", f"{path!r} must start with '/'")
        host = s.str("host")
        if host is not None:
            host = host.lower().rstrip(".")
            if not re.match(r"^(\*\.)?[a-z0-9.-]+$", host) and not is_ip_address(host):
                s.problem("host", f"{host!r} is not a host name, IP address or *.domain wildcard")
        upstream_url = s.required("upstream")
        ws = self.upstream(s, "upstream", upstream_url, ("ws", "wss")) if upstream_url else None
        http_url = s.str("http_upstream")
        if http_url:
            http = self.upstream(s, "http_upstream", http_url, ("http", "https"))
        else:
            http = ws
        tls = UpstreamTLS(ca_file=s.str("ca_file"), client_cert=s.str("client_cert"),
                          client_key=s.str("client_key"), server_name=s.str("server_name"))
        if tls.client_key and not tls.client_cert:
            s.problem("client_key", "is set but client_cert is not")
        for key, target in (("upstream", ws), ("http_upstream", http)):
            if target is not None and target.secure:
                try:
                    endpoints.client_tls_options(target, tls)
                except Exception as e:
                    s.problem(key, f"TLS settings unusable: {e}")
                break  # both sides share the same TLS settings: report once
        handshake = self.route_handshake(s)
        route = None
        if ws is not None and http is not None:
            route = Route(name=name, path=path, host=host, upstream_url=upstream_url, ws=ws, http=http, tls=tls,
                          preserve_host=s.bool("preserve_host", False), websocket=s.bool("websocket", True),
                          http_enabled=s.bool("http", True),
                          mode=s.choice("mode", "block", MODES) if s.str("mode") else None,
                          framing=s.choice("framing", "auto", FRAMINGS),
                          inspect_upstream=s.bool("inspect_upstream", False), **handshake)
        return route

    def route_handshake(self, s: _Section) -> dict:
        """A route's handshake allow-lists (``wsfw.handshake.screen``) and ``inspect_handshake``.

        Each list is words separated by spaces or commas. Entries are checked here, not at the
        first handshake: a mistyped origin would otherwise refuse every browser, or a
        malformed one admit none, with nothing said until traffic arrives."""
        from wsfw.handshake import TOKEN, parse_origin_pattern

        def words(key: str) -> list[str]:
            return (s.str(key) or "").replace(",", " ").split()

        origins = []
        for text in words("origins"):
            if text == "*":
                s.problem("origins", "'*' is not an origin: leave origins empty to admit any Origin")
                continue
            if text.lower() == "null":
                s.problem("origins", "'null' is the Origin of sandboxed frames and local files, which any page "
                          "can produce: it cannot be allowed")
                continue
            try:
                origins.append(parse_origin_pattern(text))
            except ValueError as e:
                s.problem("origins", str(e))
        hosts = []
        for text in words("hosts"):
            host = text.lower().rstrip(".")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            if is_ip_address(host):
                hosts.append(host)
            elif ":" in host:
                s.problem("hosts", f"{text!r}: give host names without a port (the Host's port is ignored)")
            elif not re.match(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", host):
                s.problem("hosts", f"{text!r} is not a host name, IP address or *.domain wildcard")
            else:
                hosts.append(host)
        lists = {}
        for key, what, fold in (("require_headers", "a header name", True), ("require_cookies", "a cookie name", False),
                                ("subprotocols", "a subprotocol name", False),
                                ("extensions", "an extension name", True)):
            items = []
            for text in words(key):
                if not TOKEN.match(text):
                    s.problem(key, f"{text!r} is not {what} (letters, digits and !#$%&'*+-.^_`|~ only)")
                elif (text.lower() if fold else text) not in items:
                    items.append(text.lower() if fold else text)
            lists[key] = tuple(items)
        return dict(origins=tuple(origins), hosts=tuple(hosts), **lists,
                    inspect_handshake=s.bool("inspect_handshake", True))

    def upstream(self, s: _Section, key: str, url: str, schemes: tuple[str, str]) -> Upstream | None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            s.problem(key, f"{url!r} is not a valid URL ({e})")
            return None
        if parts.scheme not in schemes:
            s.problem(key, f"{url!r} must start with {schemes[0]}:// or {schemes[1]}://")
            return None
        if not parts.hostname:
            s.problem(key, f"{url!r} has no host")
            return None
        if parts.query or parts.fragment or parts.username:
            s.problem(key, f"{url!r} must not carry a query, fragment or credentials")
            return None
        secure = parts.scheme in ("wss", "https")
        return Upstream(secure=secure, host=parts.hostname, port=port or (443 if secure else 80),
                        path=parts.path or "/")

    def limits(self, s: _Section) -> Limits:
        d = Limits()
        max_message = s.size("max_message_bytes", d.max_message_bytes)
        limits = Limits(
            max_message_bytes=max_message,
            max_frame_bytes=s.size("max_frame_bytes", max_message),
            max_frames_per_message=s.count("max_frames_per_message", d.max_frames_per_message),
            max_http_body_bytes=s.size("max_http_body_bytes", d.max_http_body_bytes),
            max_connections=s.count("max_connections", d.max_connections),
            compression=s.choice("compression", d.compression, COMPRESSION),
            max_connections_total=s.count("max_connections_total", d.max_connections_total),
            max_connections_per_ip=s.count("max_connections_per_ip", d.max_connections_per_ip),
            handshake_rate_per_ip=s.rate("handshake_rate_per_ip"),
            message_rate=s.rate("message_rate"),
            byte_rate=s.rate("byte_rate", sizes=True),
            on_rate_exceeded=s.choice("on_rate_exceeded", d.on_rate_exceeded, RATE_ACTIONS),
            ban_after=s.count("ban_after", d.ban_after),
            ban_window=s.duration("ban_window", d.ban_window),
            ban_time=s.duration("ban_time", d.ban_time),
        )
        if limits.ban_after:
            for key in ("ban_window", "ban_time"):
                if getattr(limits, key) <= 0:
                    s.problem(key, "must be greater than 0 when ban_after is set")
        if limits.max_message_bytes <= 0:
            s.problem("max_message_bytes", "must be positive: a message cap is what bounds memory")
        if limits.max_frame_bytes > limits.max_message_bytes:
            s.problem("max_frame_bytes", f"({limits.max_frame_bytes}) must not exceed max_message_bytes ({max_message})")
        if limits.compression != "off":
            from wsfw.relay.options import deflate_size_cap_supported
            if not deflate_size_cap_supported():
                s.problem("compression", "this Autobahn counts compressed bytes against the message cap "
                          "(GHSA-hxp9-w8x3-p566); install the pinned Autobahn (requirements.txt) to enable compression")
        return limits

    def timeouts(self, s: _Section) -> Timeouts:
        d = Timeouts()
        t = Timeouts(**{key: s.duration(key, getattr(d, key)) for key in SECTION_KEYS["timeouts"]})
        for key in ("connect", "open_handshake", "close_handshake", "request_head", "upstream_response"):
            if getattr(t, key) <= 0:
                s.problem(key, "must be greater than 0")
        if t.open_handshake <= t.connect:
            s.problem("open_handshake", f"({t.open_handshake:g}s) must exceed connect ({t.connect:g}s): "
                      "it also covers dialling the upstream")
        if t.auto_ping_interval and t.auto_ping_timeout <= 0:
            s.problem("auto_ping_timeout", "must be greater than 0 when auto_ping_interval is set")
        return t

    def log(self, s: _Section) -> LogConfig:
        config = LogConfig(level=s.choice("level", "info", LOG_LEVELS), connections=s.bool("connections", True),
                           format=s.choice("format", "json", LOG_FORMATS), file=s.str("file"),
                           json_file=s.str("json_file"), audit_file=s.str("audit_file"),
                           syslog=s.bool("syslog", False),
                           syslog_facility=s.choice("syslog_facility", "daemon", SYSLOG_FACILITIES))
        if config.file == "-":
            s.problem("file", "stdout already carries wsfw's events (twistd --logfile=-): give a path, or leave it empty")
        seen: dict[str, str] = {}
        for key in ("file", "json_file", "audit_file"):
            path = getattr(config, key)
            if not path or path == "-":
                continue
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                s.problem(key, f"directory {folder!r} does not exist")
            elif os.path.isdir(path):
                s.problem(key, f"{path!r} is a directory, not a file")
            real = os.path.realpath(path)
            if real in seen:
                s.problem(key, f"same file as {seen[real]}: each stream needs its own file")
            seen[real] = key
        return config

    def admin(self, s: _Section, listeners: list[Listener]) -> Admin:
        """``[admin]``: on by default on loopback; never one of the public sockets."""
        raw = s.items.get("endpoint")
        if raw is None:
            endpoint = DEFAULT_ADMIN_ENDPOINT
        elif raw.strip() == "" or raw.strip().lower() in _OFF:
            endpoint = None
        else:
            endpoint = raw.strip()
        events = s.count("events", Admin().events)
        if not 1 <= events <= ADMIN_EVENTS_MAX:
            s.problem("events", f"must be between 1 and {ADMIN_EVENTS_MAX}")
            events = Admin().events
        allow_remote = s.bool("allow_remote", False)
        if endpoint is not None:
            if endpoint.split(":", 1)[0] != "systemd":
                try:
                    endpoints.server_endpoint(MemoryReactor(), endpoint)
                except ValueError as e:
                    s.problem("endpoint", str(e))
            local = endpoints.is_loopback(endpoint)
            if not allow_remote and local is not True:
                why = "cannot tell where it listens" if local is None else "is not on a loopback interface"
                s.problem("endpoint", f"{endpoint!r} {why}: the admin listener shows attack excerpts and client "
                          "addresses; bind it to 127.0.0.1 (or ::1, or a unix: socket), or set allow_remote = yes")
            for listener in listeners:
                if endpoints.same_socket(endpoint, listener.endpoint):
                    s.problem("endpoint", f"{endpoint!r} is the same socket as [listen:{listener.name}] "
                              f"({listener.endpoint}): the admin listener is never a public one")
        return Admin(endpoint=endpoint, events=events, allow_remote=allow_remote)

    def cluster(self, s: _Section) -> Cluster:
        """``[cluster]``: absent (or ``redis`` empty) is a single node with in-memory state."""
        d = Cluster()
        redis = s.str("redis")
        if redis is not None and redis.lower() in _OFF:
            redis = None
        if redis is not None:
            from twisted.internet.endpoints import clientFromString

            try:
                clientFromString(MemoryReactor(), redis)
            except Exception as e:
                s.problem("redis", f"{redis!r} is not a client endpoint (tcp:HOST:PORT, tls:HOST:PORT[:trustRoots=DIR], "
                          f"unix:PATH): {e}")
        node = s.str("node") or _hostname()
        if not _NAME.match(node):
            s.problem("node", f"{node!r} must be letters, digits, '.', '_' or '-'")
        prefix = s.str("prefix", d.prefix)
        if any(c.isspace() for c in prefix):
            s.problem("prefix", "must not contain spaces")
        events_maxlen = s.count("events_maxlen", d.events_maxlen)
        if events_maxlen < 100:
            s.problem("events_maxlen", "must be at least 100")
        for key in s.items:
            if key != "redis" and redis is None and s.items[key].strip():
                s.problem(key, "has no effect without redis = (a single node keeps its state in memory)")
        return Cluster(redis=redis, password=s.str("password"), db=s.count("db", d.db), node=node, prefix=prefix,
                       events_maxlen=events_maxlen)

    def inspection(self, s: _Section, sections: dict[str, dict[str, str]]) -> Inspection:
        from wsfw.inspection.registry import factories

        d = Inspection()
        names = tuple((s.str("inspectors", ",".join(d.inspectors)) or "").replace(",", " ").split())
        known, plugin_errors = factories()
        for message in plugin_errors:
            s.problem(None, message)
        for name in names:
            if name not in known:
                s.problem("inspectors", f"no inspector named {name!r} (known: {', '.join(sorted(known))})")
        for name, options in sections.items():
            if name not in known:
                self.problems.append(Problem(self.path, f"inspector:{name}", None,
                                             f"no inspector named {name!r} (known: {', '.join(sorted(known))})"))
        for name in names:
            if name in known:
                self.check_inspector(name, known[name], sections.get(name, {}))
        inspection = Inspection(
            inspectors=names,
            options=tuple((n, tuple(sorted(o.items()))) for n, o in sections.items()),
            on_decode_error=s.choice("on_decode_error", d.on_decode_error, ("raw", "close")),
            on_decode_limit=s.choice("on_decode_limit", d.on_decode_limit, ("log", "block")),
            max_decode_depth=s.count("max_decode_depth", d.max_decode_depth),
            max_params=s.count("max_params", d.max_params),
            max_expanded_bytes=s.size("max_expanded_bytes", d.max_expanded_bytes),
            rules=tuple((s.str("rules") or "").split()),
        )
        for key in ("max_decode_depth", "max_params", "max_expanded_bytes"):
            if getattr(inspection, key) <= 0:
                s.problem(key, "must be greater than 0")
        return inspection

    def check_inspector(self, name: str, factory, options: dict[str, str]) -> None:
        section = f"inspector:{name}"
        for key in options:
            if key not in factory.keys:
                near = difflib.get_close_matches(key, factory.keys, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(factory.keys)})"
                self.problems.append(Problem(self.path, section, key, f"unknown key{hint}"))
        try:
            factory.check({k: v for k, v in options.items() if k in factory.keys})
        except ValueError as e:
            key, message = e.args if len(e.args) == 2 else (None, str(e))
            self.problems.append(Problem(self.path, section, key, message))

    def check_routes_unique(self, routes: list[Route]) -> None:
        seen: dict[tuple, str] = {}
        for route in routes:
            key = (route.host, route.path)
            if key in seen:
                self.problems.append(Problem(self.path, f"route:{route.name}", "path",
                                             f"same host and path as [route:{seen[key]}]: one of them could never match"))
            seen[key] = route.name


def _hostname() -> str:
    """This machine's short host name, as a node name (only the characters node names allow)."""
    import socket

    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]) or "wsfw"


def _parser_message(e: configparser.Error) -> str:
    if isinstance(e, configparser.DuplicateSectionError):
        return f"line {e.lineno}: section [{e.section}] appears twice"
    if isinstance(e, configparser.DuplicateOptionError):
        return f"line {e.lineno}: [{e.section}] {e.option} is set twice"
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno}: a key before any [section]: {e.line.strip()!r}"
    if isinstance(e, configparser.ParsingError):
        return "; ".join(f"line {n}: cannot parse {line.strip()!r}" for n, line in e.errors)
    return str(e)


def load(path: str, text: str | None = None) -> Config:
    """Read and validate ``path`` (or ``text``, named ``path`` in messages)."""
    return _Loader(path, text).load()
