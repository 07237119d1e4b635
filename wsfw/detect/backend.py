"""Multi-pattern matching back-ends.

Both back-ends match the same compiled rule list against the UTF-8
(``surrogatepass``) encoding of a value and return the set of rule indexes
that matched.  Patterns are byte regexes, caseless + dotall, ASCII classes,
so Hyperscan and Python ``re`` agree on their semantics.

Both also keep, beside the full set, one smaller set per alphabet tier
(wsfw.detect.alphabet): a value made only of letters, digits, blanks and a
little punctuation is matched against just the patterns that such text can
match, with the same result at a fraction of the cost.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from typing import Sequence

from .alphabet import Tiers, case_matters

try:  # pragma: no cover - depends on the environment
    import hyperscan as _hs
except Exception:  # ImportError, or a broken shared library
    _hs = None

HAVE_HYPERSCAN = _hs is not None


class ReBackend:
    """Pure Python fallback: one ``re.search`` per pattern (of the value's tier)."""

    name = "re"

    def __init__(self, patterns: Sequence[bytes], active=None):
        idx = range(len(patterns)) if active is None else sorted(active)
        wanted = set(idx)
        self._tiers = Tiers()
        self._sets = [[(i, re.compile(p, re.I | re.S)) for i, p in tier if i in wanted]
                      for tier in self._tiers.members(patterns)]
        self._sets.append([(i, re.compile(patterns[i], re.I | re.S)) for i in idx])

    def match(self, data: bytes) -> set[int]:
        return {i for i, r in self._sets[self._tiers.pick(data)] if r.search(data)}


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


def _cache_path(patterns: Sequence[bytes], ids: Sequence[int], flags: Sequence[int]) -> str | None:
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256()
    digest.update(repr((_hs.__version__ if hasattr(_hs, "__version__") else "", platform.machine(),
                        list(ids), list(flags))).encode())
    for pattern in patterns:
        digest.update(pattern + b"\0")
    return os.path.join(folder, f"signatures-{digest.hexdigest()[:32]}.hsdb")


def _load_cached(patterns: Sequence[bytes], ids: Sequence[int], flags: Sequence[int]):
    """A database compiled earlier from exactly these patterns, ids and flags, or None (any error: compile again)."""
    try:
        path = _cache_path(patterns, ids, flags)
        if path is None or not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            db = _hs.loadb(f.read(), _hs.HS_MODE_BLOCK)
        db.scratch = _hs.Scratch(db)  # a deserialised database has none; scans would fail without it
        return db
    except Exception:
        return None


def _store_cached(patterns: Sequence[bytes], ids: Sequence[int], flags: Sequence[int], db) -> None:
    """Best effort: an unwritable cache (read-only home under systemd) only costs the next start time."""
    try:
        path = _cache_path(patterns, ids, flags)
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


def _compile(patterns: Sequence[bytes], ids: Sequence[int]):
    """A block-mode database of ``patterns`` reporting ``ids``, from the cache when it holds one;
    None for no patterns (Hyperscan compiles none). Caseless only where case matters
    (wsfw.detect.alphabet.case_matters): the same matches, and some patterns scan faster."""
    if not patterns:
        return None
    base = _hs.HS_FLAG_DOTALL | _hs.HS_FLAG_SINGLEMATCH
    flags = [base | _hs.HS_FLAG_CASELESS if case_matters(p) else base for p in patterns]
    db = _load_cached(patterns, ids, flags)
    if db is None:
        db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
        db.compile(expressions=list(patterns), ids=list(ids), elements=len(patterns), flags=flags)
        _store_cached(patterns, ids, flags, db)
    return db


class HyperscanBackend:
    """Hyperscan block-mode databases: one holding every pattern, and one per alphabet tier
    holding the patterns a text of that tier can match (reporting the same ids)."""

    name = "hyperscan"

    def __init__(self, patterns: Sequence[bytes]):
        if _hs is None:
            raise RuntimeError("hyperscan is not importable")
        self._tiers = Tiers()
        full = _compile(patterns, range(len(patterns)))
        self._dbs = [self._tier_db(tier, full) for tier in self._tiers.members(patterns)] + [full]

    @staticmethod
    def _tier_db(tier, full):
        """A tier's database; the full one when Hyperscan refuses the restricted patterns (a
        tier only saves time, so a pattern it cannot take must not cost the back-end)."""
        try:
            return _compile([p for _, p in tier], [i for i, _ in tier])
        except Exception:
            return full

    def match(self, data: bytes) -> set[int]:
        hits: set[int] = set()
        if data:
            db = self._dbs[self._tiers.pick(data)]
            if db is not None:
                # Positional arguments: the binding's keyword parsing costs more than a small scan.
                db.scan(data, _on_match, 0, hits)
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
