"""The built-in ``leaks`` inspector: server-side error details leaking to clients.

It looks only at upstream -> client messages (routes with ``inspect_upstream =
yes``): stack traces and database error messages tell an attacker which
injection worked and what the backend runs. A leaking message is withheld
(dropped), not the connection closed: the client keeps working.
"""

from __future__ import annotations

import re

from zope.interface import implementer

from wsfw.inspection import Finding
from wsfw.inspection.audit import escape
from wsfw.interfaces import IInspector, IInspectorFactory
from wsfw.relay import UPSTREAM

#: (rule id, what leaks, pattern). Each needs the structure of a real error, not a word.
SIGNATURES = (
    ("leak-python-traceback", "Python traceback", r"Traceback \(most recent call last\):\s+File \""),
    ("leak-java-stack", "Java stack trace", r"(?:Exception|Error)(?::[^\n]{0,200})?\s+at [\w$.]+\([\w$]+\.java:\d+\)"),
    ("leak-dotnet-stack", ".NET stack trace", r"(?:Exception|Error)[^\n]{0,200}\s+at [\w.<>`]+\([^)]{0,200}\) in [^\n]{1,200}:line \d+"),
    ("leak-node-stack", "Node.js stack trace", r"(?:Error|TypeError|ReferenceError)[^\n]{0,200}\n\s+at [^\n]{1,200}\((?:/|[A-Z]:\\\\|node:)[^\n)]{1,200}:\d+:\d+\)"),
    ("leak-php-error", "PHP error", r"(?:Fatal error|Warning|Parse error|Notice)</b>?:\s[^\n]{1,300} in (?:<b>)?/[^\s<]{1,200}(?:</b>)? on line"),
    ("leak-sql-error", "SQL error message", r"(?:SQLSTATE\[\w{5}\]|ORA-\d{5}:|PG::\w+Error|psycopg2\.errors\.|"
                                            r"You have an error in your SQL syntax|unterminated quoted string at or near|"
                                            r"SQLite3?::(?:SQLException|Exception)|Microsoft OLE DB Provider for SQL Server|"
                                            r"Unclosed quotation mark after the character string)"),
)


@implementer(IInspector)
class LeaksInspector:
    name = "leaks"

    def __init__(self):
        self.patterns = [(rule, what, re.compile(rx)) for rule, what, rx in SIGNATURES]

    def inspect(self, view, decoded):
        if view is None or view.direction != UPSTREAM:
            return None
        for path, value in decoded.params:
            for rule, what, rx in self.patterns:
                match = rx.search(value, 0, 65536)
                if match:
                    return Finding(inspector=self.name, action="drop", reason=f"{what} in an upstream message",
                                   score=5, rules=(rule,), classes=("info_leak",), path=path,
                                   excerpt=escape(value[max(0, match.start() - 20):match.end() + 20]))
        return None


@implementer(IInspectorFactory)
class LeaksFactory:
    """``[inspector:leaks]`` takes no options."""

    name = "leaks"
    keys = ()

    def check(self, options):
        return None

    def build(self, options):
        return LeaksInspector()
