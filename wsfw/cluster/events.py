"""The fleet's audit trail: every node appends its audit events to one Redis Stream.

Events are trimmed as the admin listener keeps them (``event_record``), tagged
with the node's name, buffered and flushed every ``FLUSH`` seconds, so a burst
of blocks costs one pipelined write per tick rather than a round trip each.
While Redis is away the buffer holds the latest ``BUFFER`` events (older ones
are counted as dropped) and they are written when it returns. The stream is
capped with ``XADD MAXLEN ~ events_maxlen``: Redis trims it in whole nodes,
cheaply, keeping at least that many of the newest events.
"""

from __future__ import annotations

import collections
import json

from twisted.application.internet import TimerService
from twisted.internet import defer

from wsfw.admin.stats import event_record
from wsfw.cluster.link import RedisLink
from wsfw.logs import logger

log = logger("wsfw.cluster")

FLUSH = 0.2
BUFFER = 10_000


class FleetEvents(TimerService):
    """Observer of ``Audit.publisher`` writing to the fleet stream; :meth:`recent` reads it back."""

    name = "cluster-events"

    def __init__(self, link: RedisLink, maxlen: int, flush: float = FLUSH, buffer: int = BUFFER):
        super().__init__(flush, self.flush)
        self.link = link
        self.maxlen = maxlen
        self.pending: collections.deque = collections.deque()
        self.buffer = buffer
        self.appended = 0
        self.dropped = 0
        self._flushing = False

    @property
    def stream(self) -> str:
        return self.link.key("events")

    def __call__(self, event: dict) -> None:
        try:
            record = event_record(event)
            record["node"] = self.link.node
            if len(self.pending) >= self.buffer:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append(json.dumps(record, default=str, separators=(",", ":")))
        except Exception:
            log.failure("cluster: queueing an audit event for the fleet stream failed")

    def flush(self):
        """Write what is pending, oldest first; what fails stays pending, in order."""
        if self._flushing or not self.pending or not self.link.up:
            return None
        self._flushing = True
        batch = list(self.pending)
        self.pending.clear()
        writes = [self.link.command("XADD", self.stream, "MAXLEN", "~", self.maxlen, "*", "node", self.link.node,
                                    "event", record) for record in batch]

        def done(results):
            self._flushing = False
            failed = [record for record, (ok, _) in zip(batch, results) if not ok]
            self.appended += len(batch) - len(failed)
            if failed:
                self.pending.extendleft(reversed(failed))
                while len(self.pending) > self.buffer:
                    self.pending.popleft()
                    self.dropped += 1

        return defer.DeferredList(writes, consumeErrors=True).addCallback(done)

    def stopService(self):
        super().stopService()
        return self.flush()  # the last events of a stopping node, if Redis is there

    def recent(self, limit: int, blocked_only: bool = False) -> defer.Deferred:
        """The fleet's newest events first (at most ``limit``), each with its ``node`` and stream ``id``."""
        def parse(entries):
            out = []
            for entry_id, fields in entries or ():
                values = dict(zip(fields[::2], fields[1::2])) if isinstance(fields, list) else dict(fields)
                try:
                    record = json.loads(values.get("event", "{}"))
                except ValueError:
                    continue
                record["node"] = values.get("node", record.get("node"))
                record["stream_id"] = entry_id
                if blocked_only and not record.get("enforced"):
                    continue
                out.append(record)
            return out

        count = limit * 4 if blocked_only else limit
        return self.link.command("XREVRANGE", self.stream, "+", "-", "COUNT", count).addCallback(
            lambda entries: parse(entries)[:limit])
