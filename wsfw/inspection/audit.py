"""The audit trail: one JSON line per disruptive or detect-mode decision.

It has its own twisted.logger publisher, separate from the operational log,
so a security officer's file holds decisions only and survives log-level
changes. Each decision is also summarised in the operational log.
"""

from __future__ import annotations

import sys

from twisted.logger import Logger, LogPublisher, jsonFileLogObserver

from wsfw.logs import logger

log = logger("wsfw.inspection")

EXCERPT_MAX = 120


def escape(text: str, limit: int = EXCERPT_MAX) -> str:
    """Bounded, log-safe text: control characters escaped, never longer than ``limit``."""
    text = text[:limit]
    return text.encode("unicode_escape").decode("ascii")[:limit * 2]


class Audit:
    """Writes decisions to ``[log] audit_file`` (a path, or ``-`` for stdout) when set."""

    def __init__(self, path: str | None):
        self.path = path
        self.publisher = LogPublisher()
        self._file = None
        if path:
            self._file = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")
            self.publisher.addObserver(jsonFileLogObserver(self._file, recordSeparator=""))
        self.log = Logger(namespace="wsfw.audit", observer=self.publisher)

    def decision(self, *, kind: str, conn: str | None, peer: str, route: str, direction: str, framing: str,
                 finding, enforced: bool, action: str, path: str) -> None:
        fields = dict(
            kind=kind, conn=conn, peer=peer, route=route, direction=direction, framing=framing,
            request_path=path, param=finding.path, inspector=finding.inspector, rule_ids=list(finding.rules),
            classes=list(finding.classes), score=finding.score, matches=list(finding.matches),
            excerpt=escape(finding.excerpt), action=action, enforced=enforced, reason=finding.reason,
        )
        self.log.warn("{action} {classes} in {param} on {route} from {peer}", **fields)
        log.warn("{conn} {action} ({enforced_text}): {reason} in {param} from {peer} route={route}",
                 conn=conn or "-", action=action, enforced_text="enforced" if enforced else "detect only",
                 reason=finding.reason, param=finding.path, peer=peer, route=route, rule_ids=list(finding.rules),
                 event="audit")

    def error(self, *, conn: str | None, route: str, inspector: str, error: str, action: str) -> None:
        self.log.error("inspector {inspector} failed: {error}", kind="inspector_error", conn=conn, route=route,
                       inspector=inspector, error=error, action=action)

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None
