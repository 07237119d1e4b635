"""What the dashboard shows over time: a ring of samples and a ring of audit events.

Rates are computed here, server-side, from counters sampled every
:data:`STEP` seconds into a ring covering :data:`WINDOW` seconds, so the page
only draws and a reload loses nothing. Both rings are bounded: their memory
does not depend on traffic.
"""

from __future__ import annotations

import collections
import itertools

from twisted.application.internet import TimerService

from wsfw.logs import logger
from wsfw.relay import CLIENT, UPSTREAM

log = logger("wsfw.admin")

STEP = 2.0
WINDOW = 600.0

#: Audit fields the event ring keeps (the rest of a log event is Twisted's bookkeeping).
EVENT_FIELDS = ("node", "kind", "conn", "peer", "route", "direction", "framing", "request_path", "param", "inspector",
                "rule_ids", "classes", "score", "excerpt", "action", "enforced", "reason", "error")
MATCH_FIELDS = ("rule_id", "class", "severity", "score", "path")


class History(TimerService):
    """Samples the counters every ``step`` seconds; :meth:`series` turns them into rates."""

    name = "stats"

    def __init__(self, metrics, clock, step: float = STEP, window: float = WINDOW):
        super().__init__(step, self.sample)
        self.clock = clock
        self.metrics = metrics
        self.step = step
        self.window = window
        self.samples: collections.deque = collections.deque(maxlen=int(window / step) + 1)

    def counts(self) -> tuple:
        live = self.metrics.live()
        return (live["connections_open"], live["messages"][CLIENT], live["messages"][UPSTREAM],
                self.metrics.blocked, self.metrics.detected)

    def sample(self) -> None:
        """One sample; a LoopingCall stops at its first exception, so none escapes."""
        try:
            self.samples.append((self.clock.seconds(), self.counts()))
        except Exception:
            log.failure("sampling the dashboard counters failed")

    def series(self) -> dict:
        """Per-step points: open connections, and messages/s and blocks/s over each step."""
        t, connections, client, upstream, blocks, detections = [], [], [], [], [], []
        previous = None
        for when, counts in self.samples:
            if previous is not None:
                dt = max(when - previous[0], 1e-6)
                before = previous[1]
                t.append(round(when, 3))
                connections.append(counts[0])
                client.append(round((counts[1] - before[1]) / dt, 3))
                upstream.append(round((counts[2] - before[2]) / dt, 3))
                blocks.append(round((counts[3] - before[3]) / dt, 3))
                detections.append(round((counts[4] - before[4]) / dt, 3))
            previous = (when, counts)
        return {"t": t, "connections": connections, "client_messages_per_s": client,
                "upstream_messages_per_s": upstream, "blocks_per_s": blocks, "detections_per_s": detections}

    def recent_total(self, index: int, seconds: float, current: int) -> int:
        """How much counter ``index`` (now at ``current``) grew over the last ``seconds``,
        as far back as the ring reaches."""
        if not self.samples:
            return current
        newest_t = self.clock.seconds()
        base = None
        for when, counts in reversed(self.samples):
            if newest_t - when > seconds:
                break
            base = counts[index]
        return current - (base if base is not None else self.samples[-1][1][index])


def event_record(event: dict) -> dict:
    """An audit event trimmed to the plain JSON-able fields operators read (the admin
    listener's ring, the fleet's Redis Stream)."""
    record = {"time": event.get("log_time"), "level": getattr(event.get("log_level"), "name", None)}
    for key in EVENT_FIELDS:
        value = event.get(key)
        if value is not None:
            record[key] = list(value) if isinstance(value, (list, tuple)) else value
    if event.get("matches"):
        record["matches"] = [{k: m.get(k) for k in MATCH_FIELDS} for m in event["matches"] if isinstance(m, dict)]
    return record


class EventRing:
    """The last ``size`` audit events, trimmed to plain JSON-able fields, each with a sequence id.

    It observes ``Audit.publisher``; ``/api/events`` reads it. Values are kept
    as the audit recorded them (excerpts already escaped and bounded); the page
    renders them as text, never as markup.
    """

    def __init__(self, size: int):
        self.events: collections.deque = collections.deque(maxlen=size)
        self._ids = itertools.count(1)
        self.last_id = 0

    def __call__(self, event: dict) -> None:
        try:
            self.append(event_record(event))
        except Exception:
            log.failure("recording an audit event for the admin listener failed")

    def append(self, record: dict) -> dict:
        """Keep ``record`` (already trimmed) under the next id; a supervisor merging its
        workers' events numbers them this way, in one sequence of its own."""
        record = {"id": next(self._ids), **{k: v for k, v in record.items() if k != "id"}}
        self.last_id = record["id"]
        self.events.append(record)
        return record

    def recent(self, limit: int, since: int = 0, blocked_only: bool = False) -> list[dict]:
        """Newest first: at most ``limit`` events with an id above ``since``."""
        out = []
        for record in reversed(self.events):
            if len(out) >= limit or record["id"] <= since:
                break
            if blocked_only and record.get("action") not in ("block", "drop", "detect"):
                continue
            out.append(record)
        return out
