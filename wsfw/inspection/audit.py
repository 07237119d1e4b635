"""The audit trail: one JSON line per disruptive or detect-mode decision.

It has its own twisted.logger publisher, separate from the operational log,
so a security officer's file holds decisions only and survives log-level
changes. Each decision is also summarised in the operational log. Other parts
of wsfw (metrics, the admin listener's event ring) subscribe to
``Audit.publisher``, so every decision is counted from this one stream.
"""

from __future__ import annotations

from twisted.logger import Logger, LogPublisher, formatTime

from wsfw.logs import ReopenableFile, file_observer, logger

log = logger("wsfw.inspection")

EXCERPT_MAX = 120


def escape(text: str, limit: int = EXCERPT_MAX) -> str:
    """Bounded, log-safe text: control characters escaped, never longer than ``limit``."""
    text = text[:limit]
    return text.encode("unicode_escape").decode("ascii")[:limit * 2]


_TEXT_FIELDS = ("node", "conn", "peer", "route", "direction", "framing", "request_path", "param", "inspector", "rule_ids",
                "classes", "tags", "score", "enforced", "reason", "excerpt", "error")


def _text_value(value) -> str:
    text = escape(",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value), 400)
    return f'"{text.replace(chr(34), chr(92) + chr(34))}"' if (" " in text or '"' in text or not text) else text


def text_line(event: dict) -> str:
    """``[log] format = text``: one ``key=value`` line per decision, every value escaped (quoted if it has spaces)."""
    fields = " ".join(f"{key}={_text_value(event[key])}" for key in _TEXT_FIELDS if event.get(key) is not None)
    return f"{formatTime(event.get('log_time'))} audit {event.get('action', '-')} {event.get('kind', '-')} {fields}\n"


class Audit:
    """Writes decisions to ``[log] audit_file`` (a path, or ``-`` for stdout) when set,
    as JSON lines or, with ``format = text``, as ``key=value`` text lines.

    ``node`` (``[cluster] node``) names this node in every record, so a fleet's
    audit trails stay attributable once merged (in Redis or in a SIEM)."""

    def __init__(self, path: str | None, format: str = "json", node: str | None = None):
        self.path = path
        self.node = node
        self.publisher = LogPublisher()
        self._file = None
        if path:
            self._file = ReopenableFile(path)
            self.publisher.addObserver(file_observer(self._file, format, text_line))
        self.log = Logger(namespace="wsfw.audit", observer=self.publisher)

    def decision(self, *, kind: str, conn: str | None, peer: str, route: str, direction: str, framing: str,
                 finding, enforced: bool, action: str, path: str, operation: str | None = None) -> None:
        """One audit record. ``framing`` is the decoder that read the message, ``operation``
        the framework's own field (Socket.IO event, SignalR target, STOMP destination, WAMP
        procedure, GraphQL operationName, JSON-RPC method), if any."""
        fields = dict(
            kind=kind, conn=conn, peer=peer, route=route, direction=direction, framing=framing,
            operation=operation, request_path=path, param=finding.path, inspector=finding.inspector, rule_ids=list(finding.rules),
            classes=list(finding.classes), score=finding.score, matches=list(finding.matches),
            excerpt=escape(finding.excerpt), action=action, enforced=enforced, reason=finding.reason,
        )
        if finding.tags:
            fields["tags"] = list(finding.tags)
        if self.node:
            fields["node"] = self.node
        self.log.warn("{action} {classes} in {param} on {route} from {peer}", **fields)
        log.warn("{conn} {action} ({enforced_text}): {reason} in {param} from {peer} route={route}",
                 conn=conn or "-", action=action, enforced_text="enforced" if enforced else "detect only",
                 reason=finding.reason, param=finding.path, peer=peer, route=route, rule_ids=list(finding.rules),
                 event="audit")

    def error(self, *, conn: str | None, route: str, inspector: str, error: str, action: str) -> None:
        self.log.error("inspector {inspector} failed: {error}", kind="inspector_error", conn=conn, route=route,
                       inspector=inspector, error=error, action=action, node=self.node)

    def reopen(self) -> None:
        """SIGUSR1 (logrotate): write on into a fresh file at the same path."""
        if self._file is not None:
            self._file.reopen()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
