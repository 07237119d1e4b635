"""wsfw.relay.tuning: the small-frame XOR masker gives Autobahn's own bytes, chunk by chunk,
and install() puts it (and the cheap log helpers) where Autobahn's protocol looks them up."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wsfw.relay import tuning


@settings(max_examples=300, deadline=None)
@given(mask=st.binary(min_size=4, max_size=4), data=st.binary(max_size=3000),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=5))
def test_small_masker_matches_autobahns_in_any_chunking(mask, data, cuts):
    from autobahn.nvx._xormasker import XorMaskerSimple

    reference = XorMaskerSimple(mask).process(data) if data else b""
    masker = tuning.SmallXorMasker(mask)
    pieces, start = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        pieces.append(masker.process(data[start:cut]))
        start = cut
    assert b"".join(pieces) == reference
    assert masker.pointer() == len(data)
    masker.reset()
    assert masker.pointer() == 0


def test_install_replaces_the_per_frame_costs_and_is_idempotent():
    import autobahn.twisted.websocket as twisted_websocket
    import autobahn.websocket.protocol as protocol

    tuning.install()
    tuning.install()
    assert isinstance(protocol.create_xor_masker(b"abcd", 64), tuning.SmallXorMasker)
    assert not isinstance(protocol.create_xor_masker(b"abcd", tuning.SMALL_FRAME + 1), tuning.SmallXorMasker)
    assert not isinstance(protocol.create_xor_masker(b"abcd", None), tuning.SmallXorMasker)  # length unknown
    assert protocol.hltype is tuning._plain and twisted_websocket.hlval is tuning._plain
    assert protocol.hlval("x", color="red") == "x"
