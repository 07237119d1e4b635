"""Unit tests for wsfw.detect.alphabet: the per-tier signature sets give exactly the full set's hits.

The tier databases are only correct if the analysis never drops a signature, branch or class
member that a text of the tier could use. These tests check the analysis on hand-written
patterns, then every shipped signature against the full set on texts made to sit in each tier
and to contain the signatures' own words (our payloads, their decoded variants, their pieces,
and generated word salads).
"""

import json
import os
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsfw.detect import alphabet, transforms
from wsfw.detect.alphabet import Tiers, can_match, case_matters, restrict
from wsfw.detect.backend import HAVE_HYPERSCAN, ReBackend, make_backend
from wsfw.detect.rules import GATES, RULES

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "detect", "payloads.json")
PATTERNS = ([r[4].encode() for r in RULES] + [g[1].encode() for g in GATES]
            + [transforms.HINT_DECODE.encode(), transforms.HINT_NORM.encode(), transforms.HINT_B64.encode()])
TIERS = Tiers()
LOWER = frozenset(b"abcdefghijklmnopqrstuvwxyz ")


def _search(pattern: bytes, data: bytes) -> bool:
    return re.search(pattern, data, re.I | re.S) is not None


def _vocabulary() -> list[bytes]:
    """The words the signatures spell (letter runs of their literals): texts built of them reach
    deep into the patterns, where random text would match nothing."""
    words = set()
    for pattern in PATTERNS:
        for run in re.findall(rb"(?<![\\])[a-z_]{2,}", pattern.lower()):
            words.add(run)
    return sorted(words)


VOCABULARY = _vocabulary()


def _samples() -> list[bytes]:
    with open(DATA, encoding="utf-8") as f:
        payloads = json.load(f)
    texts = [p for ps in payloads["attacks"].values() for p in ps] + payloads["benign"]
    values = set()
    for text in texts:
        for variant in transforms.variants(text, {"decode", "norm", "b64"}):
            values.add(variant.encode("utf-8", "surrogatepass"))
    rng = random.Random(11)
    for value in list(values):
        for _ in range(4):
            a = rng.randrange(len(value) + 1)
            values.add(value[a:rng.randrange(a, len(value) + 1)])
    for allowed in TIERS.alphabets:  # the same texts with every byte outside the tier deleted
        drop = bytes(b for b in range(256) if b not in allowed)
        values.update(v.translate(None, drop) for v in list(values))
    for _ in range(3000):  # word salads over each tier's punctuation
        extra = rng.choice([b" ", b".,?!", b".,?!'-:"])
        parts = [rng.choice(VOCABULARY) if rng.random() < 0.6 else bytes([rng.choice(extra)])
                 for _ in range(rng.randrange(1, 12))]
        values.add(rng.choice([b" ", b""]).join(parts))
    return sorted(values)


SAMPLES = _samples()


# -- the analysis on hand-written patterns --------------------------------------------------


def test_a_needed_byte_outside_the_alphabet_rules_the_pattern_out():
    assert not can_match(rb"<script", LOWER)
    assert not can_match(rb"union\s+select\s*\(", LOWER)
    assert can_match(rb"union\s+select", LOWER)


def test_optional_parts_and_branches_are_pruned_not_the_pattern():
    assert restrict(rb"a(<b)?c", LOWER) is not None
    assert _search(restrict(rb"a(<b)?c", LOWER), b"ac")
    assert restrict(rb"(<x|y)z", LOWER) is not None and _search(restrict(rb"(<x|y)z", LOWER), b"yz")
    assert restrict(rb"(<x|>y)z", LOWER) is None
    assert restrict(rb"a(<b){1,3}c", LOWER) is None
    assert restrict(rb"a(<b){0,3}c", LOWER) is not None


def test_classes_are_cut_to_the_alphabet_and_case_folds():
    assert restrict(rb"[<>]", LOWER) is None
    assert restrict(rb"[^a-z ]", LOWER) is None
    assert _search(restrict(rb"\s\s", LOWER), b"a  b")
    assert restrict(rb"\s\s", LOWER) == rb"[\x20][\x20]"
    # caseless matching: an upper-case literal still matches lower-case text
    assert can_match(rb"UNION", LOWER)
    assert not can_match(rb"[A-Z]", frozenset(b"0123456789"))


def test_anchors_and_boundaries_are_kept():
    restricted = restrict(rb"^\s*whoami\b", LOWER)
    assert _search(restricted, b"  whoami")
    assert not _search(restricted, b"x whoami")
    assert not _search(restrict(rb"id$", LOWER), b"id x")


def test_unmodelled_constructs_keep_the_pattern_whole():
    assert restrict(rb"a(?=b)", LOWER) == rb"a(?=b)"
    assert restrict(rb"(a)\1", LOWER) == rb"(a)\1"
    assert can_match(rb"a(?=<)", LOWER)  # the look-ahead is assumed satisfiable, never dropped


def test_case_matters():
    assert not case_matters(transforms.HINT_B64.encode())  # a class of both cases already
    assert not case_matters(rb"[\t\n]|\s\s|%[0-9]")
    assert case_matters(rb"union")
    assert case_matters(rb"[a-z]{3}")
    assert case_matters(rb"[^x]")


def test_pick_chooses_the_smallest_tier():
    assert TIERS.pick(b"hello there 42") == 0
    assert TIERS.pick("caf\u00e9 \U0001f600".encode()) == 0
    assert TIERS.pick(b"ok, fine. really?!") == 0
    assert TIERS.pick(b"it's 12:30 - lunch") == 1
    assert TIERS.pick(b"<b>") == TIERS.full
    assert TIERS.pick(b"") == 0


# -- every shipped signature --------------------------------------------------------------


@pytest.mark.parametrize("tier", range(len(TIERS.alphabets)))
def test_restricted_signatures_match_as_the_originals_on_texts_of_the_tier(tier):
    """Each signature, restricted to a tier, finds a match exactly where the original does, on
    every sample text of that tier; a signature left out finds none there."""
    texts = [s for s in SAMPLES if TIERS.pick(s) <= tier]
    assert len(texts) > 1000
    kept = dict(TIERS.members(PATTERNS)[tier])
    matched = 0
    for i, pattern in enumerate(PATTERNS):
        original = re.compile(pattern, re.I | re.S)
        restricted = re.compile(kept[i], re.I | re.S) if i in kept else None
        for text in texts:
            hit = original.search(text) is not None
            matched += hit
            assert hit == (restricted is not None and restricted.search(text) is not None), (i, text)
    assert matched > 500  # the samples reach the signatures, not only clean text
    assert len(kept) < len(PATTERNS) / 2


@given(st.lists(st.one_of(st.sampled_from(VOCABULARY), st.sampled_from([b" ", b".", b",", b"?", b"!", b"'", b"-",
                                                                        b":", b"1", b"0x", "\u00e9".encode()])),
                max_size=10))
@settings(max_examples=300, deadline=None)
def test_re_backend_tiers_agree_with_the_full_set(parts):
    text = b"".join(parts)
    full = {i for i, p in enumerate(PATTERNS) if _search(p, text)}
    assert _RE_BACKEND.match(text) == full


_RE_BACKEND = ReBackend(PATTERNS)


@pytest.mark.skipif(not HAVE_HYPERSCAN, reason="hyperscan not installed")
def test_hyperscan_tiers_agree_with_one_caseless_database():
    """The tier databases (restricted patterns, caseless only where case matters) report what
    one database of the original patterns, all caseless, reports."""
    import hyperscan

    reference = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
    reference.compile(expressions=PATTERNS, ids=list(range(len(PATTERNS))), elements=len(PATTERNS),
                      flags=[flags] * len(PATTERNS))
    tiered = make_backend(PATTERNS, prefer="hyperscan")  # the engines' own (same patterns, same order)
    per_tier = [0] * (TIERS.full + 1)
    for text in SAMPLES:
        expected: set[int] = set()
        if text:
            reference.scan(text, match_event_handler=lambda i, *_: expected.add(i))
        assert tiered.match(text) == expected, text
        per_tier[TIERS.pick(text)] += bool(expected)
    assert all(n > 100 for n in per_tier)  # hits in every tier, so each database was exercised


def test_no_parser_keeps_every_pattern(monkeypatch):
    """Without re's parser (a later Python may move it) every pattern stays in every tier, whole."""
    monkeypatch.setattr(alphabet, "_P", None)
    restrict.cache_clear()
    case_matters.cache_clear()
    try:
        assert restrict(rb"<script", LOWER) == rb"<script"
        assert case_matters(rb"[\t]")
    finally:
        restrict.cache_clear()  # forget the answers given without the parser
        case_matters.cache_clear()


@pytest.mark.skipif(not HAVE_HYPERSCAN, reason="hyperscan not installed")
def test_a_tier_hyperscan_refuses_falls_back_to_the_full_database(monkeypatch):
    """Only the tier's compile fails (the full set compiled first): the back-end still answers,
    for every text, with the full database."""
    from wsfw.detect import backend

    real = backend._compile
    calls = []

    def compile_(patterns, ids):
        calls.append(len(patterns))
        if len(calls) > 1:
            raise RuntimeError("refused")
        return real(patterns, ids)

    monkeypatch.setattr(backend, "_compile", compile_)
    tiered = backend.HyperscanBackend([rb"union\s+select", rb"<script"])
    assert tiered.match(b"1 union select 2") == {0}
    assert tiered.match(b"<script>") == {1}
    assert len(calls) == 3
