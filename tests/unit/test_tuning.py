"""wsfw.relay.tuning: its XOR masker gives Autobahn's own bytes, chunk by chunk (with the C
apply_mask of websockets and with the pure-Python fallback), and install() puts it (and the
cheap log helpers) where Autobahn's protocol looks them up."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wsfw.relay import tuning


@settings(max_examples=300, deadline=None)
@given(mask=st.binary(min_size=4, max_size=4), data=st.binary(max_size=3000),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=5))
def test_masker_matches_autobahns_in_any_chunking(mask, data, cuts):
    from autobahn.nvx._xormasker import XorMaskerSimple

    reference = XorMaskerSimple(mask).process(data) if data else b""
    masker = tuning.XorMasker(mask)
    pieces, start = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        pieces.append(masker.process(data[start:cut]))
        start = cut
    assert b"".join(pieces) == reference
    assert masker.pointer() == len(data)
    masker.reset()
    assert masker.pointer() == 0
    assert tuning._xor(data, mask) == reference  # the fallback without websockets' C extension


def test_the_c_masker_is_in_use():
    """requirements.txt's websockets ships its speedups extension: the fallback would cost 5-10x."""
    assert tuning._apply is tuning._apply_mask is not None


def test_install_replaces_the_per_frame_costs_and_is_idempotent():
    import autobahn.twisted.websocket as twisted_websocket
    import autobahn.websocket.protocol as protocol

    tuning.install()
    tuning.install()
    for length in (64, 70000, None):  # None: length unknown
        assert isinstance(protocol.create_xor_masker(b"abcd", length), tuning.XorMasker)
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


_MASK_SIZES = (0, 1, 3, 4, 5, 125, 126, 2047, 2048, 2049, 70000)  # odd sizes, both sides of 16-bit lengths
_MASK_KEYS = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"abcd", b"\x01\x00\x00\x80", b"\x80\x00\x00\x01",
              bytes.fromhex("37fa213d"))


def test_mask_matches_autobahns_native_masker():
    """tuning.mask (and its pure-Python fallback) gives exactly the bytes of Autobahn's native masker, for sizes on both sides of every threshold and keys with
    high and low bits set at each end; masking twice gives the data back."""
    import random

    from autobahn.websocket.xormasker import create_xor_masker

    rng = random.Random(1)
    for size in _MASK_SIZES:
        data = rng.randbytes(size)
        for key in _MASK_KEYS + (rng.randbytes(4),):
            reference = create_xor_masker(key, len(data)).process(data)
            masked = tuning.mask(key, data)
            assert masked == reference, (size, key)
            assert tuning._xor(data, key) == reference, (size, key)
            assert type(masked) is bytes and len(masked) == size
            assert tuning.mask(key, masked) == data, (size, key)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=4, max_size=4),
       data=st.one_of(st.binary(max_size=300), st.binary(min_size=2040, max_size=2060)))
def test_mask_matches_autobahns_native_masker_any_key(key, data):
    from autobahn.websocket.xormasker import create_xor_masker

    assert tuning.mask(key, data) == create_xor_masker(key, len(data)).process(data)


def test_precise_timer_fires_on_time_and_cancels_harmlessly():
    """wsfw.relay.timers: Autobahn's timeouts fire after exactly their delay (txaio's batched timer
    rounds the due time down to a whole second), and cancelling one that ran does nothing."""
    from twisted.internet.task import Clock

    from wsfw.relay.timers import PreciseTimer

    clock = Clock()
    clock.advance(1000.75)  # a due time of 1001.75 that whole-second rounding would make 1001
    fired = []
    timer = PreciseTimer(clock)
    done = timer.call_later(1.0, fired.append, "close")
    cancelled = timer.call_later(0.5, fired.append, "never")
    cancelled.cancel()
    cancelled.cancel()
    clock.advance(0.999)
    assert fired == []
    clock.advance(0.001)
    assert fired == ["close"]
    done.cancel()  # already ran: no AlreadyCalled


def test_hop_factories_use_the_precise_timer():
    from twisted.internet import reactor

    from wsfw import config_ini
    from wsfw.relay.frontend import FrontendFactory
    from wsfw.relay.timers import PreciseTimer

    config = config_ini.load("t.ini", "[listen:a]\nendpoint = tcp:1\n[route:r]\nupstream = ws://127.0.0.1:1\n")
    factory = FrontendFactory(config, config.routes[0], hook=None, reactor=reactor)
    assert isinstance(factory._batched_timer, PreciseTimer)
    assert isinstance(factory.backend._batched_timer, PreciseTimer)
