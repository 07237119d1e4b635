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


def test_at_rest_values_are_what_the_hop_options_set():
    """HopMixin's class values for Autobahn options (wsfw.relay.hop.AT_REST) stand in for the options
    themselves: Autobahn only copies an option onto a protocol that does not already have it. So each
    must be exactly what wsfw.relay.options configures, for a default config and a non-default one."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory

    from wsfw import config_ini
    from wsfw.relay.hop import AT_REST
    from wsfw.relay.options import client_options, server_options

    base = "[listen:a]\nendpoint = tcp:1\n[route:r]\nupstream = ws://127.0.0.1:1\n[admin]\nendpoint = off\n"
    other = base + ("[limits]\ncompression = both\nmax_message_bytes = 1MiB\n"
                    "[timeouts]\nauto_ping_interval = 5\nidle = 30\n")
    for text in (base, other):
        config = config_ini.load("t.ini", text)
        for factory, options in ((WebSocketServerFactory(), server_options(config)),
                                 (WebSocketClientFactory(), client_options(config))):
            factory.setProtocolOptions(**options)
            checked = [name for name in AT_REST if name in factory.protocol.CONFIG_ATTRS]
            assert len(checked) >= 12, checked  # server and client options both
            for name in checked:
                assert getattr(factory, name) == AT_REST[name], (type(factory).__name__, name)
