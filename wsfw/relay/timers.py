"""Autobahn's protocol timers, on time.

Autobahn schedules its open-handshake, close-handshake and auto-ping
timeouts on a txaio "batched timer" (``factory._batched_timer``) that puts
calls in buckets. txaio 26.6.1 rounds the due time *down to a whole second*
before bucketing (``int(now + delay) * 1000``), so a timeout fires anywhere
between ``delay - 1`` and ``delay`` seconds after it was set: with wsfw's
default ``close_handshake = 1``, a hop that had just sent its close could
drop the TCP connection a millisecond later, before the peer's reply and the
messages that came before it (the relay integration tests caught echoes lost
that way). :class:`PreciseTimer` is what the factories use instead: one
``callLater`` per timeout, exactly as long as configured. A relay sets at
most a few such timers per connection, so the batching saved nothing here.
"""

from __future__ import annotations


class _Call:
    """What Autobahn keeps of a scheduled call: ``cancel()``, harmless when it already ran."""

    __slots__ = ("_call",)

    def __init__(self, call):
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class PreciseTimer:
    """txaio's ``IBatchedTimer`` interface over ``reactor.callLater``."""

    __slots__ = ("_reactor",)

    def __init__(self, reactor):
        self._reactor = reactor

    def call_later(self, delay, func, *args, **kwargs):
        return _Call(self._reactor.callLater(delay, func, *args, **kwargs))
