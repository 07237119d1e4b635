"""The relay: joins two ``IRelayEnd`` hops, asks the hook about every message, and
decides how each hop closes. It never touches an Autobahn class, so all of its
decisions can be tested with fakes and a fake clock.

It also enforces the per-connection abuse limits of ``[limits]`` (message and
byte rates of what the client sends) and ``[timeouts] max_lifetime``, and tells
the connection's ``IAdmissionTicket`` about every close it makes for abuse, so
``wsfw.guard`` can ban an address that keeps provoking them.
"""

from __future__ import annotations

import collections
import itertools
import os

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from wsfw.hook import FORWARD, MessageView, Verdict
from wsfw.logs import logger
from wsfw.relay import CLIENT, UPSTREAM, other
from wsfw.relay import close as closing
from wsfw.relay import flow

log = logger("wsfw.relay")

_ids = itertools.count(1)
_PREFIX = os.urandom(3).hex()


def new_conn_id() -> str:
    """Short, unique within a process, and distinct across restarts (for log correlation)."""
    return f"{_PREFIX}-{next(_ids):x}"


class Relay:
    """One client connection and its upstream connection.

    Slotted: one lives per connection for as long as it is open, and with
    10,000 idle connections per process a per-instance ``__dict__`` (44
    entries, 1.6 KB) is memory spent on nothing.
    """

    __slots__ = ("conn_id", "route", "peer", "path", "query", "headers", "hook", "settings", "timeouts", "clock",
                 "tracker", "log_connections", "ends", "lost_sides", "started", "finished", "subprotocol",
                 "opened_at", "messages", "bytes", "dropped", "closed_by", "close_code", "close_reason", "producers",
                 "_early", "_pending", "_hold", "_hold_call", "_idle_call", "_lifetime_call", "_last_activity",
                 "rate_drops", "rate_closes", "limits", "_limited", "_rate_dropping", "_msg_interval",
                 "_byte_interval", "_msg_capacity", "_byte_capacity", "_msg_tat", "_byte_tat", "ticket")

    def __init__(self, *, route: str, peer: str, path: str, hook, settings, timeouts, clock,
                 tracker=None, log_connections: bool = True, conn_id: str | None = None, query: str = "",
                 headers: tuple[tuple[str, str], ...] = (), limits=None):
        #: The connection's IAdmissionTicket (wsfw.guard), set by the frontend when a guard admitted it.
        self.ticket = None
        self.conn_id = conn_id or new_conn_id()
        self.route = route
        self.peer = peer
        self.path = path
        self.query = query
        self.headers = headers
        self.hook = hook
        self.settings = settings
        self.timeouts = timeouts
        self.clock = clock
        self.tracker = tracker
        self.log_connections = log_connections
        self.ends: dict[str, object] = {CLIENT: None, UPSTREAM: None}
        self.lost_sides: set[str] = set()
        self.started = False
        self.finished = False
        self.subprotocol: str | None = None
        self.opened_at = clock.seconds()
        self.messages = {CLIENT: 0, UPSTREAM: 0}
        self.bytes = {CLIENT: 0, UPSTREAM: 0}
        self.dropped = {CLIENT: 0, UPSTREAM: 0}
        self.closed_by: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.producers: tuple = ()
        self._early: list[tuple[str, bytes, bool]] = []
        # Messages waiting behind an asynchronous verdict, per side; a deque (600 bytes) only once one is.
        self._pending = {CLIENT: None, UPSTREAM: None}
        self._hold: tuple[str, str] | None = None  # (side, "reply" | "failure")
        self._hold_call = None
        self._idle_call = None
        self._lifetime_call = None
        self._last_activity = self.opened_at
        #: Client messages withheld (drop) or closed on (close) for exceeding message_rate / byte_rate.
        self.rate_drops = 0
        self.rate_closes = 0
        self._rate_limits(limits)
        if tracker is not None:
            tracker.add(self)

    def _rate_limits(self, limits) -> None:
        """Two GCRA buckets (message_rate, byte_rate): each is one float, the time its bucket would
        be full again, so checking a message costs a clock read and a few float operations, and a
        connection without rates pays one attribute test."""
        self.limits = limits
        message_rate = getattr(limits, "message_rate", None)
        byte_rate = getattr(limits, "byte_rate", None)
        self._limited = message_rate is not None or byte_rate is not None
        self._rate_dropping = getattr(limits, "on_rate_exceeded", "close") == "drop"
        self._msg_interval = self._byte_interval = 0.0
        self._msg_capacity = self._byte_capacity = 0.0
        self._msg_tat = self._byte_tat = 0.0
        # Each capacity gets a nanosecond more, so float rounding never refuses the last of a burst.
        if message_rate is not None:
            self._msg_interval = 1.0 / message_rate.per_second
            self._msg_capacity = message_rate.burst * self._msg_interval + 1e-9
        if byte_rate is not None:
            self._byte_interval = 1.0 / byte_rate.per_second
            self._byte_capacity = byte_rate.burst * self._byte_interval + 1e-9

    # -- life cycle ---------------------------------------------------------

    def attach(self, side: str, end) -> None:
        self.ends[side] = end

    def start(self, front_transport=None, back_transport=None) -> None:
        """Both hops are open: link their flow control and let messages through."""
        self.started = True
        if front_transport is not None and back_transport is not None:
            self.producers = flow.link(front_transport, back_transport)
        for end in self.ends.values():
            end.resume_reading()
        early, self._early = self._early, []
        for side, payload, is_binary in early:
            self.message(side, payload, is_binary)
        if self.timeouts.idle > 0:
            self._idle_call = self.clock.callLater(self.timeouts.idle, self._idle_check)
        if self.timeouts.max_lifetime > 0:
            self._lifetime_call = self.clock.callLater(self.timeouts.max_lifetime, self._lifetime_reached)
        if self.log_connections:
            log.info("{conn} open {peer} route={route} path={path} subprotocol={subprotocol}",
                     conn=self.conn_id, peer=self.peer, route=self.route, path=self.path,
                     subprotocol=self.subprotocol, event="open")

    def shutdown(self, reason: str = "server shutting down") -> None:
        """Close both hops with 1001 (daemon stopping)."""
        self._record(None, closing.GOING_AWAY, reason, "wsfw")
        for end in list(self.ends.values()):
            if end is not None:
                end.close(closing.GOING_AWAY, reason)

    def abort(self) -> None:
        for side, end in self.ends.items():
            if end is not None and side not in self.lost_sides:
                end.abort()

    # -- messages -------------------------------------------------------------

    def message(self, side: str, payload: bytes, is_binary: bool) -> None:
        if not self.started:
            self._early.append((side, payload, is_binary))
            return
        self.messages[side] += 1
        self.bytes[side] += len(payload)
        if self._limited and side == CLIENT and self._over_rate(len(payload)):
            return
        if self._idle_call is not None:
            self._last_activity = self.clock.seconds()
        pending = self._pending[side]
        if pending:  # an earlier verdict on this side is still outstanding: keep order
            pending.append((payload, is_binary, None))
            return
        verdict = self._inspect(side, payload, is_binary)
        if verdict is FORWARD:  # the common case, without isinstance on an Awaitable ABC
            target = self.ends[other(side)]
            if target is not None:
                target.send_message(payload, is_binary)
            return
        if isinstance(verdict, Deferred):
            if pending is None:
                pending = self._pending[side] = collections.deque()
            pending.append((payload, is_binary, verdict))
            self.ends[side].pause_reading()
            verdict.addBoth(self._verdict_arrived, side)
            return
        self._apply(side, payload, is_binary, verdict)

    def _over_rate(self, size: int) -> bool:
        """Whether a client message of ``size`` bytes exceeds message_rate or byte_rate; if so it
        has been dealt with (dropped, or the connection closed). A message over the rate takes no
        tokens, so a dropping client still gets exactly the configured rate through.

        GCRA: a bucket is the time it would be full again (``tat``); a message costing ``cost``
        fits when that is at most ``capacity - cost`` ahead of now. A message bigger than the
        byte burst fits only a full bucket, and leaves it in debt."""
        if self.rate_closes:
            return True  # closing for it already: nothing more from this client goes anywhere
        now = self.clock.seconds()
        msg_tat = 0.0
        if self._msg_interval:
            msg_tat = self._msg_tat if self._msg_tat > now else now
            if msg_tat - now > self._msg_capacity - self._msg_interval:
                return self._rate_exceeded("message_rate", self.limits.message_rate)
        if self._byte_interval:
            tat = self._byte_tat if self._byte_tat > now else now
            cost = size * self._byte_interval
            capacity = self._byte_capacity
            if tat - now > capacity - (cost if cost < capacity else capacity):
                return self._rate_exceeded("byte_rate", self.limits.byte_rate)
            self._byte_tat = tat + cost
        if self._msg_interval:
            self._msg_tat = msg_tat + self._msg_interval
        return False

    def _rate_exceeded(self, which: str, rate) -> bool:
        self.dropped[CLIENT] += 1
        if self._rate_dropping:
            self.rate_drops += 1
            if self.rate_drops == 1:  # once per connection: the close summary has the total
                log.info("{conn} dropping client messages over {which} ({rate})", conn=self.conn_id, which=which,
                         rate=rate.text, peer=self.peer, route=self.route, event="rate_drop")
            return True
        self.rate_closes = 1
        reason = f"{which} exceeded ({rate.text})"
        if self.ticket is not None:
            self.ticket.offence(reason)
        self.close_policy(CLIENT, closing.POLICY, reason, which)
        return True

    def _inspect(self, side, payload, is_binary):
        # Positional (conn_id, route, peer, direction, index, payload, is_binary, subprotocol, path,
        # query, headers): a third faster than keywords, for every message.
        view = MessageView(self.conn_id, self.route, self.peer, side, self.messages[side], payload, is_binary,
                           self.subprotocol, self.path, self.query, self.headers)
        try:
            return self.hook.inspect_message(view)
        except Exception:
            return self._inspection_error(Failure())

    def _inspection_error(self, failure: Failure) -> Verdict:
        log.failure("{conn} inspection raised; on_inspection_error={policy}", failure,
                    conn=self.conn_id, policy=self.settings.on_inspection_error)
        if self.settings.on_inspection_error == "allow":
            return FORWARD
        return Verdict.close(closing.INTERNAL_ERROR, "inspection error")

    def _verdict_arrived(self, result, side):
        pending = self._pending[side]
        payload, is_binary, _ = pending.popleft()
        verdict = self._inspection_error(result) if isinstance(result, Failure) else result
        self._apply(side, payload, is_binary, verdict)
        while pending:
            payload, is_binary, _ = pending.popleft()
            verdict = self._inspect(side, payload, is_binary)
            if isinstance(verdict, Deferred):
                pending.appendleft((payload, is_binary, verdict))
                verdict.addBoth(self._verdict_arrived, side)
                return None
            self._apply(side, payload, is_binary, verdict)
        end = self.ends[side]
        if end is not None and side not in self.lost_sides:
            end.resume_reading()
        return None

    def _apply(self, side, payload, is_binary, verdict) -> None:
        if verdict is None or verdict.action == "forward":
            target = self.ends[other(side)]
            if target is not None:
                target.send_message(payload, is_binary)
        elif verdict.action == "drop":
            self.dropped[side] += 1
            log.info("{conn} dropped a message from {side}: {reason}", conn=self.conn_id, side=side,
                     reason=verdict.reason, rule=verdict.rule, event="drop")
        else:
            code = verdict.code if verdict.code in closing.SENDABLE else closing.POLICY
            self.dropped[side] += 1
            self.close_policy(side, code, verdict.reason, verdict.rule)

    def close_policy(self, side: str, code: int, reason: str, rule: str | None = None) -> None:
        """wsfw ends the connection because of what ``side`` sent; the other hop gets 1001."""
        log.info("{conn} closing {side} with {code}: {reason}", conn=self.conn_id, side=side, code=code,
                 reason=reason, rule=rule, event="policy_close")
        self._record(side, code, reason, "wsfw")
        told = reason if self.settings.expose_reason else "policy violation"
        self.ends[side].close(code, told)
        peer = self.ends[other(side)]
        if peer is not None:
            peer.close(closing.GOING_AWAY, "going away")

    # -- closing --------------------------------------------------------------

    def peer_closed(self, side: str, code: int | None, reason: str | None) -> None:
        """``side``'s peer sent a close frame; the hop holds its reply until the other peer answers."""
        self._record(side, code, reason, side)
        target = self.ends[other(side)]
        if target is not None and target.can_send:
            self._start_hold(side, "reply")
            target.close(closing.relayable(code), reason)
        else:
            self.ends[side].reply_close(closing.NORMAL, None)

    def close_replied(self, side: str, code: int | None, reason: str | None) -> None:
        """``side``'s peer answered a close we relayed: answer the hop that was holding."""
        if self._hold is not None and self._hold[0] == other(side):
            self._release(closing.relayable(code), reason)

    def hop_failed(self, side: str, code: int, reason: str) -> None:
        """``side``'s peer broke the protocol or a cap: close the other hop first, then fail."""
        self._record(side, code, reason, "wsfw")
        if side == CLIENT and code in (closing.POLICY, closing.TOO_BIG) and self.ticket is not None:
            self.ticket.offence(reason)  # a frame flood, an oversized message or a decompression bomb
        log.info("{conn} {side} hop failed with {code}: {reason}", conn=self.conn_id, side=side, code=code,
                 reason=reason, event="hop_failed")
        target = self.ends[other(side)]
        if target is not None and target.can_send:
            self._start_hold(side, "failure")
            target.close(closing.hop_failure_code(side), "going away" if side == CLIENT else "upstream error")
        else:
            self.ends[side].release_failure()

    def lost(self, side: str, was_clean: bool, code: int | None, reason: str | None) -> None:
        """``side``'s TCP connection is gone."""
        if side in self.lost_sides:
            return
        self.lost_sides.add(side)
        if self._hold is not None:
            if self._hold[0] == other(side):
                self._release(closing.NORMAL, None)
            else:
                self._cancel_hold()
        if self.closed_by is None:
            self._record(side, code if was_clean else 1006, reason, side)
        target = self.ends[other(side)]
        if target is not None and other(side) not in self.lost_sides:
            if target.can_send:
                if was_clean:
                    target.close(closing.relayable(code), reason)
                else:
                    target.close(closing.hop_failure_code(side), "upstream lost" if side == UPSTREAM else "going away")
            elif not self.started:
                target.close(closing.hop_failure_code(side), "peer lost")
        if self.ends[other(side)] is None or other(side) in self.lost_sides:
            self._finish()

    def _start_hold(self, side: str, kind: str) -> None:
        self._cancel_hold()
        self._hold = (side, kind)
        self._hold_call = self.clock.callLater(self.timeouts.close_handshake, self._release, closing.NORMAL, None)

    def _cancel_hold(self) -> None:
        if self._hold_call is not None and self._hold_call.active():
            self._hold_call.cancel()
        self._hold_call = None
        self._hold = None

    def _release(self, code, reason) -> None:
        if self._hold is None:
            return
        side, kind = self._hold
        self._cancel_hold()
        end = self.ends[side]
        if kind == "reply":
            end.reply_close(code, reason)
        else:
            end.release_failure()

    def _record(self, side, code, reason, by) -> None:
        if self.closed_by is None:
            self.closed_by, self.close_code, self.close_reason = by, code, reason

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.finished:
            return
        left = self.timeouts.idle - (self.clock.seconds() - self._last_activity)
        if left > 0:
            self._idle_call = self.clock.callLater(left, self._idle_check)
            return
        log.info("{conn} idle for {idle}s: closing", conn=self.conn_id, idle=self.timeouts.idle, event="idle")
        self._record(None, closing.GOING_AWAY, "idle timeout", "wsfw")
        for end in self.ends.values():
            if end is not None:
                end.close(closing.GOING_AWAY, "idle timeout")

    def _lifetime_reached(self) -> None:
        """``[timeouts] max_lifetime``: long-lived connections are re-established now and then, so
        a credential revoked or a policy tightened since the handshake takes effect."""
        self._lifetime_call = None
        if self.finished:
            return
        log.info("{conn} open for {lifetime:g}s (max_lifetime): closing", conn=self.conn_id,
                 lifetime=self.timeouts.max_lifetime, event="max_lifetime")
        self._record(None, closing.GOING_AWAY, "max lifetime reached", "wsfw")
        for end in self.ends.values():
            if end is not None:
                end.close(closing.GOING_AWAY, "max lifetime reached")

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_hold()
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        if self._lifetime_call is not None and self._lifetime_call.active():
            self._lifetime_call.cancel()
        flow.unlink(*(getattr(end, "transport", None) for end in self.ends.values()))
        if self.tracker is not None:
            self.tracker.remove(self)
        closed = getattr(self.hook, "connection_closed", None)
        if closed is not None:
            try:
                closed(self.conn_id)
            except Exception:
                log.failure("{conn} inspection hook failed in connection_closed", conn=self.conn_id)
        if self.log_connections and self.started:
            log.info(
                "{conn} closed {peer} route={route} after {duration:.3f}s: client->upstream {c_msgs} msgs "
                "{c_bytes} B, upstream->client {u_msgs} msgs {u_bytes} B, dropped {dropped}, "
                "close {code} by {closed_by}",
                conn=self.conn_id, peer=self.peer, route=self.route, path=self.path,
                duration=self.clock.seconds() - self.opened_at,
                c_msgs=self.messages[CLIENT], c_bytes=self.bytes[CLIENT],
                u_msgs=self.messages[UPSTREAM], u_bytes=self.bytes[UPSTREAM],
                dropped=self.dropped[CLIENT] + self.dropped[UPSTREAM],
                code=self.close_code, reason=self.close_reason, closed_by=self.closed_by, event="close",
                backpressure_pauses=sum(p.pauses for p in self.producers), rate_drops=self.rate_drops,
            )
