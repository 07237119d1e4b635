"""Compiled rules and the per-route policy that evaluates them on each message.

Everything here is built once, at config load: conditions parsed and compiled into closures,
regular expressions and globs compiled, rules indexed by direction and by the operation
names they require. A message then evaluates only its candidates: the rules of its
direction that either name one of its operations or name none.
"""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import parse_qs

from wsfw.forwarding import client_address, cookie_jar
from wsfw.inspection import Finding
from wsfw.relay import CLIENT, UPSTREAM

from .glob import PathGlob
from .lang import OP_FIELDS, POST_FIELDS, Expr, Not, Test
from .model import name_path

__all__ = ["ACTIONS", "Rule", "Exclusion", "Policy", "ConnState", "Msg", "getter"]

ACTIONS = ("allow", "block", "drop", "log", "exclude", "rate-limit")
#: Actions that end rule evaluation for the message.
TERMINAL = frozenset(("allow", "block", "drop"))
ALLOW = object()


class Exclusion:
    """``action = exclude``: the detector classes / signature ids ignored in params matching ``param``."""

    __slots__ = ("glob", "ids")

    def __init__(self, param: str, ids):
        self.glob = PathGlob(param)
        self.ids = frozenset(ids)


class Rule:
    """One compiled rule (``[rule:ID]``)."""

    __slots__ = ("id", "priority", "seq", "routes", "direction", "expr", "action", "msg", "tags", "exclusion",
                 "per_second", "burst", "exceed", "rate_text", "where", "phase", "names")

    def __init__(self, *, id, priority=100, seq=0, routes=None, direction=CLIENT, expr=None, action="block",
                 msg=None, tags=(), exclusion=None, per_second=0.0, burst=1, exceed="block", rate_text="",
                 where=""):
        self.id = id
        self.priority = priority
        self.seq = seq
        self.routes = routes  # None: every route
        self.direction = direction  # client | upstream | both
        self.expr = expr  # Expr or None (always)
        self.action = action
        self.msg = msg or f"rule {id}"
        self.tags = tuple(tags)
        self.exclusion = exclusion
        self.per_second = per_second
        self.burst = burst
        self.exceed = exceed
        self.rate_text = rate_text
        self.where = where
        self.phase = "post" if expr is not None and expr.fields & POST_FIELDS else "pre"
        self.names = expr.names if expr is not None else None

    @property
    def order(self):
        return (self.priority, self.seq)

    def applies_to(self, route: str) -> bool:
        return self.routes is None or route in self.routes

    def finding(self, m, witness, action=None, reason=None) -> Finding:
        action = action or self.action
        excerpt = ""
        if witness:
            for path, value in m.decoded.params:
                if path == witness:
                    excerpt = value
                    break
        return Finding(inspector="rules", action=action, reason=reason or self.msg, rules=(self.id,),
                       classes=("rule",), path=witness or None, excerpt=excerpt, tags=self.tags)

    def __repr__(self):
        return f"Rule({self.id!r}, {self.action})"


# -- field values ------------------------------------------------------------------


def getter(field):
    """``msg -> iterable of (label, value)`` for a parsed field (lang.Field)."""
    name, arg = field.name, field.arg
    if name == "param":
        match = PathGlob(arg).match

        def params(m):
            for path, value in m.decoded.params:
                if match(path):
                    yield path, value
        return params
    if name == "header":
        label = f"header:{arg}"
        return lambda m: [(label, v) for k, v in m.view.headers if k == arg]
    if name == "cookie":
        label = f"cookie:{arg}"
        return lambda m: [(label, v) for v in m.state.cookies(m.view).get(arg, ())]
    if name == "query" and arg is not None:
        label = f"query:{arg}"
        return lambda m: [(label, v) for v in m.state.arguments(m.view).get(arg, ())]
    if name == "event":
        return lambda m: [("event", n) for n in m.names()]
    if name in OP_FIELDS:
        return lambda m: [(name_path(op), op.name) for op in m.decoded.ops if op.field == name and op.name is not None]
    if name == "socketio.namespace":
        return lambda m: [(p, v) for p, v in m.decoded.params if p == "socketio.namespace"]
    if name == "framing":
        return lambda m: (("framing", m.decoded.format),)
    if name == "client":
        return lambda m: (("client", m.state.client(m.view, m.settings)),)
    if name == "origin":
        return lambda m: [("origin", v) for k, v in m.view.headers if k == "origin"]
    if name == "subprotocol":
        return lambda m: (("subprotocol", m.view.subprotocol),) if m.view.subprotocol is not None else ()
    if name == "path":
        return lambda m: (("path", m.view.path),)
    if name == "query":
        return lambda m: (("query", m.view.query),)
    if name == "size":
        return lambda m: (("size", float(m.size)),)
    if name == "detector":
        return lambda m: [("detector", c) for f in m.findings for c in f.classes]
    if name in ("signature", "rule_id"):
        return lambda m: [("signature", r) for f in m.findings for r in f.rules]
    if name == "score":
        return lambda m: (("score", float(max((f.score for f in m.findings), default=0))),)
    if name == "inspector":
        return lambda m: [("inspector", f.inspector) for f in m.findings]
    raise AssertionError(name)


def compile_expr(text: str) -> Expr:
    """Parse and compile a ``when`` condition; raises lang.ParseError."""
    return Expr(text, getter)


# -- per-connection and per-message state ------------------------------------------------


class ConnState:
    """What rules remember about one connection (or one long-polling session): the values
    derived from its handshake, computed once, and its rate-limit buckets."""

    __slots__ = ("_client", "_cookies", "_arguments", "buckets", "memo")

    def __init__(self, buckets: dict | None = None):
        self._client = False
        self._cookies = None
        self._arguments = None
        #: rule seq -> [tokens, last refill]: shared by the requests of one polling session
        self.buckets: dict[int, list[float]] = {} if buckets is None else buckets
        #: results of handshake-only subexpressions (lang.compile_node)
        self.memo: dict[int, str | None] = {}

    def client(self, view, settings):
        if self._client is False:
            # "ip:port", as the relay writes it (IPv6 unbracketed: the port is after the last colon)
            peer_ip = view.peer.rpartition(":")[0].strip("[]")
            address = client_address(peer_ip, view.headers, settings) if settings is not None else peer_ip
            try:
                self._client = ipaddress.ip_address(address)
            except ValueError:
                self._client = None
        return self._client

    def cookies(self, view) -> dict[str, list[str]]:
        if self._cookies is None:
            self._cookies = cookie_jar(v for k, v in view.headers if k == "cookie")
        return self._cookies

    def arguments(self, view) -> dict[str, list[str]]:
        if self._arguments is None:
            self._arguments = parse_qs(view.query or "", keep_blank_values=True)
        return self._arguments


class Msg:
    """One message as the rules see it."""

    __slots__ = ("decoded", "view", "direction", "size", "state", "settings", "findings", "_names")

    def __init__(self, decoded, view, direction, size, state, settings):
        self.decoded = decoded
        self.view = view
        self.direction = direction
        self.size = size
        self.state = state
        self.settings = settings
        self.findings = ()
        self._names = None

    def names(self) -> list[str]:
        """The message's operation names (every invocation of a batch), else its Decoded.event."""
        names = self._names
        if names is None:
            decoded = self.decoded
            if decoded.ops:
                names = [op.name for op in decoded.ops if op.name is not None]
            else:
                names = [decoded.event] if decoded.event is not None else []
            self._names = names
        return names


# -- the per-route policy --------------------------------------------------------------


class RuleIndex:
    """The rules of one direction and phase, in order, indexed by the operation names they need."""

    __slots__ = ("always", "by_name")

    def __init__(self, rules):
        self.always = [r for r in rules if r.names is None]
        named: dict[str, list] = {}
        for rule in rules:
            for name in rule.names or ():
                named.setdefault(name, []).append(rule)
        self.by_name = {name: sorted(set(self.always) | set(extra), key=lambda r: r.order)
                        for name, extra in named.items()}

    def candidates(self, m):
        by_name = self.by_name
        if not by_name:
            return self.always
        names = m.names()
        if not names:
            return self.always
        if len(names) == 1:
            return by_name.get(names[0], self.always)
        found = set(self.always)
        for name in names:
            found.update(by_name.get(name, ()))
        return sorted(found, key=lambda r: r.order)


class Outcome:
    """What the rules before detection decided about a message."""

    __slots__ = ("logs", "exclusions", "terminal", "hits")

    def __init__(self):
        self.logs = []  # Findings of log rules (and rate limits exceeded with exceed = log)
        self.exclusions = []  # active Exclusions
        self.terminal = None  # ALLOW, or the Finding of a block / drop rule
        self.hits = []  # (rule id, action, witness): for wsfw inspect


class Policy:
    """The rules and positive model of one route, compiled and indexed."""

    def __init__(self, route: str, rules, model=None, settings=None, clock=time.monotonic):
        self.route = route
        self.model = model
        self.settings = settings
        self.clock = clock
        rules = sorted((r for r in rules if r.applies_to(route)), key=lambda r: r.order)
        self.rules = rules
        self.pre, self.post = {}, {}
        for direction in (CLIENT, UPSTREAM):
            mine = [r for r in rules if r.direction in (direction, "both")]
            pre = [r for r in mine if r.phase == "pre"]
            post = [r for r in mine if r.phase == "post"]
            self.pre[direction] = RuleIndex(pre) if pre else None
            self.post[direction] = RuleIndex(post) if post else None

    def for_handshake(self) -> "Policy":
        """The policy that judges this route's opening handshakes (``Pipeline.inspect_handshake``):
        the rules that can mean something before any message exists, and no positive model
        (a handshake carries no operation; the model would call every one unknown).

        A rule qualifies when it has no condition (an exclusion for a whole route, a
        blanket ``log``) or when every field it tests is known at the handshake:
        ``client``, ``origin``, ``header:``, ``cookie:``, ``query``, ``path``, detection
        results, and ``param:`` globs that name handshake parameters
        (``param:"handshake.cookie.*"``). A rule on anything else (``event``, ``size``,
        ``framing``, message parameters, the negotiated ``subprotocol``, which the upstream
        has not chosen yet) is about messages: at the handshake a negated test of it
        (``not param:"json.type" exists``, ``subprotocol != "mqtt"``) would hold and refuse
        connections the rule never meant to."""
        rules = [r for r in self.rules if r.expr is None or handshake_only(r.expr.tree)]
        return Policy(self.route, rules, None, self.settings, self.clock)

    def message(self, decoded, view, direction, size, state) -> Msg:
        return Msg(decoded, view, direction, size, state, self.settings)

    def before(self, m: Msg) -> Outcome | None:
        """Evaluate the rules that run before detection; None when none matched."""
        index = self.pre[m.direction]
        if index is None:
            return None
        out = None
        for rule in index.candidates(m):
            expr = rule.expr
            witness = expr.match(m) if expr is not None else ""
            if witness is None:
                continue
            if out is None:
                out = Outcome()
            action = rule.action
            if action == "exclude":
                out.hits.append((rule.id, action, rule.exclusion.glob.text))
            else:
                out.hits.append((rule.id, action, witness))
            if action == "exclude":
                out.exclusions.append(rule.exclusion)
            elif action == "log":
                out.logs.append(rule.finding(m, witness))
            elif action == "rate-limit":
                finding = self._limit(m, rule, witness)
                if finding is not None:
                    if finding.action == "log":
                        out.logs.append(finding)
                    else:
                        out.terminal = finding
                        break
            elif action == "allow":
                out.terminal = ALLOW
                break
            else:  # block, drop
                out.terminal = rule.finding(m, witness)
                break
        return out

    def after(self, m: Msg, findings, hits=None) -> list:
        """The rules that test detection results: Findings of those that matched, in order,
        up to the first block / drop."""
        index = self.post[m.direction]
        if index is None:
            return []
        m.findings = findings
        out = []
        for rule in index.candidates(m):
            witness = rule.expr.match(m)
            if witness is None:
                continue
            if hits is not None:
                hits.append((rule.id, rule.action, witness))
            if rule.action == "rate-limit":
                finding = self._limit(m, rule, witness)
                if finding is None:
                    continue
            else:
                finding = rule.finding(m, witness)
            out.append(finding)
            if finding.action in ("block", "drop"):
                break
        return out

    def _limit(self, m, rule, witness) -> Finding | None:
        """Take a token from the rule's bucket for this connection; a Finding when it is empty."""
        state = m.state
        if state is None:
            return None
        now = self.clock()
        bucket = state.buckets.get(rule.seq)
        if bucket is None:
            state.buckets[rule.seq] = [rule.burst - 1.0, now]
            return None
        tokens = min(float(rule.burst), bucket[0] + (now - bucket[1]) * rule.per_second)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return rule.finding(m, witness, action=rule.exceed, reason=f"{rule.msg}: rate limit exceeded ({rule.rate_text})")


#: Rule fields with a value at the handshake (``param:`` too when its glob names handshake parameters).
HANDSHAKE_FIELDS = frozenset(("client", "origin", "header", "cookie", "query", "path")) | POST_FIELDS


def handshake_only(node) -> bool:
    """Whether a parsed condition tests only what the opening handshake already has (see Policy.for_handshake)."""
    if isinstance(node, Test):
        name = node.field.name
        if name == "param":
            return str(node.field.arg).startswith("handshake.")
        return name in HANDSHAKE_FIELDS
    if isinstance(node, Not):
        return handshake_only(node.part)
    return all(handshake_only(part) for part in node.parts)


def exclusion_filter(exclusions):
    """``path -> ids`` for Engine.scan: the detector classes and signature ids ignored there."""
    if len(exclusions) == 1:
        only = exclusions[0]
        match, ids = only.glob.match, only.ids

        def one(path):
            return ids if match(path) else ()
        return one

    def several(path):
        out = ()
        for exclusion in exclusions:
            if exclusion.glob.match(path):
                out = exclusion.ids if not out else (frozenset(out) | exclusion.ids)
        return out
    return several
