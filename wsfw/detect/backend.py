"""Multi-pattern matching back-ends.

Both back-ends match the same compiled rule list against the UTF-8
(``surrogatepass``) encoding of a value and return the set of rule indexes
that matched.  Patterns are byte regexes, caseless + dotall, ASCII classes,
so Hyperscan and Python ``re`` agree on their semantics.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from typing import Sequence

try:  # pragma: no cover - depends on the environment
    import hyperscan as _hs
except Exception:  # ImportError, or a broken shared library
    _hs = None

HAVE_HYPERSCAN = _hs is not None


class ReBackend:
    """Pure Python fallback: one ``re.search`` per pattern."""

    name = "re"

    def __init__(self, patterns: Sequence[bytes], active=None):
        idx = range(len(patterns)) if active is None else sorted(active)
        self._res = [(i, re.compile(patterns[i], re.I | re.S)) for i in idx]

    def match(self, data: bytes) -> set[int]:
        return {i for i, r in self._res if r.search(data)}


def cache_dir() -> str | None:
    """Where compiled databases are kept between starts: ``$WSFW_CACHE_DIR``, else
    ``$CACHE_DIRECTORY`` (systemd's CacheDirectory=), else ``~/.cache/wsfw``.

    Compiling the signature set takes seconds; loading it takes milliseconds,
    so a restart is back to listening almost at once. ``WSFW_CACHE_DIR=``
    (empty) turns the cache off.
    """
    if "WSFW_CACHE_DIR" in os.environ:
        return os.environ["WSFW_CACHE_DIR"] or None
    if os.environ.get("CACHE_DIRECTORY"):
        return os.environ["CACHE_DIRECTORY"].split(":")[0]
    return os.path.join(os.path.expanduser("~"), ".cache", "wsfw")


def _cache_path(patterns: Sequence[bytes]) -> str | None:
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256()
    digest.update(repr((_hs.__version__ if hasattr(_hs, "__version__") else "", platform.machine())).encode())
    for pattern in patterns:
        digest.update(pattern + b"\0")
    return os.path.join(folder, f"signatures-{digest.hexdigest()[:32]}.hsdb")


def _load_cached(patterns: Sequence[bytes]):
    """A database compiled earlier from exactly these patterns, or None (any error: compile again)."""
    try:
        path = _cache_path(patterns)
        if path is None or not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            db = _hs.loadb(f.read(), _hs.HS_MODE_BLOCK)
        db.scratch = _hs.Scratch(db)  # a deserialised database has none; scans would fail without it
        return db
    except Exception:
        return None


def _store_cached(patterns: Sequence[bytes], db) -> None:
    """Best effort: an unwritable cache (read-only home under systemd) only costs the next start time."""
    try:
        path = _cache_path(patterns)
        if path is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = f"{path}.{os.getpid()}.tmp"
        with open(temp, "wb") as f:
            f.write(_hs.dumpb(db))
        os.replace(temp, path)
    except Exception:
        pass


def _on_match(id_, from_, to, flags, context):
    context.add(id_)


class HyperscanBackend:
    """One Hyperscan block-mode database holding every pattern."""

    name = "hyperscan"

    def __init__(self, patterns: Sequence[bytes]):
        if _hs is None:
            raise RuntimeError("hyperscan is not importable")
        self._empty = not patterns
        self._db = _load_cached(patterns) if patterns else None
        if self._db is None:
            self._db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            if patterns:
                flags = _hs.HS_FLAG_CASELESS | _hs.HS_FLAG_DOTALL | _hs.HS_FLAG_SINGLEMATCH
                self._db.compile(
                    expressions=list(patterns),
                    ids=list(range(len(patterns))),
                    elements=len(patterns),
                    flags=[flags] * len(patterns),
                )
                _store_cached(patterns, self._db)

    def match(self, data: bytes) -> set[int]:
        hits: set[int] = set()
        if self._empty or not data:
            return hits
        self._db.scan(data, match_event_handler=_on_match, context=hits)
        return hits


_HS_CACHE: dict[tuple[bytes, ...], HyperscanBackend] = {}
_HS_CACHE_MAX = 4


def make_backend(patterns: Sequence[bytes], prefer: str | None = None, active=None):
    """Hyperscan when available (unless ``prefer == "re"``), else ``re``.

    ``active`` (indexes) limits what the ``re`` back-end evaluates; the
    Hyperscan back-end always holds every pattern (the caller ignores the
    inactive ones) so one compiled database, cached per pattern list, serves
    every engine of the process.
    """
    if prefer != "re" and _hs is not None:
        key = tuple(patterns)
        be = _HS_CACHE.get(key)
        if be is not None:
            return be
        try:
            be = HyperscanBackend(patterns)
        except Exception:
            if prefer == "hyperscan":
                raise
        else:
            if len(_HS_CACHE) >= _HS_CACHE_MAX:
                _HS_CACHE.clear()
            _HS_CACHE[key] = be
            return be
    if prefer == "hyperscan":
        raise RuntimeError("hyperscan back-end requested but unavailable")
    return ReBackend(patterns, active)
