"""wsfw's own log events: one router in front of twisted.logger's global publisher.

Every wsfw module logs through :func:`logger`, whose events go to a router that
applies ``[log] level`` and can tee them, as JSON, to ``[log] json_file``. The
level check happens before any formatting, so disabled debug events on the hot
path cost one comparison. Twisted's and Autobahn's own events are left to
twistd's global observers: ``[log] level`` is about what wsfw says.
"""

from __future__ import annotations

import io

import attrs
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}


class _Router:
    """Forwards wsfw events to the global publisher (filtered) and any extra observers."""

    def __init__(self) -> None:
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        self.observers: list = [FilteringLogObserver(lambda e: globalLogPublisher(e), [self.predicate])]

    def __call__(self, event: dict) -> None:
        for observer in self.observers:
            observer(event)


ROUTER = _Router()


def logger(namespace: str) -> Logger:
    """A ``Logger`` for a wsfw module, routed through :data:`ROUTER`."""
    return Logger(namespace=namespace, observer=ROUTER)


def set_level(level: str) -> None:
    ROUTER.predicate.setLogLevelForNamespace("", _LEVELS[level])


@attrs.define
class JSONFile:
    """``[log] json_file``: every wsfw event at or above the level, one JSON text each (RFC 7464)."""

    path: str
    level: str = "info"
    _file: io.TextIOBase | None = None
    _observer: object = None

    def open(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8")
        predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[self.level])
        self._observer = FilteringLogObserver(jsonFileLogObserver(self._file), [predicate])
        ROUTER.observers.append(self._observer)

    def close(self) -> None:
        if self._observer in ROUTER.observers:
            ROUTER.observers.remove(self._observer)
        if self._file is not None:
            self._file.close()
            self._file = None
