"""Which signatures a text made of few characters can match: a smaller database per message.

Most chat messages are letters, digits, blanks and a little punctuation, and most
signatures need a character such text never holds (a quote, a bracket, a slash,
``<``, ``$``...). A signature scan's cost is mostly the memory the database
touches, so a message scanned against only the signatures its characters can
complete costs a fraction of a scan against all of them (see bench/README.md).

:func:`can_match` decides, from the pattern's parse tree, whether *any* text
over a set of bytes can hold a match. The answer errs one way only: ``False``
is a proof (every way through the pattern needs a byte outside the set), and
anything the analysis does not model answers ``True``. So the tier database
for an alphabet holds every signature that could match a text over it, and a
text over it gets exactly the hits a scan of the full database gives.

The tiers are cumulative alphabets: :data:`BASE` (letters, digits, space, and
every byte of a multi-byte UTF-8 character, so accents, scripts and emoji stay
in), then ``TIERS[0]`` added, then ``TIERS[1]``; a text with any other byte is
scanned against everything.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

try:  # the parser the re module compiles with; if a later Python moves it, every pattern is kept
    from re import _constants as _C
    from re import _parser as _P
except ImportError:  # pragma: no cover - depends on the Python version
    _P = _C = None

BASE = bytes(range(ord("a"), ord("z") + 1)) + bytes(range(ord("A"), ord("Z") + 1)) + b"0123456789 " \
    + bytes(range(0x80, 0x100))
#: The punctuation each tier adds to the one before, commonest in chat first (on the
#: development corpus's chat sets: 46 % of lines fit the first tier, 72 % the second).
TIERS = (b".,?!", b"'-:")

_SPACE = frozenset(b" \t\n\r\x0b\x0c")
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DIGIT = frozenset(b"0123456789")
_LETTERS = frozenset(range(65, 91)) | frozenset(range(97, 123))
#: Zero-width assertions both Hyperscan and Python's re spell alike.
_ANCHORS = {} if _C is None else {
    _C.AT_BEGINNING: b"^", _C.AT_END: b"$", _C.AT_BOUNDARY: b"\\b", _C.AT_NON_BOUNDARY: b"\\B",
    _C.AT_BEGINNING_STRING: b"\\A",
}


def alphabets(tiers: Sequence[bytes] = TIERS) -> list[frozenset[int]]:
    """The cumulative byte sets of the tiers."""
    out, current = [], set(BASE)
    for extra in tiers:
        current |= set(extra)
        out.append(frozenset(current))
    return out


def can_match(pattern: bytes, allowed: frozenset[int]) -> bool:
    """Whether some text made only of the bytes in ``allowed`` can contain a match of ``pattern``
    (a byte regex, matched caseless with DOTALL and ASCII classes, as wsfw.detect.backend does).
    ``False`` only when provably impossible."""
    return restrict(pattern, allowed) is not None


@functools.lru_cache(maxsize=4096)  # engines of every paranoia level and reload share the answers
def restrict(pattern: bytes, allowed: frozenset[int]) -> bytes | None:
    """``pattern`` as it can match on a text over ``allowed``: every branch, repeat or class
    member that needs another byte left out, so the database for a tier holds less; the same
    matches as ``pattern`` on any such text. None when it can match nothing there. The
    pattern itself when the analysis does not model one of its constructs."""
    if _P is None:
        return pattern
    try:
        tree = _P.parse(pattern, re.I | re.S)
    except Exception:
        return pattern
    try:
        return _seq(tree, allowed)
    except _Unmodelled:
        return pattern


@functools.lru_cache(maxsize=4096)
def case_matters(pattern: bytes) -> bool:
    """Whether caseless matching can change what ``pattern`` matches: a letter outside a class,
    or a class holding a letter without its other case. Hyperscan runs some caseless patterns
    (a class of both cases already) on a slower engine, so the caseless flag is set only where
    it matters."""
    if _P is None:
        return True
    try:
        return _case_seq(_P.parse(pattern, re.I | re.S))
    except Exception:
        return True


class _Unmodelled(Exception):
    """A construct the signatures do not use (look-arounds, back-references...)."""


def _seq(items, allowed) -> bytes | None:
    out = []
    for op, av in items:
        part = _item(op, av, allowed)
        if part is None:
            return None
        out.append(part)
    return b"".join(out)


def _folds(b: int) -> tuple[int, ...]:
    """A byte and its other ASCII case: caseless matching lets either stand for the pattern's."""
    if 65 <= b <= 90:
        return (b, b + 32)
    if 97 <= b <= 122:
        return (b, b - 32)
    return (b,)


def _item(op, av, allowed) -> bytes | None:
    if op is _C.LITERAL:
        return b"\\x%02x" % av if any(f in allowed for f in _folds(av)) else None
    if op is _C.NOT_LITERAL:
        return _charset({b for b in allowed if b not in _folds(av)})
    if op is _C.ANY:
        return _charset(allowed)
    if op is _C.IN:
        return _charset({b for b in allowed if _in_class(av, b)})
    if op is _C.BRANCH:
        branches = [r for r in (_seq(branch, allowed) for branch in av[1]) if r is not None]
        return b"(?:" + b"|".join(branches) + b")" if branches else None
    if op is _C.SUBPATTERN:
        body = _seq(av[-1], allowed)
        return None if body is None else b"(?:" + body + b")"
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT):
        low, high, body = av
        inner = _seq(body, allowed)
        if inner is None:
            return b"" if low == 0 else None
        bounds = b"{%d,}" % low if high is _C.MAXREPEAT else b"{%d,%d}" % (low, high)
        return b"(?:" + inner + b")" + bounds + (b"?" if op is _C.MIN_REPEAT else b"")
    if op is _C.AT and av in _ANCHORS:
        return _ANCHORS[av]
    raise _Unmodelled(op)


def _charset(members) -> bytes | None:
    """A class of exactly these bytes (ranges joined); None for no byte."""
    if not members:
        return None
    out, run = [], []
    for b in sorted(members):
        if run and b == run[-1] + 1:
            run.append(b)
            continue
        if run:
            out.append(_run(run))
        run = [b]
    out.append(_run(run))
    return b"[" + b"".join(out) + b"]"


def _run(run) -> bytes:
    if len(run) == 1:
        return b"\\x%02x" % run[0]
    return b"\\x%02x-\\x%02x" % (run[0], run[-1])


def _in_class(items, b: int, caseless: bool = True) -> bool:
    """Whether byte ``b`` matches the class: caselessly, a fold of it among the members, then
    the class's negation applied (so ``[^a-z]`` takes neither ``a`` nor ``A``, as in re and
    Hyperscan)."""
    negate = False
    hit = False
    folds = _folds(b) if caseless else (b,)
    for op, av in items:
        if op is _C.NEGATE:
            negate = True
        elif op is _C.LITERAL:
            hit = hit or av in folds
        elif op is _C.RANGE:
            hit = hit or any(av[0] <= f <= av[1] for f in folds)
        elif op is _C.CATEGORY:
            hit = hit or any(_in_category(av, f) for f in folds)
        else:
            raise _Unmodelled(op)
    return hit != negate


def _in_category(category, b: int) -> bool:
    if category is _C.CATEGORY_DIGIT:
        return b in _DIGIT
    if category is _C.CATEGORY_NOT_DIGIT:
        return b not in _DIGIT
    if category is _C.CATEGORY_SPACE:
        return b in _SPACE
    if category is _C.CATEGORY_NOT_SPACE:
        return b not in _SPACE
    if category is _C.CATEGORY_WORD:
        return b in _WORD
    if category is _C.CATEGORY_NOT_WORD:
        return b not in _WORD
    raise _Unmodelled(category)


def _case_seq(items) -> bool:
    for op, av in items:
        if op in (_C.LITERAL, _C.NOT_LITERAL):
            if len(_folds(av)) > 1:
                return True
        elif op is _C.IN:
            members = {b for b in range(256) if _in_class(av, b, caseless=False)}
            if any(b in members and (b ^ 0x20) not in members for b in _LETTERS):
                return True
        elif op is _C.BRANCH:
            if any(_case_seq(branch) for branch in av[1]):
                return True
        elif op is _C.SUBPATTERN:
            if _case_seq(av[-1]):
                return True
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT):
            if _case_seq(av[2]):
                return True
        elif not (op is _C.ANY or (op is _C.AT and av in _ANCHORS)):
            return True
    return False


class Tiers:
    """Picks, per text, the smallest tier whose alphabet holds every byte of it.

    ``members(patterns)`` gives each tier's patterns; ``pick(data)`` the tier of a text,
    ``full`` (= the number of tiers) meaning "needs the full set". One ``bytes.translate``
    maps every byte to a letter (first tier), a digit (second) or a blank (neither), and
    ``isalpha`` / ``isalnum`` tell the tier: C loops, where deleting each tier's bytes in
    turn or a regex cost twice as much per value. Hence at most two tiers.
    """

    def __init__(self, tiers: Sequence[bytes] = TIERS):
        if not 1 <= len(tiers) <= 2:
            raise ValueError("one or two tiers")
        self.alphabets = alphabets(tiers)
        self.full = len(self.alphabets)
        first = self.alphabets[0]
        second = self.alphabets[-1]
        self._table = bytes(b"a"[0] if b in first else b"0"[0] if b in second else b" "[0] for b in range(256))

    def members(self, patterns: Sequence[bytes]) -> list[list[tuple[int, bytes]]]:
        """Per tier, the patterns a text of it can match, as (index, the pattern restricted
        to the tier's alphabet)."""
        out = []
        for alphabet in self.alphabets:
            restricted = ((i, restrict(p, alphabet)) for i, p in enumerate(patterns))
            out.append([(i, r) for i, r in restricted if r is not None])
        return out

    def pick(self, data: bytes) -> int:
        if not data:
            return 0
        mapped = data.translate(self._table)
        if mapped.isalpha():
            return 0
        if mapped.isalnum():
            return self.full - 1
        return self.full
