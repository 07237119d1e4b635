"""Prometheus metrics, in a private registry, at (almost) no cost per message.

``prometheus_client``'s own counters take a lock on every ``inc()`` (about a
microsecond each here), which is too much to pay twice per relayed message.
So nothing on the message path touches them:

* message, byte, verdict and backpressure counts are the counters each
  ``Relay`` keeps anyway; :class:`_LiveCollector` adds them up over the live
  relays when ``/metrics`` is scraped (or the dashboard samples), and
  :meth:`Metrics.finished` folds a connection's final counts into the totals
  when it ends;
* blocks, detections and inspector errors come from the audit stream
  (:meth:`Metrics.audit_event` observes ``Audit.publisher``), which records
  every decision anyway;
* inspection latency is the one thing measured per message, by
  :class:`TimedHook` around each route's hook into a :class:`LiteHistogram`
  (a bisect and two additions);
* handshakes, upstream dials and HTTP responses are counted once per
  connection or request (:class:`wsfw.interfaces.IConnectionObserver`,
  ``PublicSite.log``);
* admission refusals and bans are the plain counters ``wsfw.guard.Guard``
  keeps, and rate-limited messages the ones each ``Relay`` keeps: both read
  when scraped.

No label carries a client-controlled value: routes come from the config,
rule ids and classes from the rule set, reasons and results from fixed
vocabularies or HTTP status codes. Label values are still sanitised and the
number of label sets per metric is capped, so a third-party inspector
inventing rule ids cannot grow memory without bound.
"""

from __future__ import annotations

import bisect
import platform
import re
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from zope.interface import implementer

from wsfw import __version__
from wsfw.guard import REFUSALS
from wsfw.interfaces import IConnectionObserver, IMessageHook
from wsfw.logs import logger
from wsfw.relay import CLIENT, UPSTREAM

log = logger("wsfw.metrics")

#: Inspection takes tens of microseconds per message; the buckets resolve that.
INSPECTION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
CONNECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_FAILURES = ("timeout", "dns", "unreachable", "refused", "handshake")
#: Distinct label sets one metric may grow to before new ones are folded into "other".
LABEL_SETS_MAX = 1000
DISRUPTIVE = frozenset({"block", "drop", "detect"})

_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.:/-]")


def label(value, limit: int = 64) -> str:
    """A bounded, printable label value."""
    text = _LABEL_CHARS.sub("_", str(value if value not in (None, "") else "none"))
    return text[:limit]


class LiteHistogram:
    """A histogram cheap enough for every message: one bisect, one increment, one addition.

    Used from the reactor thread only, so it needs no lock; it is turned into a
    Prometheus histogram when scraped.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds=INSPECTION_BUCKETS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, as Prometheus wants them."""
        out, total = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


@implementer(IMessageHook)
class TimedHook:
    """A route's inspection hook, timed into a :class:`LiteHistogram`.

    Only the synchronous part of a verdict is timed (the built-in pipeline is
    synchronous). Exceptions pass through untimed: the relay handles them.
    """

    __slots__ = ("hook", "histogram", "_closed")

    def __init__(self, hook, histogram: LiteHistogram):
        self.hook = hook
        self.histogram = histogram
        self._closed = getattr(hook, "connection_closed", None)

    def inspect_message(self, view, _clock=time.perf_counter, _bisect=bisect.bisect_left):
        start = _clock()
        verdict = self.hook.inspect_message(view)
        elapsed = _clock() - start
        histogram = self.histogram  # LiteHistogram.observe, inlined: this runs for every message
        histogram.counts[_bisect(histogram.bounds, elapsed)] += 1
        histogram.sum += elapsed
        return verdict

    def connection_closed(self, conn_id: str) -> None:
        if self._closed is not None:
            self._closed(conn_id)

    def __getattr__(self, name):  # anything else the wrapped hook offers (e.g. a pipeline's mode)
        return getattr(self.hook, name)


class _Children:
    """Pre-bound children of a labelled metric, created once per label set and capped."""

    def __init__(self, metric):
        self.metric = metric
        self.children: dict[tuple, object] = {}

    def get(self, *values):
        child = self.children.get(values)
        if child is None:
            if len(self.children) >= LABEL_SETS_MAX:
                values = ("other",) * len(values)
                child = self.children.get(values)
                if child is not None:
                    return child
            child = self.children[values] = self.metric.labels(*values)
        return child


class BoundedTally:
    """Counts per key with bounded memory: past ``limit`` keys, the less frequent half is forgotten.

    Enough to show the top client addresses and rules on the dashboard
    without letting a scanner spraying source addresses grow a dict forever.
    """

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.counts: dict = {}

    def add(self, key, n: int = 1) -> None:
        counts = self.counts
        if key not in counts and len(counts) >= self.limit:
            keep = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[: self.limit // 2]
            counts.clear()
            counts.update(keep)
        counts[key] = counts.get(key, 0) + n

    def top(self, n: int) -> list[tuple]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]


def client_address(event: dict) -> str:
    """The client's IP address of an audit event (message events carry ``ip:port``)."""
    peer = str(event.get("peer") or "")
    if event.get("kind") == "message" and ":" in peer:
        peer = peer.rpartition(":")[0]
    return peer.strip("[]") or "-"


def primary_rule(event: dict) -> tuple[str, str]:
    """``(rule, class)`` that decided an audit event: the highest-scoring match, else the inspector."""
    matches = [m for m in event.get("matches") or () if isinstance(m, dict)]
    if matches:
        best = max(matches, key=lambda m: m.get("score") or 0)
        return label(best.get("rule_id")), label(best.get("class"))
    rules, classes = event.get("rule_ids") or (), event.get("classes") or ()
    inspector = event.get("inspector") or "policy"
    return label(rules[0] if rules else inspector), label(classes[0] if classes else inspector)


@implementer(IConnectionObserver)
class Metrics:
    """Every wsfw metric, registered in a private ``CollectorRegistry`` (never the global one)."""

    def __init__(self, config, tracker=None):
        # The ``*_created`` timestamps double every series for nothing Prometheus
        # uses (it tracks resets itself). This switch is per process, and
        # wsfw's process is the daemon.
        disable_created_metrics()
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.tracker = tracker
        #: The wsfw.guard.Guard whose refusal and ban counters are read when scraped (set by service.build).
        self.guard = None
        self.cluster = None  # wsfw.cluster.link.RedisLink with [cluster] redis
        self.fleet_events = None  # wsfw.cluster.events.FleetEvents
        # final counts of connections that ended (live ones are read from the relays)
        self.closed_messages = {CLIENT: 0, UPSTREAM: 0}
        self.closed_rate_limited = {"close": 0, "drop": 0}
        self.closed_bytes = {CLIENT: 0, UPSTREAM: 0}
        self.closed_dropped = {CLIENT: 0, UPSTREAM: 0}
        self.closed_pauses = {CLIENT: 0, UPSTREAM: 0}
        # plain tallies the dashboard reads (prometheus_client's values are private)
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self.upstream_failure_count = 0
        self.http_responses = 0
        self.blocked = 0
        self.detected = 0
        self.inspector_error_count = 0
        self.rule_hits = BoundedTally()
        self.client_hits = BoundedTally()

        handshakes = Counter("wsfw_handshakes", "WebSocket opening handshakes by result: ok, the HTTP status "
                             "wsfw or the upstream refused with, or abandoned (the client left first).",
                             ["result"], registry=registry)
        self._handshakes = _Children(handshakes)
        self._handshake_ok = handshakes.labels("ok")
        failures = Counter("wsfw_upstream_connect_failures", "Failed upstream dials by reason.", ["reason"],
                           registry=registry)
        self._upstream_failures = {reason: failures.labels(reason) for reason in UPSTREAM_FAILURES}
        connect = Histogram("wsfw_upstream_connect_seconds", "From the client's handshake to the upstream's 101.",
                            ["route"], buckets=CONNECT_BUCKETS, registry=registry)
        self._connect = {r.name: connect.labels(r.name) for r in config.routes}
        self._blocks = _Children(Counter("wsfw_blocks", "Messages and polling requests blocked (enforced), by the "
                                         "deciding rule, its attack class and the route.",
                                         ["class", "rule", "route"], registry=registry))
        self._detections = _Children(Counter("wsfw_detections", "Detections not enforced (detect mode), by rule, "
                                             "class and route.", ["class", "rule", "route"], registry=registry))
        self._rule_matches = _Children(Counter("wsfw_rule_matches", "Rules matched in audited decisions (several "
                                               "per message).", ["rule", "class"], registry=registry))
        self._inspector_errors = _Children(Counter("wsfw_inspector_errors", "Inspectors that raised.",
                                                   ["inspector", "route"], registry=registry))
        self._http = _Children(Counter("wsfw_http_requests", "Plain HTTP responses on the public listeners by "
                                       "status code (proxied and wsfw's own).", ["code"], registry=registry))
        self.config_reloads = Counter("wsfw_config_reloads", "Configuration reloads applied (SIGHUP with a valid "
                                      "config).", registry=registry)
        self.policy = Info("wsfw_policy", "The policy version running: a hash of the config file and of every "
                           "rule and schema file it read.", registry=registry)
        self.policy.info({"version": config.version})
        self.inspection = {r.name: LiteHistogram() for r in config.routes}
        Info("wsfw_build", "wsfw version and the libraries it runs on.", registry=registry).info(build_labels())
        registry.register(_LiveCollector(self))

    # -- what hooks in -----------------------------------------------------------

    def reloaded(self, config) -> None:
        """A reload applied ``config``: count it, show its version, time its new routes."""
        self.config_reloads.inc()
        self.policy.info({"version": config.version})
        for route in config.routes:
            self.inspection.setdefault(route.name, LiteHistogram())

    def timed(self, route: str, hook) -> TimedHook:
        return TimedHook(hook, self.inspection.setdefault(route, LiteHistogram()))

    def http_response(self, code) -> None:
        self.http_responses += 1
        self._http.get(str(code) if isinstance(code, int) and 100 <= code <= 599 else "other").inc()

    def audit_event(self, event: dict) -> None:
        """Observer of ``Audit.publisher``: count one decision. Never raises (it would land in the audit file)."""
        try:
            self._count_decision(event)
        except Exception:
            log.failure("counting an audit event failed")

    def _count_decision(self, event: dict) -> None:
        route = label(event.get("route"))
        if event.get("kind") == "inspector_error":
            self.inspector_error_count += 1
            self._inspector_errors.get(label(event.get("inspector")), route).inc()
            return
        for match in event.get("matches") or ():
            if isinstance(match, dict):
                self._rule_matches.get(label(match.get("rule_id")), label(match.get("class"))).inc()
        if event.get("action") not in DISRUPTIVE:
            return  # a match below the threshold: audited, not a block
        rule, cls = primary_rule(event)
        if event.get("enforced"):
            self.blocked += 1
            self._blocks.get(cls, rule, route).inc()
        else:
            self.detected += 1
            self._detections.get(cls, rule, route).inc()
        self.rule_hits.add((rule, cls))
        self.client_hits.add(client_address(event))

    # -- IConnectionObserver -------------------------------------------------------

    def opened(self, relay) -> None:
        self.handshakes_ok += 1
        self._handshake_ok.inc()

    def upstream_connected(self, relay, seconds) -> None:
        child = self._connect.get(relay.route)
        if child is not None:
            child.observe(max(seconds, 0.0))

    def upstream_failed(self, relay, reason) -> None:
        self.upstream_failure_count += 1
        self._upstream_failures.get(reason, self._upstream_failures["unreachable"]).inc()

    def finished(self, relay) -> None:
        for side in (CLIENT, UPSTREAM):
            self.closed_messages[side] += relay.messages[side]
            self.closed_bytes[side] += relay.bytes[side]
            self.closed_dropped[side] += relay.dropped[side]
        if relay.producers:
            self.closed_pauses[UPSTREAM] += relay.producers[0].pauses
            self.closed_pauses[CLIENT] += relay.producers[1].pauses
        self.closed_rate_limited["close"] += relay.rate_closes
        self.closed_rate_limited["drop"] += relay.rate_drops
        if not relay.started:
            code = relay.close_code
            refused = relay.closed_by == "wsfw" and isinstance(code, int) and 400 <= code <= 599
            self.handshakes_failed += 1
            self._handshakes.get(str(code) if refused else "abandoned").inc()

    # -- reading ---------------------------------------------------------------------

    def live(self) -> dict:
        """Totals over ended and live connections, read now (reactor thread)."""
        messages, size = dict(self.closed_messages), dict(self.closed_bytes)
        dropped, pauses = dict(self.closed_dropped), dict(self.closed_pauses)
        rate_limited = dict(self.closed_rate_limited)
        opened = pending = 0
        for relay in (self.tracker.relays if self.tracker is not None else ()):
            if relay.started:
                opened += 1
            else:
                pending += 1
            for side in (CLIENT, UPSTREAM):
                messages[side] += relay.messages[side]
                size[side] += relay.bytes[side]
                dropped[side] += relay.dropped[side]
            if relay.producers:
                pauses[UPSTREAM] += relay.producers[0].pauses
                pauses[CLIENT] += relay.producers[1].pauses
            rate_limited["close"] += relay.rate_closes
            rate_limited["drop"] += relay.rate_drops
        return {"connections_open": opened, "handshakes_pending": pending, "messages": messages, "bytes": size,
                "dropped": dropped, "pauses": pauses, "rate_limited": rate_limited}


class _LiveCollector:
    """Scrape-time families read from the relays (see the module docstring)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # collect() reads live state: never call it at registration time

    def collect(self):
        live = self.metrics.live()
        yield GaugeMetricFamily("wsfw_connections_open", "WebSocket connections relayed now (both hops open).",
                                value=live["connections_open"])
        yield GaugeMetricFamily("wsfw_handshakes_in_progress", "Client handshakes waiting for the upstream.",
                                value=live["handshakes_pending"])
        messages = CounterMetricFamily("wsfw_messages", "WebSocket messages by sender (client or upstream) and "
                                       "verdict (forward, or block: withheld by policy).",
                                       labels=["direction", "verdict"])
        size = CounterMetricFamily("wsfw_message_bytes", "WebSocket message payload bytes by sender.",
                                   labels=["direction"])
        pauses = CounterMetricFamily("wsfw_backpressure_pauses", "Times a slow peer (side) paused reading from "
                                     "the other peer.", labels=["side"])
        for side in (CLIENT, UPSTREAM):
            blocked = live["dropped"][side]
            messages.add_metric([side, "forward"], max(live["messages"][side] - blocked, 0))
            messages.add_metric([side, "block"], blocked)
            size.add_metric([side], live["bytes"][side])
            pauses.add_metric([side], live["pauses"][side])
        yield messages
        yield size
        yield pauses
        limited = CounterMetricFamily("wsfw_rate_limited_messages", "Client messages over [limits] message_rate "
                                      "or byte_rate, by what they got: close (the connection, 1008) or drop.",
                                      labels=["action"])
        for action in ("close", "drop"):
            limited.add_metric([action], live["rate_limited"][action])
        yield limited
        guard = self.metrics.guard
        if guard is not None:
            refusals = CounterMetricFamily("wsfw_admission_refusals", "Requests refused before routing, by reason: "
                                           "banned (403), total (max_connections_total, 503), per_ip "
                                           "(max_connections_per_ip, 429), handshake_rate (429).", labels=["reason"])
            for reason in REFUSALS:
                refusals.add_metric([reason], guard.refusals[reason])
            yield refusals
            yield CounterMetricFamily("wsfw_bans", "Client addresses banned (ban_after disruptive decisions within "
                                      "ban_window).", value=guard.bans_total)
            yield GaugeMetricFamily("wsfw_banned_addresses", "Client addresses refused now for a ban.",
                                    value=guard.banned_count())
        inspection = HistogramMetricFamily("wsfw_inspection_seconds", "Time to decide on one message (decode "
                                           "and every inspector), by route.", labels=["route"])
        for route, histogram in sorted(self.metrics.inspection.items()):
            inspection.add_metric([route], histogram.buckets(), histogram.sum)
        yield inspection
        yield from self.cluster()

    def cluster(self):
        """``[cluster]``: whether Redis answers, what failed, and the fleet stream's writes."""
        link, events = self.metrics.cluster, self.metrics.fleet_events
        if link is None:
            return
        yield GaugeMetricFamily("wsfw_cluster_up", "1 while Redis answers; 0: degraded, this node decides on its "
                                "own state.", value=1 if link.up else 0)
        yield CounterMetricFamily("wsfw_cluster_errors", "Redis commands that failed or found Redis away.",
                                  value=link.errors)
        yield CounterMetricFamily("wsfw_cluster_outages", "Times Redis became unreachable.", value=link.transitions)
        if events is not None:
            yield CounterMetricFamily("wsfw_cluster_events_appended", "Audit events written to the fleet stream.",
                                      value=events.appended)
            yield CounterMetricFamily("wsfw_cluster_events_dropped", "Audit events dropped from the buffer while "
                                      "Redis was away.", value=events.dropped)
            yield GaugeMetricFamily("wsfw_cluster_events_pending", "Audit events waiting for Redis.",
                                    value=len(events.pending))


def build_labels() -> dict[str, str]:
    import autobahn
    import twisted

    from wsfw.detect.backend import HAVE_HYPERSCAN

    return {"version": __version__, "python": platform.python_version(), "twisted": twisted.__version__,
            "autobahn": autobahn.__version__, "detect_backend": "hyperscan" if HAVE_HYPERSCAN else "re"}
