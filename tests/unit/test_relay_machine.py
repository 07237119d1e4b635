"""The relay's decisions, driven with fake hops and a fake clock (no sockets)."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task
from zope.interface.verify import verifyObject

from wsfw.config import Settings, Timeouts
from wsfw.hook import FORWARD, NoInspection, Verdict
from wsfw.interfaces import IMessageHook, IRelayEnd
from wsfw.relay import CLIENT, UPSTREAM
from wsfw.relay.machine import Relay
from wsfw.testing import FakeRelayEnd


class Hook:
    def __init__(self, verdict=FORWARD):
        self.verdict = verdict
        self.views = []

    def inspect_message(self, view):
        self.views.append(view)
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


def make(hook=None, settings=Settings(), idle=0.0):
    clock = task.Clock()
    relay = Relay(route="r", peer="1.2.3.4:5", path="/p", hook=hook or NoInspection(), settings=settings,
                  timeouts=Timeouts(idle=idle, close_handshake=1.0), clock=clock, log_connections=False)
    client, upstream = FakeRelayEnd(CLIENT), FakeRelayEnd(UPSTREAM)
    relay.attach(CLIENT, client)
    relay.attach(UPSTREAM, upstream)
    relay.start()
    return relay, client, upstream, clock


def test_fake_and_hook_provide_interfaces():
    """The shipped fake and the default hook satisfy the interfaces they claim."""
    verifyObject(IRelayEnd, FakeRelayEnd(CLIENT))
    verifyObject(IMessageHook, NoInspection())


def test_forward_both_ways_with_views():
    """Messages go to the other hop unchanged; the hook sees direction, index and payload."""
    hook = Hook()
    relay, client, upstream, _ = make(hook)
    relay.message(CLIENT, b"hi", False)
    relay.message(UPSTREAM, b"\x00", True)
    relay.message(CLIENT, b"again", False)
    assert upstream.sent == [(b"hi", False), (b"again", False)] and client.sent == [(b"\x00", True)]
    assert [(v.direction, v.index, v.payload) for v in hook.views] == [
        ("client", 1, b"hi"), ("upstream", 1, b"\x00"), ("client", 2, b"again")]
    assert relay.bytes == {CLIENT: 7, UPSTREAM: 1}


def test_messages_before_start_are_held_then_flushed():
    """A message the upstream sends before the client hop is open is delivered once it is."""
    clock = task.Clock()
    relay = Relay(route="r", peer="p", path="/", hook=NoInspection(), settings=Settings(), timeouts=Timeouts(),
                  clock=clock, log_connections=False)
    client, upstream = FakeRelayEnd(CLIENT), FakeRelayEnd(UPSTREAM)
    relay.attach(UPSTREAM, upstream)
    relay.message(UPSTREAM, b"early", False)
    relay.attach(CLIENT, client)
    relay.start()
    assert client.sent == [(b"early", False)]


def test_drop_keeps_both_hops():
    """A drop verdict discards the message and closes nothing."""
    relay, client, upstream, _ = make(Hook(Verdict.drop("no")))
    relay.message(CLIENT, b"x", False)
    assert upstream.sent == [] and client.closes == [] and upstream.closes == []
    assert relay.dropped[CLIENT] == 1


@pytest.mark.parametrize("expose,told", [(False, "policy violation"), (True, "sqli")])
def test_close_verdict(expose, told):
    """A close verdict: the sender gets its code (reason only if exposed), the other hop 1001."""
    relay, client, upstream, _ = make(Hook(Verdict.close(1008, "sqli", rule="942100")),
                                      settings=Settings(expose_reason=expose))
    relay.message(CLIENT, b"' or 1=1", False)
    assert client.closes == [(1008, told)] and upstream.closes == [(1001, "going away")]
    assert upstream.sent == [] and (relay.closed_by, relay.close_code) == ("wsfw", 1008)


def test_unsendable_verdict_code_becomes_1008():
    """A hook asking for a code that must not be sent (1006) gets 1008 instead."""
    relay, client, _, _ = make(Hook(Verdict.close(1006, "bad")))
    relay.message(CLIENT, b"x", False)
    assert client.closes[0][0] == 1008


@pytest.mark.parametrize("policy,expected", [("close", [(1011, "policy violation")]), ("allow", [])])
def test_inspection_error_policy(policy, expected):
    """A hook that raises fails closed (1011) by default, or forwards with on_inspection_error=allow."""
    relay, client, upstream, _ = make(Hook(RuntimeError("bug")), settings=Settings(on_inspection_error=policy))
    relay.message(CLIENT, b"x", False)
    assert client.closes == expected
    assert upstream.sent == ([] if policy == "close" else [(b"x", False)])


def test_deferred_verdicts_keep_order_and_pause_sender():
    """While a verdict is pending the sender is paused and later messages wait their turn."""
    pending = defer.Deferred()
    hook = Hook()
    hook.verdict = pending
    relay, client, upstream, _ = make(hook)
    relay.message(CLIENT, b"one", False)
    hook.verdict = FORWARD
    relay.message(CLIENT, b"two", False)
    assert upstream.sent == [] and client.reading is False
    pending.callback(FORWARD)
    assert upstream.sent == [(b"one", False), (b"two", False)] and client.reading is True


@pytest.mark.parametrize("code,relayed", [(4000, 4000), (1000, 1000), (None, None), (1001, 1001), (1012, 1012)])
def test_peer_close_relayed_and_reply_held(code, relayed):
    """A client's close goes upstream as is; the client's reply waits for the upstream's answer."""
    relay, client, upstream, _ = make()
    relay.peer_closed(CLIENT, code, "bye")
    assert upstream.closes == [(relayed, "bye")] and client.replies == []
    relay.close_replied(UPSTREAM, 3001, "ok")
    assert client.replies == [(3001, "ok")]


def test_held_reply_released_by_timer():
    """If the other peer never answers, the held reply goes out after close_handshake with 1000."""
    relay, client, upstream, clock = make()
    relay.peer_closed(UPSTREAM, 4001, "x")
    assert client.closes == [(4001, "x")]
    clock.advance(1.0)
    assert upstream.replies == [(1000, None)]


def test_hop_failure_closes_other_hop_first():
    """A client protocol error: upstream gets 1001 first, the failure is released when it answers."""
    relay, client, upstream, _ = make()
    relay.hop_failed(CLIENT, 1002, "bad frame")
    assert upstream.closes == [(1001, "going away")] and client.failures_released == 0
    relay.close_replied(UPSTREAM, 1000, None)
    assert client.failures_released == 1


def test_upstream_failure_gives_client_1011():
    """An upstream protocol error: the client gets 1011."""
    relay, client, upstream, _ = make()
    relay.hop_failed(UPSTREAM, 1002, "bad frame")
    assert client.closes == [(1011, "upstream error")]


@pytest.mark.parametrize("side,expected", [(UPSTREAM, 1011), (CLIENT, 1001)])
def test_unclean_loss_mapping(side, expected):
    """A hop whose TCP vanishes: the other gets 1011 (upstream lost) or 1001 (client lost)."""
    relay, client, upstream, _ = make()
    relay.lost(side, False, None, None)
    other = client if side == UPSTREAM else upstream
    assert other.closes[0][0] == expected
    relay.lost(CLIENT if side == UPSTREAM else UPSTREAM, True, 1000, None)
    assert relay.finished


def test_loss_releases_a_held_reply():
    """If the upstream vanishes while the client waits for its close reply, the client is answered."""
    relay, client, upstream, _ = make()
    relay.peer_closed(CLIENT, 1000, None)
    relay.lost(UPSTREAM, False, None, None)
    assert client.replies == [(1000, None)]


def test_idle_timeout():
    """With idle set, a silent connection is closed with 1001 on both hops; traffic postpones it."""
    relay, client, upstream, clock = make(idle=10)
    clock.advance(6)
    relay.message(CLIENT, b"x", False)
    clock.advance(6)
    assert client.closes == []
    clock.advance(5)
    assert client.closes == [(1001, "idle timeout")] and upstream.closes == [(1001, "idle timeout")]


def test_shutdown_closes_both_with_1001():
    """Shutdown sends 1001 to both hops."""
    relay, client, upstream, _ = make()
    relay.shutdown()
    assert client.closes == [(1001, "server shutting down")] == upstream.closes


# -- per-connection abuse limits ([limits] message_rate / byte_rate, [timeouts] max_lifetime) --------


class Ticket:
    """Records the offences the relay reports against its client (an IAdmissionTicket's part it uses)."""

    def __init__(self):
        self.offences = []

    def offence(self, reason):
        self.offences.append(reason)
        return False


def limited(limits: str, timeouts=None):
    from wsfw import config_ini

    cfg = config_ini.load("t.ini", "[listen:a]\nendpoint = tcp:0\n[route:r]\nupstream = ws://127.0.0.1:9\n"
                          f"[limits]\n{limits}\n")
    clock = task.Clock()
    clock.advance(100)
    relay = Relay(route="r", peer="1.2.3.4:5", path="/p", hook=NoInspection(), settings=Settings(),
                  timeouts=timeouts or Timeouts(close_handshake=1.0), clock=clock, log_connections=False,
                  limits=cfg.limits)
    client, upstream = FakeRelayEnd(CLIENT), FakeRelayEnd(UPSTREAM)
    relay.attach(CLIENT, client)
    relay.attach(UPSTREAM, upstream)
    relay.ticket = Ticket()
    relay.start()
    return relay, client, upstream, clock


def test_no_rates_configured_costs_one_attribute_test():
    relay, *_ = limited("")
    assert relay._limited is False


def test_message_rate_close_1008_upstream_1001_and_an_offence():
    """``5/s``: the burst of 5 passes, the 6th closes the client with 1008 (the upstream 1001) before
    it is inspected or forwarded, and the ticket hears of it once."""
    relay, client, upstream, _ = limited("message_rate = 5/s")
    for i in range(5):
        relay.message(CLIENT, b"m%d" % i, False)
    assert len(upstream.sent) == 5
    relay.message(CLIENT, b"one too many", False)
    relay.message(CLIENT, b"and another", False)
    assert len(upstream.sent) == 5
    assert client.closes == [(1008, "policy violation")] and upstream.closes == [(1001, "going away")]
    assert (relay.close_code, relay.close_reason) == (1008, "message_rate exceeded (5/s)")
    assert relay.ticket.offences == ["message_rate exceeded (5/s)"] and relay.rate_closes == 1


def test_upstream_messages_are_never_rate_limited():
    relay, client, upstream, _ = limited("message_rate = 1/h\nbyte_rate = 1/h")
    for _ in range(10):
        relay.message(UPSTREAM, b"news", False)
    assert len(client.sent) == 10 and client.closes == []


def test_drop_mode_keeps_the_connection_and_lets_the_rate_through():
    """on_rate_exceeded = drop: messages over the rate are withheld, the connection stays, and the
    bucket refills (dropped messages take no tokens)."""
    relay, client, upstream, clock = limited("message_rate = 2/s\non_rate_exceeded = drop")
    for _ in range(10):
        relay.message(CLIENT, b"x", False)
    assert len(upstream.sent) == 2 and client.closes == [] and relay.rate_drops == 8
    assert relay.dropped[CLIENT] == 8 and relay.ticket.offences == []
    clock.advance(0.5)
    relay.message(CLIENT, b"y", False)
    relay.message(CLIENT, b"z", False)
    assert upstream.sent[-1] == (b"y", False) and relay.rate_drops == 9


def test_byte_rate_burst_and_a_message_bigger_than_the_burst():
    """``1KiB/s``: bytes up to the burst pass; a message bigger than the whole burst passes only a
    full bucket and leaves it in debt until it is paid back."""
    relay, client, upstream, clock = limited("byte_rate = 1KiB/s\non_rate_exceeded = drop")
    relay.message(CLIENT, b"a" * 1000, False)
    relay.message(CLIENT, b"b" * 24, False)
    relay.message(CLIENT, b"c", False)
    assert [p[:1] for p, _ in upstream.sent] == [b"a", b"b"]
    clock.advance(10)  # full again
    relay.message(CLIENT, b"d" * 4096, False)
    assert upstream.sent[-1][0][:1] == b"d"
    clock.advance(2.9)  # 3 KiB of debt left to pay
    relay.message(CLIENT, b"e", False)
    clock.advance(0.2)
    relay.message(CLIENT, b"f", False)
    assert [p[:1] for p, _ in upstream.sent] == [b"a", b"b", b"d", b"f"]


def test_max_lifetime_closes_both_hops_1001():
    relay, client, upstream, clock = limited("", Timeouts(close_handshake=1.0, max_lifetime=30))
    clock.advance(29)
    relay.message(CLIENT, b"still here", False)
    assert client.closes == []
    clock.advance(1)
    assert client.closes == [(1001, "max lifetime reached")] == upstream.closes
    assert (relay.closed_by, relay.close_code) == ("wsfw", 1001)
    relay.lost(CLIENT, True, 1001, None)
    relay.lost(UPSTREAM, True, 1001, None)
    assert relay.finished and not clock.getDelayedCalls()


def test_client_cap_failures_are_offences():
    """A frame flood (1008) or an oversized / decompression-bomb message (1009) from the client counts
    towards a ban; an upstream's failure or a client's protocol error (1002) does not."""
    relay, *_ = limited("")
    relay.hop_failed(UPSTREAM, 1009, "too big")
    relay.hop_failed(CLIENT, 1002, "protocol error")
    relay.hop_failed(CLIENT, 1009, "message exceeds max_message_bytes")
    assert relay.ticket.offences == ["message exceeds max_message_bytes"]
