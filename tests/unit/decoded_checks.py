"""Invariants every ``Decoded`` must satisfy, whatever the input: shared by the decoder tests."""

from __future__ import annotations

from wsfw.decoders import Decoded, Limits


def assert_sane(d, limits=Limits()):
    """Params are (str, str) pairs within the bounds, and ``raw`` is there unless it is the one param."""
    assert isinstance(d, Decoded)
    assert all(type(p) is str and type(v) is str for p, v in d.params)
    assert len(d.params) <= limits.max_params + 1
    assert "raw" in [p for p, _ in d.params] or len(d.params) == 1
    assert sum(len(v) for p, v in d.params if p != "raw") <= limits.max_expanded_bytes
