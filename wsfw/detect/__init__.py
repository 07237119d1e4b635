"""Attack detectors: libinjection + multi-pattern signatures + anomaly scoring.

Usage::

    engine = Engine(paranoia=1)           # compile once, at config load
    result = engine.scan([("json.text", "hello")])
    if result.blocked(DEFAULT_THRESHOLD): ...

Scoring: every matching rule contributes its severity score (critical 5,
error 4, warning 3, notice 2).  Contributions are summed per detector and
each detector's sum is capped at 5 (one "critical"), then summed over
detectors.  The cap keeps one noisy family (e.g. twenty XSS signatures on a
single payload) from dominating the log/score while still letting several
weak signals of one family add up to a block, and letting independent
families corroborate each other.  A rule counts once per message, however
many params or decoded variants it matched in.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

import attrs

from . import transforms
from .backend import HAVE_HYPERSCAN, make_backend
from .rules import GATES, RULES, SCORES

try:  # pragma: no cover - depends on the environment
    import libinjection as _libinjection
except Exception:
    _libinjection = None

__all__ = ["Match", "Result", "Engine", "DEFAULT_THRESHOLD", "HAVE_LIBINJECTION", "HAVE_HYPERSCAN"]

DEFAULT_THRESHOLD = 5
HAVE_LIBINJECTION = _libinjection is not None
DETECTOR_CAP = 5
EXCERPT_MAX = 80
MAX_PARAMS = 512  # params inspected per message; the rest are ignored
#: Scan results kept per engine for values up to CACHE_VALUE_MAX characters;
#: the cache is emptied when full (an attacker can only make it miss).
CACHE_ENTRIES = 4096
CACHE_VALUE_MAX = 128

_SEVERITY_BY_SCORE = {v: k for k, v in SCORES.items()}


@attrs.frozen
class Match:
    detector: str
    rule_id: str
    cls: str
    severity: str
    score: int
    path: str
    excerpt: str


@attrs.frozen
class Result:
    score: int
    matches: tuple[Match, ...]

    def blocked(self, threshold: int) -> bool:
        return self.score >= threshold


_NOTHING = Result(score=0, matches=())

# libinjection SQLi fingerprints that also describe ordinary prose / code /
# complete SQL statements: such a hit alone is only a warning.
_WEAK_SQLI_FP = re.compile(r"^(E|T|n|f\(|sos$|s&s$|1&1$|1c$|nc$|so\(n\)$|s&nkn$|sf\(1o$|1n\(1o$)")


_WEAK_XSS = re.compile(r"\s*(<\?xml[\s-]|style\s*=\s*[\w-]+\s*:)", re.I)

# Keys/paths: prototype pollution and NoSQL operator keys.
_PATH_RULES = [
    ("proto-key", "prototype_pollution", "critical",
     re.compile(r"(^|[.\[\]'\"/])__proto__($|[.\[\]'\"/])|(^|[.\[\]'\"/])constructor[.\[\]'\"/]+prototype($|[.\[\]'\"/])")),
    ("nosql-key", "nosqli", "critical",
     re.compile(r"(^|[.\[\]'\"/])\$(where|ne|eq|gt|gte|lt|lte|in|nin|regex|exists|or|and|not|nor|expr|elemmatch|size|type|all|mod|text|options|function|accumulator|jsonschema|lookup|out|merge)($|[.\[\]'\"/])", re.I)),
]

_SAFE_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _excerpt(text: str, start: int, end: int) -> str:
    try:
        lo = max(0, start - 20)
        hi = min(len(text), max(end, start) + 40)
        snip = text[lo:hi]
        esc = repr(snip)[1:-1]
        esc = _SAFE_CHARS.sub("?", esc)
        return esc[:EXCERPT_MAX]
    except Exception:
        return ""


class Engine:
    """Compiled detector set; build once, call :meth:`scan` per message."""

    def __init__(self, paranoia: int = 1, disabled: frozenset[str] = frozenset(), backend: str | None = None):
        paranoia = int(paranoia)
        if not 1 <= paranoia <= 4:
            raise ValueError("paranoia must be 1..3")
        self.paranoia = paranoia
        self.disabled = frozenset(disabled)

        def enabled(rule_id: str, detector: str) -> bool:
            return rule_id not in self.disabled and detector not in self.disabled

        # Every rule (all paranoia levels) goes into one shared, cached
        # database; the ones above the paranoia level or disabled are simply
        # ignored when they match.  Compiling Hyperscan takes seconds, so
        # engines built with other settings in the same process reuse it.
        self._rules = list(RULES)
        self._active = frozenset(i for i, r in enumerate(self._rules)
                                 if r[3] <= paranoia and enabled(r[0], r[1]))
        patterns = [r[4].encode("utf-8") for r in self._rules]
        self._py = [re.compile(p, re.I | re.S) if i in self._active else None
                    for i, p in enumerate(patterns)]  # excerpts only
        self._sqli = _libinjection is not None and enabled("sqli-libinjection", "sqli")
        self._xss = _libinjection is not None and enabled("xss-libinjection", "xss")
        nrules = len(patterns)
        gates = dict(GATES)
        patterns.append(gates["gate-sqli"].encode())
        patterns.append(gates["gate-xss"].encode())
        self._gate_sqli, self._gate_xss = nrules, nrules + 1
        self._hint_ids = {nrules + 2: "decode", nrules + 3: "norm", nrules + 4: "b64"}
        patterns.append(transforms.HINT_DECODE.encode())
        patterns.append(transforms.HINT_NORM.encode())
        patterns.append(transforms.HINT_B64.encode())
        self._nrules = nrules
        active = set(self._active) | set(range(nrules, len(patterns)))
        self._relevant = frozenset(active)  # what a scan acts on: active rules, gates and hints
        self._backend = make_backend(patterns, prefer=backend, active=active)
        self._cache: dict[str, tuple] = {}
        self.backend_name = self._backend.name
        self._path_rules = [r for r in _PATH_RULES if enabled(r[0], r[1])]

    # ------------------------------------------------------------------
    def scan(self, params: Iterable[tuple[str, str]], exclude=None) -> Result:
        """Score ``params``. ``exclude``, when given, maps a param path to the detector
        classes and rule ids to ignore in that param (an exclusion rule); a hit it drops
        counts nowhere, while the same rule still fires in every other param."""
        found: dict[str, Match] = {}
        cache = self._cache
        n = 0
        skip = ()
        for item in params:
            n += 1
            if n > MAX_PARAMS:
                break
            try:
                path, value = item
            except (TypeError, ValueError):
                continue
            # No blanket except here: an error inside the engine is a bug, and
            # the pipeline turns it into the operator's on_inspection_error
            # policy (fail closed by default) instead of silently passing the
            # value unscanned.
            if type(path) is not str:
                path = str(path) if path is not None else ""
            if exclude is not None:
                skip = exclude(path)
            # Both key rules need one of these substrings: a cheap gate saves
            # two regex searches on every ordinary path.
            if path and self._path_rules and ("$" in path or "__proto__" in path or "prototype" in path):
                self._scan_path(path, found, skip)
            if type(value) is not str:
                if isinstance(value, (bytes, bytearray)):
                    value = bytes(value).decode("utf-8", "surrogateescape")
                elif value is None:
                    continue
                else:
                    value = str(value)
            if not value:
                continue
            hits = cache.get(value)
            if hits is None:
                hits = self._scan_new(value)
            for rule_id, cls, severity, excerpt in hits:
                if skip and (rule_id in skip or cls in skip):
                    continue
                if rule_id not in found:
                    found[rule_id] = Match(detector=cls, rule_id=rule_id, cls=cls, severity=severity,
                                           score=SCORES[severity], path=path, excerpt=excerpt)
        return self._result(found)

    def clean(self, values: Iterable[str]) -> bool:
        """Whether :meth:`scan` would find nothing in these values (strings), and no path
        rule applies (the caller's promise): the pipeline's shortcut for plain messages."""
        cache = self._cache
        for value in values:
            hits = cache.get(value)
            if hits is None:
                hits = self._scan_new(value)
            if hits:
                return False
        return True

    def _scan_new(self, value: str) -> tuple:
        """Every rule the value (or one of its decoded variants) matches, as
        ``(rule_id, class, severity, excerpt)``; ``()`` for a clean value. Remembered: a
        value's hits depend on the value alone, and short values repeat (event names,
        message types, enum fields, ids)."""
        scanned = value[:transforms.MAX_SCAN_CHARS] if len(value) > transforms.MAX_SCAN_CHARS else value
        first = self._backend.match(scanned.encode("utf-8", "surrogatepass"))
        if first:  # the shared database also holds rules above this paranoia level, and disabled ones
            first &= self._relevant
        # The common case, most messages: no signature, gate or hint fired and
        # no Unicode folding can change the value, so there is no variant to scan.
        if not first and (scanned.isascii() or unicodedata.is_normalized("NFKC", scanned)):
            hits = ()
        else:
            hits = self._scan_variants(scanned, first)
        if len(value) <= CACHE_VALUE_MAX:
            cache = self._cache
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[value] = hits
        return hits

    def clear_cache(self) -> None:
        """Forget remembered value results (benchmarks measure the uncached cost)."""
        self._cache.clear()

    def _result(self, found: dict[str, Match]) -> Result:
        if not found:
            return _NOTHING  # the common case: no allocation
        per_det: dict[str, int] = {}
        for m in found.values():
            per_det[m.detector] = per_det.get(m.detector, 0) + m.score
        score = sum(min(v, DETECTOR_CAP) for v in per_det.values())
        return Result(score=score, matches=tuple(found.values()))

    def _scan_path(self, path: str, found: dict[str, Match], skip=()) -> None:
        p = path[:4096]
        for rid, cls, sev, rx in self._path_rules:
            if rid not in found and not (skip and (rid in skip or cls in skip)):
                m = rx.search(p)
                if m:
                    found[rid] = Match(detector=cls, rule_id=rid, cls=cls, severity=sev, score=SCORES[sev],
                                       path=path, excerpt=_excerpt(p, m.start(), m.end()))

    def _scan_variants(self, value: str, first: set[int]) -> tuple:
        """The full pass: act on the first scan's hits, then scan the decoded variants."""
        rules = self._rules
        nrules = self._nrules
        active = self._active
        hits: dict[str, tuple] = {}
        sqli_vs = []
        xss_vs = []
        hints = set()
        vs = [value]
        i = 0
        while i < len(vs):
            v = vs[i]
            data = v.encode("utf-8", "surrogatepass")
            for idx in (first if i == 0 else self._backend.match(data)):
                if idx >= nrules:
                    if idx == self._gate_sqli:
                        sqli_vs.append(v)
                    elif idx == self._gate_xss:
                        xss_vs.append(v)
                    elif i == 0:
                        hints.add(self._hint_ids[idx])
                    continue
                if idx not in active:
                    continue
                rid, cls, sev, _par, _pat = rules[idx]
                if rid in hits:
                    continue
                m = self._py[idx].search(data)
                if m:
                    text = data.decode("utf-8", "replace")
                    start = len(data[:m.start()].decode("utf-8", "replace"))
                    end = len(data[:m.end()].decode("utf-8", "replace"))
                    ex = _excerpt(text, start, end)
                else:
                    ex = _excerpt(v, 0, 0)
                hits[rid] = (rid, cls, sev, ex)
            if i == 0 and (hints or not value.isascii()):
                vs.extend(transforms.variants(value, hints)[1:])
            i += 1
        if self._sqli and sqli_vs:
            hit = self._libinjection_sqli(sqli_vs)
            if hit is not None:
                hits[hit[0]] = hit
        if self._xss and xss_vs:
            hit = self._libinjection_xss(xss_vs)
            if hit is not None:
                hits[hit[0]] = hit
        return tuple(hits.values()) if hits else ()

    def _libinjection_sqli(self, vs):
        weak_hit = None
        for v in vs:
            try:
                r = _libinjection.is_sql_injection(v)
            except Exception:
                continue
            if r.get("is_sqli"):
                fp = r.get("fingerprint", "")
                if isinstance(fp, bytes):
                    fp = fp.decode("ascii", "replace")
                if _WEAK_SQLI_FP.match(fp):
                    if weak_hit is None:
                        weak_hit = v
                    continue
                return ("sqli-libinjection", "sqli", "critical", _excerpt(v, 0, 0))
        if weak_hit is not None:
            return ("sqli-libinjection-weak", "sqli", "warning", _excerpt(weak_hit, 0, 0))
        return None

    def _libinjection_xss(self, vs):
        for v in vs:
            try:
                r = _libinjection.is_xss(v)
            except Exception:
                continue
            if r.get("is_xss"):
                # a bare XML prolog / style declaration is libinjection's
                # classic false positive: demote unless something else fires
                sev = "warning" if _WEAK_XSS.match(v) else "critical"
                return ("xss-libinjection", "xss", sev, _excerpt(v, 0, 0))
        return None
