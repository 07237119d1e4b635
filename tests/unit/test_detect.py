"""Unit tests for wsfw.detect (payloads are our own, not the corpus)."""

import json
import os
import random
import time

import pytest

from wsfw import detect
from wsfw.detect import DEFAULT_THRESHOLD, Engine, Match, Result, transforms
from wsfw.detect.backend import HAVE_HYPERSCAN

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "detect", "payloads.json")

with open(DATA, encoding="utf-8") as _f:
    PAYLOADS = json.load(_f)

ATTACKS = [(cls, p) for cls, ps in PAYLOADS["attacks"].items() for p in ps]
BENIGN = PAYLOADS["benign"]


@pytest.fixture(scope="module")
def engine():
    return Engine(paranoia=1)


@pytest.mark.parametrize("cls,payload", ATTACKS)
def test_attack_detected_with_class(engine, cls, payload):
    """Each attack payload is blocked at paranoia 1 and a match of its class is reported."""
    res = engine.scan([("json.text", payload)])
    assert res.blocked(DEFAULT_THRESHOLD), (cls, payload, res)
    assert cls in {m.cls for m in res.matches}, (cls, payload, res)


@pytest.mark.parametrize("payload", BENIGN)
def test_benign_not_blocked(engine, payload):
    """Tricky benign chat messages are not blocked at paranoia 1."""
    res = engine.scan([("json.text", payload)])
    assert not res.blocked(DEFAULT_THRESHOLD), (payload, res)


def test_match_fields(engine):
    """Matches carry detector, rule id, severity, score, the caller's path and a bounded, escaped excerpt."""
    res = engine.scan([("socketio.args[0]", "x" * 200 + "<script>\x00\x1b alert(1)</script>" + "y" * 200)])
    assert isinstance(res, Result) and res.matches
    for m in res.matches:
        assert isinstance(m, Match)
        assert m.path == "socketio.args[0]"
        assert m.severity in ("critical", "error", "warning", "notice")
        assert m.score == {"critical": 5, "error": 4, "warning": 3, "notice": 2}[m.severity]
        assert len(m.excerpt) <= 80
        assert not any(ord(c) < 32 or ord(c) == 127 for c in m.excerpt)


def test_keys_checked_for_pollution_and_operators(engine):
    """Prototype-pollution and NoSQL operator keys in the path are detected even with harmless values."""
    r1 = engine.scan([("json.__proto__.isAdmin", "true")])
    assert r1.blocked(5) and "prototype_pollution" in {m.cls for m in r1.matches}
    r2 = engine.scan([("json.user.$ne", "1")])
    assert r2.blocked(5) and "nosqli" in {m.cls for m in r2.matches}
    r3 = engine.scan([("json.constructor.prototype.x", "1")])
    assert r3.blocked(5)
    assert not engine.scan([("json.user.price", "10")]).blocked(5)


def test_result_blocked_threshold():
    """Result.blocked compares the score against the threshold inclusively."""
    r = Result(score=5, matches=())
    assert r.blocked(5) and not r.blocked(6)


def test_score_capped_per_detector(engine):
    """One detector contributes at most 5 points however many of its rules match."""
    res = engine.scan([("t", "<script>alert(1)</script><img src=x onerror=alert(2)><iframe src=javascript:alert(3)>")])
    xss = sum(m.score for m in res.matches if m.detector == "xss")
    assert xss > 5
    others = {m.detector for m in res.matches} - {"xss"}
    assert res.score <= 5 * (1 + len(others))


def test_paranoia_monotonic():
    """Higher paranoia never lowers the score of any test payload."""
    engines = [Engine(paranoia=p) for p in (1, 2, 3)]
    for _cls, p in ATTACKS + [("benign", b) for b in BENIGN]:
        scores = [e.scan([("t", p)]).score for e in engines]
        assert scores == sorted(scores), (p, scores)


def test_disabled_detector_and_rule():
    """Disabling a detector name or a rule id removes its matches."""
    payload = "<script>alert(1)</script>"
    full = Engine()
    assert "xss" in {m.detector for m in full.scan([("t", payload)]).matches}
    no_xss = Engine(disabled=frozenset({"xss"}))
    assert "xss" not in {m.detector for m in no_xss.scan([("t", payload)]).matches}
    no_rule = Engine(disabled=frozenset({"xss-001"}))
    ids = {m.rule_id for m in no_rule.scan([("t", payload)]).matches}
    assert "xss-001" not in ids and ids
    assert not Engine(disabled=frozenset({"prototype_pollution"})).scan([("json.__proto__", "1")]).matches


@pytest.mark.skipif(not HAVE_HYPERSCAN, reason="hyperscan not installed")
@pytest.mark.parametrize("paranoia", [1, 3])
def test_backends_agree(paranoia):
    """Hyperscan and the re fallback report identical rule sets on all test data."""
    hs = Engine(paranoia=paranoia, backend="hyperscan")
    rx = Engine(paranoia=paranoia, backend="re")
    assert hs.backend_name == "hyperscan" and rx.backend_name == "re"
    extra = ["..%c0%af..%c0%afetc/passwd", "%u003cscript%u003e", "\\u003cscript\\u003e", "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "ü" * 100]
    for _cls, p in ATTACKS + [("b", b) for b in BENIGN + extra]:
        a = hs.scan([("t", p)])
        b = rx.scan([("t", p)])
        assert {m.rule_id for m in a.matches} == {m.rule_id for m in b.matches}, p
        assert a.score == b.score


def test_regex_only_without_libinjection(monkeypatch):
    """With libinjection unavailable the engine still works on regex signatures."""
    monkeypatch.setattr(detect, "_libinjection", None)
    eng = Engine()
    assert eng.scan([("t", "<script>alert(1)</script>")]).blocked(5)
    assert not eng.scan([("t", "hello there")]).blocked(5)


@pytest.mark.parametrize("backend", ["re"] + (["hyperscan"] if HAVE_HYPERSCAN else []))
def test_adversarial_inputs_fast(backend):
    """Pathological 50 KiB inputs finish (no catastrophic backtracking).

    Backtracking blow-up on 50 KiB takes minutes to hours; a linear scan takes
    well under a second. The bound is on this process's CPU time, ten times the
    slow backend's worst input, so a loaded machine cannot make it flaky: it
    only separates linear from catastrophic, it does not measure speed.
    """
    eng = Engine(paranoia=3, backend=backend)
    inputs = [c * 50000 for c in "a'<%.\\/ ({$-*;&|0"] + [
        "<a " * 17000, "../" * 17000, "'or " * 12000, "{{" * 25000, "${" * 25000,
        "%25" * 17000, "&#x41;" * 8000, "/*" * 25000, "a=b;" * 12000, "(|(" * 16000,
    ]
    for s in inputs:
        t1 = time.process_time()
        eng.scan([("t", s)])
        assert time.process_time() - t1 < 10.0, s[:20]


def test_never_raises_on_junk(engine):
    """Random bytes (surrogateescape), lone surrogates, 1 MiB strings and odd params never raise."""
    rnd = random.Random(1234)
    for _ in range(200):
        raw = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
        s = raw.decode("utf-8", "surrogateescape")
        res = engine.scan([("t" + s[:5], s)])
        assert isinstance(res, Result)
    big = "A" * (1 << 20)
    assert isinstance(engine.scan([("t", big)]), Result)
    big2 = ("<script>" + "x" * (1 << 20))
    assert engine.scan([("t", big2)]).blocked(5)
    assert isinstance(engine.scan([("t", "\ud800\udfff%uD800&#0;&#xffffffff;\\u{110000}")]), Result)
    assert isinstance(engine.scan([("t", None), (None, "x"), ("bad",), 7, ("t", b"\xff<script>")]), Result)
    assert engine.scan([]).score == 0


def test_scan_length_cap():
    """Only the first MAX_SCAN_CHARS characters of a value are inspected."""
    eng = Engine()
    tail = "a" * transforms.MAX_SCAN_CHARS + "<script>alert(1)</script>"
    assert not eng.scan([("t", tail)]).blocked(5)


def test_transforms():
    """Decoders undo URL/%u/double encoding, entities, escapes, nulls, comments and base64 blobs."""
    vs = transforms.variants("%253Cscript%253E")
    assert "<script>" in vs
    assert "<x>" in transforms.variants("%u003Cx%u003E")
    assert "<b>" in transforms.variants("&lt;b&gt;")
    assert "<i>" in transforms.variants("&#60;i&#x3e;")
    assert "<q>" in transforms.variants("\\u003cq\\x3e")
    assert "ab" in transforms.variants("a\x00b")
    assert any("union select" in v for v in transforms.variants("UNION/**/SELECT"))
    assert any("<script>" in v for v in transforms.variants("PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="))
    assert transforms.url_decode("%zz%") == "%zz%"
    assert transforms.variants("plain chat") == ["plain chat"]


def test_compiled_database_cache(tmp_path, monkeypatch):
    """A signature database loaded from the on-disk cache detects exactly what a fresh compile does."""
    from wsfw.detect import backend

    if not backend.HAVE_HYPERSCAN:
        pytest.skip("the cache is for Hyperscan databases")
    monkeypatch.setenv("WSFW_CACHE_DIR", str(tmp_path))
    patterns = [b"<script", b"union\\s+select", b"\\.\\./"]
    fresh = backend.HyperscanBackend(patterns)
    stored = sorted(tmp_path.iterdir())
    assert stored  # the full database and the tiers' (equal tiers share a file)
    cached = backend.HyperscanBackend(patterns)
    assert sorted(tmp_path.iterdir()) == stored
    for sample in (b"<SCRIPT>", b"1 UNION  SELECT 2", b"../../etc", b"hello"):
        assert cached.match(sample) == fresh.match(sample)
    assert cached.match(b"<script>") == {0}
