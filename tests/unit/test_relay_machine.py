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
