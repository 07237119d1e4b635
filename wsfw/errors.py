"""Exceptions, kept apart so every module can raise them without import cycles."""

from __future__ import annotations

import attrs


@attrs.frozen
class Problem:
    """One thing wrong with a configuration, located as precisely as we can."""

    file: str
    section: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.section is not None:
            where += f": [{self.section}]"
        if self.key is not None:
            where += f" {self.key}"
        return f"{where}: {self.message}"


@attrs.define(eq=False)
class ConfigError(Exception):
    """Every problem found in a configuration, reported at once.

    Operators fix configs in one pass when they see all mistakes together, the
    way ``nginx -t`` or a compiler reports them; so loaders collect
    :class:`Problem` values and raise this once at the end.
    """

    problems: list[Problem]

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{n} configuration error{'s' if n != 1 else ''}:"
        return "\n".join([head] + [f"  {p}" for p in self.problems])
