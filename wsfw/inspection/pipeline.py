"""One route's inspection: decode each message, run the inspectors in order, decide.

This is the ``IMessageHook`` the relay calls for every message, and what the
HTTP proxy calls for long-polling bodies, so both transports get the same
policy. Modes follow Coraza: ``block`` acts, ``detect`` audits with
``enforced=false`` and forwards, ``off`` skips inspection (caps still apply).
The first blocking finding wins.
"""

from __future__ import annotations

import collections
from urllib.parse import parse_qs

from twisted.python.failure import Failure
from zope.interface import implementer

from wsfw import decoders
from wsfw.decoders.flat import plain_values
from wsfw.hook import FORWARD, MessageView, Verdict
from wsfw.inspection import Finding
from wsfw.inspection.audit import Audit
from wsfw.inspection.detect import DetectInspector
from wsfw.inspection.leaks import LeaksInspector
from wsfw.interfaces import IMessageHook
from wsfw.logs import logger
from wsfw.policy.runtime import ALLOW, ConnState, Policy, exclusion_filter
from wsfw.relay import CLIENT, UPSTREAM

log = logger("wsfw.inspection")

BLOCK_REASON = "blocked by policy"

#: Decoder results that mean "no format recognised" for a binary payload.
OPAQUE = frozenset({"raw", "binary"})


def _is_utf8(data: bytes) -> bool:
    """Binary payloads are scanned as text only when they are text.

    Random-looking bytes (images, compressed or encrypted data) decoded as
    Latin-1 match text signatures by chance; they are bounded by the size caps
    instead. Binary formats with structure (Socket.IO attachments, later
    MessagePack/CBOR) are decoded and inspected.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


#: Route framings whose HTTP requests may be SignalR long-polling / SSE sends.
_SIGNALR_HTTP = frozenset({"signalr", "signalr-msgpack", "auto"})
#: Long-polling sessions whose decoder state is kept (least recently used dropped first).
MAX_HTTP_SESSIONS = 10_000


class HttpSession:
    """One long-polling session (Engine.IO ``sid`` or SignalR ``id``) and its decoder state."""

    __slots__ = ("key", "framing", "state", "policy_state")

    def __init__(self, key: str, framing: str):
        self.key = key
        self.framing = framing
        self.state = decoders.ConnectionState()
        self.policy_state = None  # rate-limit buckets of the session's requests, when the route has rules

    @property
    def kind(self) -> str | None:
        """"engineio", "signalr" (confirmed by the route's framing or by sniffing), or None."""
        if self.framing == "socketio":
            return "engineio"
        if self.framing != "auto" or self.state.framing == "signalr":
            return "signalr"
        return None


@implementer(IMessageHook)
class Pipeline:
    def __init__(self, *, route: str, mode: str, framing: str, inspect_upstream: bool, inspectors: list,
                 limits: decoders.Limits, on_decode_error: str, on_decode_limit: str, on_error: str,
                 audit: Audit, policy=None):
        self.route = route
        self.mode = mode
        self.framing = framing
        self.inspect_upstream = inspect_upstream
        self.inspectors = inspectors
        self.limits = limits
        self.on_decode_error = on_decode_error
        self.on_decode_limit = on_decode_limit
        self.on_error = on_error
        self.audit = audit
        #: The route's rules and positive model (wsfw.policy.runtime.Policy), or None.
        self.policy = policy
        #: The part of ``policy`` that judges opening handshakes (Policy.for_handshake), or None.
        self.handshake_policy = policy.for_handshake() if policy is not None else None
        self._policy_state: dict[str, object] = {}
        #: The detector's engine when it is the only judge of a direction's messages (no rules, and
        #: no other inspector but ``leaks``, which reads upstream messages only): a message of a plain
        #: shape is then checked value by value, without decoding it in full (wsfw.decoders.flat).
        self._plain = None
        self._plain_directions = frozenset()
        kinds = [type(inspector) for inspector in inspectors]
        if policy is None and kinds.count(DetectInspector) == 1 and set(kinds) <= {DetectInspector, LeaksInspector}:
            self._plain = inspectors[kinds.index(DetectInspector)].engine
            self._plain_directions = frozenset((CLIENT,) if LeaksInspector in kinds else (CLIENT, UPSTREAM))
        self._connections: dict[tuple[str, str], tuple[str, object]] = {}
        self._http_sessions: collections.OrderedDict[str, HttpSession] = collections.OrderedDict()

    # -- WebSocket messages ---------------------------------------------------

    def inspect_message(self, view):
        direction = view.direction
        if self.mode == "off" or (direction == UPSTREAM and not self.inspect_upstream):
            return FORWARD
        # Decoder state (e.g. Socket.IO binary attachments) is per connection *and* direction.
        key = (view.conn_id, direction)
        known = self._connections.get(key)
        if known is None:
            framing = decoders.select(self.framing, view.path, view.query, view.subprotocol)
            known = self._connections[key] = (framing, decoders.ConnectionState())
        framing, state = known
        payload = view.payload
        if direction in self._plain_directions and not view.is_binary:
            values = plain_values(payload, framing, state, self.limits)
            if values is not None and self._plain.clean(values):
                return FORWARD
        decoded = decoders.decode_message(payload, view.is_binary, framing, self.limits, state)
        if view.is_binary and decoded.format in OPAQUE and not _is_utf8(payload):
            return FORWARD
        return self._judge(decoded, "message", view.conn_id, view.peer, direction, view.path, view)

    def adopt(self, old) -> None:
        """Take over the per-connection state of the pipeline this one replaces on a reload, so
        open connections keep decoding where they were: each keeps the framing it settled on,
        its pending attachments and records, and a polling session its own. Rate-limit buckets
        are not carried over: the new rules may number theirs differently."""
        if isinstance(old, Pipeline):
            self._connections = old._connections
            self._http_sessions = old._http_sessions

    def connection_closed(self, conn_id: str) -> None:
        self._connections.pop((conn_id, "client"), None)
        self._connections.pop((conn_id, "upstream"), None)
        if self._policy_state:
            self._policy_state.pop(conn_id, None)

    # -- the opening handshake -------------------------------------------------

    def inspect_handshake(self, *, peer: str, client: str, head) -> Verdict:
        """A verdict on a WebSocket opening handshake before the upstream is dialled; anything but
        FORWARD means refuse it (403).

        Its path, query arguments, cookies and the headers applications read become named
        parameters (``handshake.query.NAME``, ``handshake.cookie.NAME``, ``handshake.header.NAME``:
        ``wsfw.handshake.decode``) and go through what a client message goes through: the
        decode bounds, the route's rules (those that apply to a handshake, exclusions
        included: Policy.for_handshake), the inspectors and the mode, with one audit record
        of kind ``handshake`` per decision. An attack in a query argument is otherwise handed
        to the application, which reads it, before the first message wsfw would see.

        ``head`` is a wsfw.handshake.Head; ``peer`` the TCP peer as ``ip:port`` (rules compute
        the client from it), ``client`` the client address the audit records name
        (``wsfw.forwarding.client_address``: the peer, or behind a trusted proxy the address
        it forwarded).
        """
        if self.mode == "off":
            return FORWARD
        from wsfw import handshake

        decoded = handshake.decode(head, self.limits)
        view = MessageView(conn_id="", route=self.route, peer=peer, direction=CLIENT, index=0, payload=b"",
                           is_binary=False, subprotocol=None, path=head.path, query=head.query, headers=head.headers)
        pstate = ConnState() if self.handshake_policy is not None else None
        return self._judge(decoded, "handshake", None, client, CLIENT, head.path, view, view, pstate,
                           self.handshake_policy)

    # -- HTTP (long-polling bodies) -------------------------------------------

    def http_session(self, path: str, query: str) -> HttpSession | None:
        """The long-polling session a plain HTTP request belongs to, or None.

        Engine.IO polling carries ``sid=``; SignalR long-polling and SSE post
        their records with ``id=`` (the connection token). The session keeps the
        decoder state across requests, as a WebSocket connection would (SignalR's
        handshake picks MessagePack for the later binary bodies).
        """
        framing = decoders.select(self.framing, path, query, None)
        if framing == "socketio":
            name = "sid"
        elif framing in _SIGNALR_HTTP and not path.endswith("/negotiate"):
            name = "id"
        else:
            return None
        values = parse_qs(query).get(name)
        if not values:
            return None
        key = f"{name}:{values[0]}"
        session = self._http_sessions.get(key)
        if session is None:
            session = self._http_sessions[key] = HttpSession(values[0], framing)
            if len(self._http_sessions) > MAX_HTTP_SESSIONS:
                self._http_sessions.popitem(last=False)
        else:
            self._http_sessions.move_to_end(key)
        return session

    def inspect_http_body(self, *, body: bytes, content_type: str | None, peer: str, path: str,
                          query: str, session: HttpSession | None = None,
                          headers: tuple[tuple[str, str], ...] = ()) -> Verdict:
        """A verdict for one plain-HTTP request body; ``close`` means refuse it with 403.

        Long-polling bodies (every Engine.IO packet, every SignalR record in
        them) are decoded exactly like the WebSocket messages they stand in for,
        so falling back to polling evades nothing; other bodies are decoded by
        the route's framing. Binary bodies that no decoder recognises are opaque
        uploads (media, archives): size caps only, as for binary messages.
        ``headers`` (lower-cased names) are the request's, for rules that test them.
        """
        if self.mode == "off":
            return FORWARD
        is_binary = not _is_utf8(body)
        if session is not None and session.framing == "socketio":
            if is_binary:
                return FORWARD
            # Opaque binary attachments ("binary": not UTF-8) are size-capped, not scanned,
            # exactly as over WebSocket.
            decoded_all = [d for d in decoders.decode_polling(body, content_type, self.limits, session.state)
                           if d.format != "binary"]
        else:
            framing = session.framing if session is not None else decoders.select(self.framing, path, query, None)
            state = session.state if session is not None else None
            decoded = decoders.decode_message(body, is_binary, framing, self.limits, state)
            if is_binary and decoded.format in OPAQUE:
                return FORWARD
            decoded_all = [decoded]
        pview = pstate = None
        if self.policy is not None:
            pview = MessageView(conn_id="", route=self.route, peer=f"{peer}:0", direction=CLIENT, index=0, payload=body,
                                is_binary=is_binary, subprotocol=None, path=path, query=query, headers=headers)
            # Each request has its own headers: its own handshake-derived values; a polling
            # session's requests share their rate-limit buckets, as a connection's messages do.
            if session is not None:
                if session.policy_state is None:
                    session.policy_state = {}
                pstate = ConnState(session.policy_state)
            else:
                pstate = ConnState()
        for decoded in decoded_all:
            verdict = self._judge(decoded, "http", None, peer, "client", path, None, pview, pstate)
            if verdict is not FORWARD:
                return verdict
        return FORWARD

    def explain(self, payload: bytes, is_binary: bool = False, path: str = "/", query: str = "",
                subprotocol: str | None = None, state=None, trace: list | None = None,
                headers: tuple[tuple[str, str], ...] = (), peer: str = "127.0.0.1:0", policy_state=None):
        """Decode one message and run the route's rules, model and inspectors without auditing:
        for ``wsfw inspect``.

        Pass the same ``state`` (and ``policy_state``) for consecutive messages of one
        connection (split frames, a SignalR handshake followed by MessagePack records, rate
        limits). ``trace``, when given, receives ``(rule id, action, matched param)`` for every
        rule that matched and every positive-model decision."""
        framing = decoders.select(self.framing, path, query, subprotocol)
        state = state if state is not None else decoders.ConnectionState()
        decoded = decoders.decode_message(payload, is_binary, framing, self.limits, state)
        if self.policy is None:
            findings = [f for f in (i.inspect(None, decoded) for i in self.inspectors) if f is not None]
            return decoded, findings
        findings = []

        def collect(finding):
            findings.append(finding)
            if self.mode == "block" and finding.action in ("block", "drop"):
                return Verdict.close(1008, finding.reason)
            return FORWARD

        view = MessageView(conn_id="inspect", route=self.route, peer=peer, direction=CLIENT, index=0,
                           payload=payload, is_binary=is_binary, subprotocol=subprotocol, path=path, query=query,
                           headers=tuple((k.lower(), v) for k, v in headers))
        self._judge_policy(decoded, "message", None, peer, CLIENT, path, None, view,
                           policy_state if policy_state is not None else ConnState(), collect, trace)
        return decoded, findings

    # -- the decision ----------------------------------------------------------

    def _judge(self, decoded, kind, conn, peer, direction, path, view, pview=None, pstate=None,
               policy=None) -> Verdict:
        """``policy``: the rules to apply instead of the route's own (a handshake's, Policy.for_handshake)."""
        # The audit context is only built when there is something to audit:
        # this runs for every message.
        if decoded.error or decoded.truncated:
            verdict = self._judge_decoding(decoded, kind, conn, peer, direction, path)
            if verdict is not None:
                return verdict
        if policy is None:
            policy = self.policy
        if policy is not None:
            if pview is None:  # a WebSocket message: its connection's rule state
                pview = view
                pstate = self._policy_state.get(conn)
                if pstate is None:
                    pstate = self._policy_state[conn] = ConnState()
            return self._judge_policy(decoded, kind, conn, peer, direction, path, view, pview, pstate,
                                      policy=policy)
        for inspector in self.inspectors:
            try:
                finding = inspector.inspect(view, decoded)
            except Exception:
                verdict = self._inspector_failed(inspector, conn)
                if verdict is None:
                    continue
                return verdict
            if finding is not None:
                verdict = self._decide(finding, self._context(decoded, kind, conn, peer, direction, path))
                if verdict is not FORWARD:
                    return verdict
        return FORWARD

    def _inspector_failed(self, inspector, conn) -> Verdict | None:
        """``on_inspection_error`` for an inspector that raised: a close verdict, or None (go on)."""
        failure = Failure()
        log.failure("inspector {inspector} raised on {conn}", failure, inspector=inspector.name, conn=conn or "-")
        action = "allow" if self.on_error == "allow" else "close"
        self.audit.error(conn=conn, route=self.route, inspector=inspector.name,
                         error=failure.getErrorMessage() or failure.type.__name__, action=action)
        if action == "allow":
            return None
        return Verdict.close(1011, "inspection error", rule=f"{inspector.name}:error")

    def _judge_policy(self, decoded, kind, conn, peer, direction, path, view, pview, pstate, decide=None,
                      trace=None, policy=None) -> Verdict:
        """A message on a route with rules or a positive model (wsfw.policy): rules before
        detection (allow / block / drop / log / rate-limit / exclude), the positive model
        (client messages), the inspectors with the matching exclusions, then the rules that
        test detection results. Each finding goes through ``decide`` (default: audit + verdict).
        ``policy`` replaces the route's (a handshake's rules)."""
        if policy is None:
            policy = self.policy
        if decide is None:
            decide = _Decider(self, decoded, kind, conn, peer, direction, path)
        m = policy.message(decoded, pview, direction, len(pview.payload), pstate)
        exclude = None
        outcome = policy.before(m)
        if outcome is not None:
            if trace is not None:
                trace.extend(outcome.hits)
            for finding in outcome.logs:
                decide(finding)
            terminal = outcome.terminal
            if terminal is ALLOW:
                return FORWARD
            if terminal is not None:
                verdict = decide(terminal)
                if verdict is not FORWARD:
                    return verdict
            if outcome.exclusions:
                exclude = exclusion_filter(outcome.exclusions)
        model = policy.model
        if model is not None and direction == CLIENT:
            finding = model.check(decoded)
            if finding is not None:
                if trace is not None:
                    trace.append((finding.rules[0], finding.action, finding.path))
                verdict = decide(finding)
                if verdict is not FORWARD:
                    return verdict
        post = policy.post[direction]
        findings = [] if post is not None else None
        for inspector in self.inspectors:
            try:
                if exclude is None:
                    finding = inspector.inspect(view, decoded)
                elif getattr(inspector, "supports_exclusions", False):
                    finding = inspector.inspect(view, decoded, exclude)
                else:
                    finding = _without_excluded(inspector.inspect(view, decoded), exclude)
            except Exception:
                verdict = self._inspector_failed(inspector, conn)
                if verdict is None:
                    continue
                return verdict
            if finding is not None:
                if findings is not None:
                    findings.append(finding)
                verdict = decide(finding)
                if verdict is not FORWARD:
                    return verdict
        if post is not None:
            for finding in policy.after(m, findings, trace):
                verdict = decide(finding)
                if verdict is not FORWARD:
                    return verdict
        return FORWARD

    def _context(self, decoded, kind, conn, peer, direction, path) -> dict:
        return dict(kind=kind, conn=conn, peer=peer, route=self.route, direction=direction, framing=decoded.format,
                    operation=decoded.event, path=path)

    def _judge_decoding(self, decoded, kind, conn, peer, direction, path) -> Verdict | None:
        """The decode-error and decode-limit policies; None = go on inspecting."""
        context = self._context(decoded, kind, conn, peer, direction, path)
        if decoded.error:
            log.info("{conn} undecodable {framing} message: {error}", conn=conn or "-", framing=decoded.format,
                     error=decoded.error, event="decode_error")
            if self.on_decode_error == "close" and direction != UPSTREAM:
                return self._decide(Finding("decoder", "block", f"undecodable {decoded.format}: {decoded.error}"),
                                    context, code=1007)
        if decoded.truncated and self.on_decode_limit == "block":
            return self._decide(Finding("decoder", "block", f"decode limit reached: {decoded.truncated}"), context)
        return None

    def _decide(self, finding: Finding, context: dict, code: int = 1008) -> Verdict:
        """``block`` findings close the sender; ``drop`` findings withhold the message only."""
        disruptive = finding.action in ("block", "drop")
        enforced = self.mode == "block" and disruptive
        action = finding.action if enforced else ("detect" if disruptive else "log")
        self.audit.decision(finding=finding, enforced=enforced, action=action, **context)
        if not enforced:
            return FORWARD
        rule = ",".join(finding.rules) or finding.inspector
        if finding.action == "drop":
            return Verdict.drop(finding.reason, rule=rule)
        return Verdict.close(code, finding.reason, rule=rule)


class _Decider:
    """Pipeline._decide for one message, its audit context built on the first finding only."""

    __slots__ = ("pipeline", "args", "context")

    def __init__(self, pipeline, *args):
        self.pipeline = pipeline
        self.args = args
        self.context = None

    def __call__(self, finding) -> Verdict:
        if self.context is None:
            self.context = self.pipeline._context(*self.args)
        return self.pipeline._decide(finding, self.context)


def _without_excluded(finding, exclude):
    """An inspector's finding, or None when an exclusion covers all its rules or classes at its param
    (for inspectors that cannot apply exclusions per parameter themselves)."""
    if finding is None or finding.path is None:
        return finding
    ids = exclude(finding.path)
    if ids and ((finding.rules and set(finding.rules) <= ids) or (finding.classes and set(finding.classes) <= ids)):
        return None
    return finding


def build_inspectors(inspection) -> list:
    """The ``[inspection] inspectors``, built from their ``[inspector:NAME]`` options (this compiles
    the signature database: seconds, so a reload reuses them when those settings are unchanged)."""
    from wsfw.inspection.registry import factories

    known, _ = factories()
    return [known[name].build(inspection.options_for(name)) for name in inspection.inspectors]


def build_pipelines(config, audit: Audit, inspectors: list | None = None) -> dict:
    """A pipeline per route, sharing inspector instances (they are stateless and compiled once).

    A route with rules or a positive model ([rule:*], [model:ROUTE], rule files) gets its own
    compiled, indexed wsfw.policy Policy; the others get none and pay nothing for it."""
    inspection = config.inspection
    if inspectors is None:
        inspectors = build_inspectors(inspection)
    limits = decoders.Limits(max_depth=inspection.max_decode_depth, max_params=inspection.max_params,
                             max_expanded_bytes=inspection.max_expanded_bytes)
    return {
        route.name: Pipeline(route=route.name, mode=config.mode_for(route), framing=route.framing,
                             inspect_upstream=route.inspect_upstream, inspectors=inspectors, limits=limits,
                             on_decode_error=inspection.on_decode_error, on_decode_limit=inspection.on_decode_limit,
                             on_error=config.settings.on_inspection_error, audit=audit,
                             policy=route_policy(config, route.name))
        for route in config.routes
    }


def route_policy(config, route: str):
    """The compiled Policy of ``route``, or None when it has no rules and no positive model."""
    policy = getattr(config, "policy", None)
    if not policy:
        return None
    rules, model = policy.for_route(route)
    if not rules and model is None:
        return None
    return Policy(route, rules, model, config.settings)
