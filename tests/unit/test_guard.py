"""wsfw.guard: admission decisions, auto-ban and its expiry, bounded memory, on a fake clock."""

from __future__ import annotations

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from wsfw import config_ini
from wsfw.guard import Guard, claim_parked, handing_over
from wsfw.interfaces import IAdmissionTicket, IClientGuard

BASE = "[listen:a]\nendpoint = tcp:0\n[route:r]\nupstream = ws://127.0.0.1:9\n"


def config(limits: str = "", wsfw: str = ""):
    return config_ini.load("t.ini", BASE + f"[limits]\n{limits}\n" + (f"[wsfw]\n{wsfw}\n" if wsfw else ""))


def guard(limits: str = "", wsfw: str = "", **kwargs) -> tuple[Guard, task.Clock]:
    clock = task.Clock()
    clock.advance(1000)  # a realistic, non-zero "now"
    return Guard(config(limits, wsfw), clock, **kwargs), clock


def block(conn=None, peer="203.0.113.9:4000", **fields) -> dict:
    """An audit event as wsfw.inspection.audit writes it for an enforced block of a client message."""
    event = dict(kind="message", conn=conn, peer=peer, direction="client", action="block", enforced=True,
                 inspector="detect", rule_ids=["xss-libinjection"])
    event.update(fields)
    return event


def test_provides_its_interfaces():
    g, _ = guard("max_connections_per_ip = 1")
    verifyObject(IClientGuard, g)
    verifyObject(IAdmissionTicket, g.admit("192.0.2.1", websocket=True).ticket)


def test_everything_off_by_default_admits_everything():
    """With no abuse limit configured, every request is admitted, and nothing is remembered but live slots."""
    g, _ = guard()
    tickets = [g.admit("192.0.2.1", websocket=True).ticket for _ in range(500)]
    assert all(t is not None for t in tickets) and g.total == 500
    for _ in range(50):
        g.audit_event(block(peer="192.0.2.1:1"))
    assert g.admit("192.0.2.1", websocket=False).admitted and g.banned_count() == 0
    for t in tickets:
        t.release()
    assert len(g) == 0 and g.total == 0


def test_per_ip_cap_429_and_slots_come_back():
    """The N+1th concurrent connection of one address gets 429 (no Retry-After: a slot frees when one
    closes); another address still gets in; a released slot is reusable; release is idempotent."""
    g, _ = guard("max_connections_per_ip = 2")
    a = [g.admit("192.0.2.1", True) for _ in range(2)]
    assert all(x.admitted for x in a)
    refused = g.admit("192.0.2.1", True)
    assert (refused.status, refused.reason, refused.retry_after, refused.ticket) == (429, "per_ip", None, None)
    assert g.admit("192.0.2.2", True).admitted
    assert g.admit("192.0.2.1", websocket=False).admitted  # plain HTTP holds no slot
    a[0].ticket.release()
    a[0].ticket.release()
    assert g.connections["192.0.2.1"] == 1
    assert g.admit("192.0.2.1", True).admitted
    assert g.refusals["per_ip"] == 1


def test_global_cap_503_whoever_asks():
    g, _ = guard("max_connections_total = 3")
    tickets = [g.admit(f"192.0.2.{i}", True).ticket for i in range(3)]
    refused = g.admit("198.51.100.1", True)
    assert (refused.status, refused.reason) == (503, "total")
    tickets[1].release()
    assert g.admit("198.51.100.1", True).admitted
    assert g.refusals["total"] == 1


def test_handshake_rate_bucket_burst_refill_and_retry_after():
    """``3/s``: a burst of 3, then one every third of a second; a refused handshake takes no token
    and says when to come back."""
    g, clock = guard("handshake_rate_per_ip = 3/s")
    assert [g.admit("192.0.2.1", True).admitted for _ in range(3)] == [True] * 3
    refused = g.admit("192.0.2.1", True)
    assert (refused.status, refused.reason, refused.retry_after) == (429, "handshake_rate", 1)
    assert g.admit("192.0.2.2", True).admitted  # buckets are per address
    clock.advance(0.2)
    assert not g.admit("192.0.2.1", True).admitted
    clock.advance(0.14)  # a third of a second since the bucket was emptied: one token back
    assert g.admit("192.0.2.1", True).admitted
    assert not g.admit("192.0.2.1", True).admitted
    clock.advance(10)
    assert [g.admit("192.0.2.1", True).admitted for _ in range(4)] == [True, True, True, False]


def test_rate_per_minute_burst():
    g, clock = guard("handshake_rate_per_ip = 600/m")
    assert sum(g.admit("192.0.2.1", True).admitted for _ in range(700)) == 600
    clock.advance(1)
    assert sum(g.admit("192.0.2.1", True).admitted for _ in range(20)) == 10


def test_ban_after_n_offences_within_the_window_then_expiry():
    """3 enforced blocks within 10 s ban the address for 5 s: every request (HTTP too) gets 403;
    then it is admitted again, and its slate is clean."""
    g, clock = guard("ban_after = 3\nban_window = 10s\nban_time = 5s")
    assert g.offence("192.0.2.1", "x") is False
    clock.advance(4)
    assert g.offence("192.0.2.1", "x") is False
    clock.advance(4)
    assert g.offence("192.0.2.1", "x") is True
    for websocket in (False, True):
        refused = g.admit("192.0.2.1", websocket)
        assert (refused.status, refused.reason) == (403, "banned")
    assert g.admit("192.0.2.2", True).admitted
    assert g.banned_count() == 1 and g.bans_total == 1 and g.refusals["banned"] == 2
    clock.advance(4.9)
    assert not g.admit("192.0.2.1", False).admitted
    clock.advance(0.2)
    assert g.admit("192.0.2.1", False).admitted and g.banned_count() == 0
    assert g.offence("192.0.2.1", "x") is False  # the offences before the ban were forgotten with it


def test_offences_spread_wider_than_the_window_never_ban():
    g, clock = guard("ban_after = 3\nban_window = 10s\nban_time = 60s")
    for _ in range(20):
        assert g.offence("192.0.2.1", "x") is False
        clock.advance(5.1)
    assert g.admit("192.0.2.1", False).admitted


def test_ban_one_offence():
    g, _ = guard("ban_after = 1\nban_time = 1m")
    assert g.offence("192.0.2.1", "x") is True
    assert g.admit("192.0.2.1", False).status == 403


def test_audit_events_that_count():
    """Only enforced blocks of what a client sent count; detect mode, logs, drops, blocks of what
    the upstream sent and handshake refusals (a CSWSH victim's browser) do not."""
    g, _ = guard("ban_after = 2\nban_time = 1m")
    ignored = [
        block(enforced=False, action="detect"),
        block(action="log", enforced=False),
        block(action="drop"),
        block(direction="upstream"),
        block(kind="handshake", peer="203.0.113.9", inspector="handshake", rule_ids=["origin"]),
        block(kind="inspector_error"),
        {"kind": "message"},
    ]
    for event in ignored * 3:
        g.audit_event(event)
    assert g.banned_count() == 0 and len(g._offences) == 0
    g.audit_event(block())
    g.audit_event(block(kind="http", peer="203.0.113.9"))
    assert g.admit("203.0.113.9", False).status == 403


def test_audit_event_of_a_connection_counts_against_its_admitted_address():
    """Behind a trusted proxy the audit's peer is the proxy: the connection id leads to the
    address the guard admitted (the one X-Forwarded-For named)."""
    g, _ = guard("ban_after = 2\nban_time = 1m", wsfw="trusted_proxies = 127.0.0.1")
    ticket = g.admit("198.51.100.7", True).ticket
    ticket.bind("c-1")
    g.audit_event(block(conn="c-1", peer="127.0.0.1:5555"))
    g.audit_event(block(conn="c-1", peer="127.0.0.1:5555"))
    assert g.is_banned("198.51.100.7") and not g.is_banned("127.0.0.1")
    ticket.release()
    assert "c-1" not in g._conns


def test_trusted_proxies_are_never_limited_per_address_nor_banned():
    """A proxy shows up as the client only when it forwards without X-Forwarded-For; limiting or
    banning it would refuse everyone behind it. The global cap still counts it."""
    g, _ = guard("max_connections_per_ip = 1\nhandshake_rate_per_ip = 1/m\nban_after = 1\nmax_connections_total = 5",
                 wsfw="trusted_proxies = 10.0.0.0/8")
    assert all(g.admit("10.1.1.1", True).admitted for _ in range(5))
    assert g.admit("10.1.1.1", True).status == 503
    assert g.offence("10.1.1.1", "x") is False
    g.audit_event(block(kind="http", peer="10.1.1.1"))
    assert g.banned_count() == 0


def test_memory_stays_bounded_under_address_churn():
    """A scanner spraying addresses: every table is capped, and what is meaningless is pruned."""
    g, clock = guard("handshake_rate_per_ip = 5/s\nban_after = 2\nban_window = 10s\nban_time = 30s",
                     max_addresses=100)
    for i in range(20_000):
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        admission = g.admit(address, True)
        admission.ticket.release()
        g.offence(address, "x")
        if i % 3 == 0:
            g.offence(address, "x")  # banned
        clock.advance(0.0001)
    assert len(g._tat) <= 100 and len(g._offences) <= 100 and len(g._bans) <= 100
    assert g.connections == {} and g._conns == {}
    clock.advance(60)  # every bucket full, every offence log stale, every ban expired
    g.admit("192.0.2.1", False)
    assert len(g) == 0


def test_configure_applies_to_new_connections_and_keeps_counts():
    """A reload: the open connections keep their slots and count against the new caps; turning
    auto-ban off lifts the bans; a new handshake rate starts with full buckets."""
    g, _ = guard("max_connections_per_ip = 5\nhandshake_rate_per_ip = 2/m\nban_after = 1\nban_time = 1h")
    tickets = [g.admit("192.0.2.1", True).ticket for _ in range(2)]
    assert not g.admit("192.0.2.1", True).admitted  # rate
    g.offence("192.0.2.2", "x")
    g.configure(config("max_connections_per_ip = 2\nhandshake_rate_per_ip = 100/s"))
    assert g.admit("192.0.2.1", True).reason == "per_ip"
    tickets[0].release()
    assert g.admit("192.0.2.1", True).admitted
    assert g.admit("192.0.2.2", False).admitted and g.banned_count() == 0


def test_handing_over_releases_an_unclaimed_ticket():
    """The Dispatch parks an admitted upgrade's ticket while the WebSocket resource renders: the
    protocol built for it claims it (and releases it when its connection is lost); a ticket
    nothing claimed (Autobahn refused before building a protocol) is released on the spot."""
    g, _ = guard()
    claimed = g.admit("192.0.2.1", True).ticket
    with handing_over(claimed):
        assert claim_parked() is claimed
        assert claim_parked() is None  # one protocol per ticket
    assert g.total == 1 and not claimed.released
    claimed.release()
    unclaimed = g.admit("192.0.2.1", True).ticket
    with pytest.raises(RuntimeError):
        with handing_over(unclaimed):
            raise RuntimeError("render failed")
    assert unclaimed.released and g.total == 0 and g.connections == {}
    assert claim_parked() is None


def test_addresses_are_canonical():
    """Spelling an address differently (IPv6 forms, IPv4-mapped IPv6 on a dual-stack listener)
    is no way around a limit or a ban."""
    g, _ = guard("max_connections_per_ip = 2\nban_after = 1\nban_time = 1m")
    assert g.admit("2001:db8::1", True).admitted
    assert g.admit("2001:0db8:0000::0001", True).admitted
    assert g.admit("2001:DB8::1", True).reason == "per_ip"
    assert g.admit("::ffff:192.0.2.1", True).ticket.address == "192.0.2.1"
    g.offence("::ffff:198.51.100.1", "x")
    assert g.admit("198.51.100.1", False).status == 403


def test_clients_without_an_ip_address_share_no_limit_and_are_never_banned():
    """Behind a unix: listener every peer looks the same: limiting or banning that would let one
    client get every other one refused. They count towards the global cap only."""
    g, _ = guard("max_connections_per_ip = 1\nmax_connections_total = 3\nhandshake_rate_per_ip = 1/h\nban_after = 1")
    unix = "UNIXAddress('/run/wsfw.sock')"
    tickets = [g.admit(unix, True).ticket for _ in range(3)]
    assert all(t is not None and t.address is None for t in tickets)
    assert g.admit(unix, True).reason == "total"
    assert tickets[0].offence("x") is False and g.offence(unix, "x") is False
    tickets[0].bind("c-9")
    g.audit_event(block(conn="c-9", peer=unix))
    assert g.banned_count() == 0 and g.connections == {}
    for t in tickets:
        t.release()
    assert g.total == 0 and g._conns == {}
