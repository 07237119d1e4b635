"""The relay: joins two ``IRelayEnd`` hops, asks the hook about every message, and
decides how each hop closes. It never touches an Autobahn class, so all of its
decisions can be tested with fakes and a fake clock.
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
    """One client connection and its upstream connection."""

    def __init__(self, *, route: str, peer: str, path: str, hook, settings, timeouts, clock,
                 tracker=None, log_connections: bool = True, conn_id: str | None = None, query: str = "",
                 headers: tuple[tuple[str, str], ...] = ()):
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
        self._pending = {CLIENT: collections.deque(), UPSTREAM: collections.deque()}
        self._hold: tuple[str, str] | None = None  # (side, "reply" | "failure")
        self._hold_call = None
        self._idle_call = None
        self._last_activity = self.opened_at
        if tracker is not None:
            tracker.add(self)

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
            pending.append((payload, is_binary, verdict))
            self.ends[side].pause_reading()
            verdict.addBoth(self._verdict_arrived, side)
            return
        self._apply(side, payload, is_binary, verdict)

    def _inspect(self, side, payload, is_binary):
        view = MessageView(conn_id=self.conn_id, route=self.route, peer=self.peer, direction=side,
                           index=self.messages[side], payload=payload, is_binary=is_binary,
                           subprotocol=self.subprotocol, path=self.path, query=self.query,
                           headers=self.headers)
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

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_hold()
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
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
                backpressure_pauses=sum(p.pauses for p in self.producers),
            )
