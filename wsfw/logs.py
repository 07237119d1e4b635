"""wsfw's own log events: one router in front of twisted.logger's global publisher.

Every wsfw module logs through :func:`logger`, whose events go to a router that
applies ``[log] level`` and can tee them to files wsfw writes itself
(``[log] file`` as JSON lines or text, ``[log] json_file`` as RFC 7464 JSON
text sequences) and to syslog. The level check happens before any formatting,
so disabled debug events on the hot path cost one comparison. Twisted's and
Autobahn's own events are left to twistd's global observers: ``[log] level``
is about what wsfw says.

Every file wsfw writes is a :class:`ReopenableFile`: logrotate renames it and
sends SIGUSR1, and wsfw reopens the same path, so no line is lost and no
rename-and-copy (``copytruncate``) race is needed.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LegacyLogObserverWrapper,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    globalLogPublisher,
    jsonFileLogObserver,
)

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
           "error": LogLevel.error, "critical": LogLevel.critical}


#: Event key naming the worker process that logged an event (``[wsfw] workers`` above 1).
WORKER_KEY = "wsfw_worker"


class _Router:
    """Forwards wsfw events to the global publisher (filtered) and any extra observers."""

    def __init__(self) -> None:
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        self.observers: list = [FilteringLogObserver(lambda e: globalLogPublisher(e), [self.predicate])]
        self.tags: dict = {}

    def __call__(self, event: dict) -> None:
        if self.tags:
            event.update(self.tags)
        for observer in self.observers:
            observer(event)


ROUTER = _Router()


def logger(namespace: str) -> Logger:
    """A ``Logger`` for a wsfw module, routed through :data:`ROUTER`."""
    return Logger(namespace=namespace, observer=ROUTER)


def set_level(level: str) -> None:
    ROUTER.predicate.setLogLevelForNamespace("", _LEVELS[level])


def tag_worker(label: str) -> None:
    """Mark every wsfw event of this process as the worker ``label``'s: JSON lines carry
    ``wsfw_worker``, text lines say ``[worker-N namespace#level]``, so the lines of N
    processes sharing one stdout and one log file can be told apart."""
    ROUTER.tags[WORKER_KEY] = label


def at_level(observer, level: str):
    """``observer``, seeing only events at or above ``level``."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])])


class ReopenableFile:
    """A text file that logrotate can move away: :meth:`reopen` opens the same path again.

    ``-`` means the process's stdout (journald under systemd), which is never
    reopened. Observers hold this object, not the file, so a reopen needs no
    observer to be rebuilt.
    """

    def __init__(self, path: str):
        self.path = path
        self._file = sys.stdout if path == "-" else self._open()

    def _open(self):
        return open(self.path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def reopen(self) -> None:
        """Open the path again (a new file if it was renamed), then close the old one."""
        if self.path == "-" or self._file is None:
            return
        fresh = self._open()
        old, self._file = self._file, fresh
        old.close()

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None


def text_line(event: dict) -> str | None:
    """One classic Twisted log line: ``time [namespace#level] message`` (``[worker-N namespace#level]``
    from a worker process)."""
    worker = event.get(WORKER_KEY)
    if worker is not None:
        level = event.get("log_level")
        system = event.get("log_system") or f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        event = dict(event, log_system=f"worker-{worker} {system}")
    return formatEventAsClassicLogText(event)


def worker_stdout_observer(label: str, stream=None):
    """A worker's observer for everything it logs (Twisted's and Autobahn's events too), in
    twistd's own text format with the worker named: the lines join the supervisor's on the
    stdout they share (journald under systemd)."""
    return FileLogObserver(stream or sys.stdout, lambda event: text_line({**event, WORKER_KEY: label}))


def file_observer(stream, fmt: str, text=text_line):
    """An observer writing ``fmt`` (``json``: one JSON object per line; ``text``) to ``stream``."""
    if fmt == "json":
        return jsonFileLogObserver(stream, recordSeparator="")
    return FileLogObserver(stream, text)


class _Tee:
    """One file (or syslog) fed from :data:`ROUTER` at a level; detached on :meth:`close`."""

    def __init__(self, observer, level: str, stream: ReopenableFile | None = None):
        self.stream = stream
        self._observer = at_level(observer, level)
        ROUTER.observers.append(self._observer)

    def reopen(self) -> None:
        if self.stream is not None:
            self.stream.reopen()

    def close(self) -> None:
        if self._observer in ROUTER.observers:
            ROUTER.observers.remove(self._observer)
        if self.stream is not None:
            self.stream.close()


def tee_file(path: str, fmt: str, level: str) -> _Tee:
    """``[log] file``: wsfw's events at or above ``level`` in ``fmt``."""
    stream = ReopenableFile(path)
    return _Tee(file_observer(stream, fmt), level, stream)


def tee_json_seq(path: str, level: str) -> _Tee:
    """``[log] json_file``: wsfw's events as RFC 7464 JSON text sequences (``eventsFromJSONLogFile`` reads them)."""
    stream = ReopenableFile(path)
    return _Tee(jsonFileLogObserver(stream), level, stream)


def tee_syslog(facility: str, level: str, prefix: str = "wsfw") -> _Tee:
    """``[log] syslog``: wsfw's events to the local syslog daemon (``/dev/log``) through Twisted's
    ``SyslogObserver``, each with the syslog priority of its level and its namespace as the system."""
    import syslog as _syslog

    from twisted.python.syslog import SyslogObserver

    priorities = {LogLevel.debug: _syslog.LOG_DEBUG, LogLevel.info: _syslog.LOG_INFO,
                  LogLevel.warn: _syslog.LOG_WARNING, LogLevel.error: _syslog.LOG_ERR,
                  LogLevel.critical: _syslog.LOG_CRIT}
    legacy = LegacyLogObserverWrapper(SyslogObserver(prefix, facility=getattr(_syslog, f"LOG_{facility.upper()}")).emit)

    def observer(event: dict) -> None:
        event = dict(event, syslogPriority=priorities.get(event.get("log_level"), _syslog.LOG_INFO))
        event.setdefault("log_system", event.get("log_namespace", "-"))
        legacy(event)

    return _Tee(observer, level)
