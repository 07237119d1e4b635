"""The inspection engine: decoders -> inspectors -> one verdict per message, plus an audit trail.

Layered after Coraza/ModSecurity (transaction = connection, phase = message)
and mitmproxy's ordered addon chain, but failing closed: an inspector that
raises ends the connection unless the operator chose otherwise.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Finding:
    """What one inspector concluded about one message."""

    inspector: str
    action: str  # "block" (disruptive) | "log" (tag only)
    reason: str
    score: int = 0
    rules: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    path: str | None = None  # the decoded parameter that triggered it
    excerpt: str = ""
    matches: tuple[dict, ...] = ()
    tags: tuple[str, ...] = ()  # operator tags of the rule that decided (wsfw.policy)
