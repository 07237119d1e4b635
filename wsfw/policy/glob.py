"""Parameter path globs: ``socketio.args[*].text``, ``json.**``, ``graphql.variables.input.*``.

Decoded parameter paths (wsfw.decoders) are dotted, with ``[i]`` for array elements,
``["key"]`` for keys that are not plain identifiers and ``<json>``, ``<url>``, ``<b64>``...
for what wsfw decoded out of a string. In a glob:

- ``*`` matches any run of characters except ``.`` (one level: ``json.*`` matches
  ``json.user`` and ``json.items[3]``, not ``json.user.name``);
- ``**`` matches any run of characters, dots included (``json.**`` is everything under ``json``);
- ``?`` matches one character other than ``.``;
- everything else is literal, ``[``, ``]``, ``"`` and ``<`` included (``socketio.args[0]``).

A glob that matches a path also matches that parameter's nested decodings (the same path
followed by ``<``: ``socketio.args[0]<html>``, ``json.data<json>.a``), because those are the
same value, decoded: an exclusion for a field must cover its percent- or entity-decoded copy.
"""

from __future__ import annotations

import re

__all__ = ["PathGlob", "NameGlob", "has_wildcards"]


def has_wildcards(text: str) -> bool:
    return "*" in text or "?" in text


def _translate(glob: str, dots: bool) -> str:
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^.]*" if dots else ".*")
        elif c == "?":
            out.append("[^.]" if dots else ".")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _everything(path: str) -> bool:
    return True


class PathGlob:
    """A compiled parameter path glob; ``match(path)`` is True for the path or its decodings."""

    __slots__ = ("text", "_exact", "_rx", "match")

    def __init__(self, text: str):
        self.text = text
        if text.strip("*") == "" and "**" in text:  # "**": every parameter
            self._exact = self._rx = None
            self.match = _everything
            return
        self.match = self._match
        if has_wildcards(text):
            self._exact = None
            self._rx = re.compile(r"(?s:%s)(?:<.*)?\Z" % _translate(text, True))
        else:
            self._exact = text
            self._rx = None

    def _match(self, path: str) -> bool:
        exact = self._exact
        if exact is not None:
            return path == exact or (path.startswith(exact) and path[len(exact):len(exact) + 1] == "<")
        return self._rx.match(path) is not None

    def __repr__(self):
        return f"PathGlob({self.text!r})"


class NameGlob:
    """An event / target / destination name pattern: ``*`` any run (dots included), ``?`` one
    character, the rest literal (``/topic/rooms.*``, ``com.example.*``)."""

    __slots__ = ("text", "_rx")

    def __init__(self, text: str):
        self.text = text
        self._rx = re.compile(r"(?s:%s)\Z" % _translate(text, False))

    def match(self, name: str) -> bool:
        return self._rx.match(name) is not None
