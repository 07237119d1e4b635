"""The built-in ``detect`` inspector: attack signatures and libinjection over every decoded parameter."""

from __future__ import annotations

from zope.interface import implementer

from wsfw.decoders import COMPLETE_FORMATS
from wsfw.inspection import Finding
from wsfw.interfaces import IInspector, IInspectorFactory


#: Parameters a decoder fills from a fixed vocabulary (never attacker text).
STRUCTURAL = frozenset({"socketio.type"})
_SKIP_WITH_RAW = STRUCTURAL | {"raw"}


def scannable(decoded):
    """The parameters worth scanning: each one costs a full detector pass.

    The ``raw`` copy is skipped when a structured decoder read the whole
    message without error or truncation (its values and keys are all in the
    other parameters, unescaped); it is scanned whenever decoding fell short,
    so a decoder gap never blinds detection. One-character values and fixed
    vocabulary fields cannot carry an attack.
    """
    skip = (_SKIP_WITH_RAW if decoded.format in COMPLETE_FORMATS and decoded.error is None and decoded.truncated is None
            else STRUCTURAL)
    return [pv for pv in decoded.params if len(pv[1]) > 1 and pv[0] not in skip]


@implementer(IInspector)
class DetectInspector:
    """Scores a message's parameters; blocks at or above the anomaly threshold, logs below it."""

    name = "detect"
    #: inspect() takes ``exclude`` (see Engine.scan): exclusion rules act per parameter here.
    supports_exclusions = True

    def __init__(self, engine, threshold: int):
        self.engine = engine
        self.threshold = threshold

    def inspect(self, view, decoded, exclude=None):
        result = self.engine.scan(scannable(decoded), exclude)
        if not result.matches:
            return None
        top = max(result.matches, key=lambda m: m.score)
        classes = tuple(dict.fromkeys(m.cls for m in result.matches))
        rules = tuple(dict.fromkeys(m.rule_id for m in result.matches))
        return Finding(
            inspector=self.name,
            action="block" if result.blocked(self.threshold) else "log",
            reason=f"{'/'.join(classes)} detected (score {result.score})",
            score=result.score, rules=rules, classes=classes, path=top.path, excerpt=top.excerpt,
            matches=tuple({"detector": m.detector, "rule_id": m.rule_id, "class": m.cls, "severity": m.severity,
                           "score": m.score, "path": m.path} for m in result.matches[:10]),
        )


@implementer(IInspectorFactory)
class DetectFactory:
    """``[inspector:detect]``: ``paranoia`` (1-3), ``anomaly_threshold``, ``disabled`` detectors or rule ids."""

    name = "detect"
    keys = ("paranoia", "anomaly_threshold", "disabled")

    def check(self, options) -> tuple[int, int, frozenset[str]]:
        from wsfw.detect import DEFAULT_THRESHOLD

        try:
            paranoia = int(options.get("paranoia") or 1)
        except ValueError:
            raise ValueError("paranoia", f"{options['paranoia']!r} is not 1, 2 or 3") from None
        if paranoia not in (1, 2, 3):
            raise ValueError("paranoia", f"{paranoia} is not 1, 2 or 3")
        try:
            threshold = int(options.get("anomaly_threshold") or DEFAULT_THRESHOLD)
        except ValueError:
            raise ValueError("anomaly_threshold", f"{options['anomaly_threshold']!r} is not a whole number") from None
        if threshold < 1:
            raise ValueError("anomaly_threshold", "must be at least 1")
        return paranoia, threshold, frozenset((options.get("disabled") or "").replace(",", " ").split())

    def build(self, options):
        from wsfw.detect import Engine

        # Engine compiles nothing twice: its signature database is cached per
        # pattern set (in memory, and on disk across restarts) by wsfw.detect.backend.
        paranoia, threshold, disabled = self.check(options)
        return DetectInspector(Engine(paranoia=paranoia, disabled=disabled), threshold)
