"""Knows every live connection, so a stopping daemon can close them gracefully.

On SIGTERM twistd stops the listeners first (they were started after this
service), then this service: every connection gets a 1001 close on both hops,
and the stop waits until they are gone or ``shutdown_drain`` runs out, when the
rest are dropped. Close handshakes flush what was already queued, so in-flight
messages are delivered rather than cut.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from wsfw.interfaces import IConnectionObserver
from wsfw.logs import logger

log = logger("wsfw.tracker")


@implementer(IConnectionObserver)
class NoObserver:
    """Observes nothing: the default, so call sites never test for an observer."""

    def opened(self, relay) -> None:
        pass

    def upstream_connected(self, relay, seconds) -> None:
        pass

    def upstream_failed(self, relay, reason) -> None:
        pass

    def finished(self, relay) -> None:
        pass


NO_OBSERVER = NoObserver()


class ConnectionTracker(Service):
    """The live relays (metrics read their counters here) and the graceful stop."""

    name = "connections"

    def __init__(self, clock, drain_timeout: float, observer=NO_OBSERVER):
        self.clock = clock
        self.drain_timeout = drain_timeout
        self.observer = observer
        self.relays: set = set()
        self._drained: Deferred | None = None
        self.accepting = True

    def add(self, relay) -> None:
        self.relays.add(relay)

    def remove(self, relay) -> None:
        if relay not in self.relays:
            return  # dropped at the end of a drain, then finished: report it once
        self.relays.discard(relay)
        try:
            self.observer.finished(relay)
        except Exception:
            log.failure("connection observer failed for {conn}", conn=getattr(relay, "conn_id", "-"))
        if not self.relays and self._drained is not None and not self._drained.called:
            self._drained.callback(None)

    def __len__(self) -> int:
        return len(self.relays)

    def stopService(self):
        super().stopService()
        self.accepting = False
        if not self.relays:
            return succeed(None)
        log.info("shutting down: closing {n} connection(s), waiting up to {t}s", n=len(self.relays),
                 t=self.drain_timeout)
        self._drained = Deferred()
        for relay in list(self.relays):
            relay.shutdown()
        timer = self.clock.callLater(self.drain_timeout, self._give_up)
        self._drained.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return self._drained

    def _give_up(self) -> None:
        log.warn("shutdown drain timed out: dropping {n} connection(s)", n=len(self.relays))
        for relay in list(self.relays):
            relay.abort()
            self.remove(relay)
