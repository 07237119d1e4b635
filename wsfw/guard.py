"""Abuse limits per client address: connection caps, the handshake rate, and auto-ban.

A relay that inspects every message is an expensive thing to point a flood at,
so wsfw refuses abusive clients before anything is dialled or decoded. The
public ``Dispatch`` asks the :class:`Guard` about every request, with the
address ``wsfw.forwarding.client_address`` derives (the peer, or behind a
trusted proxy the client it names):

* a **banned** address is refused 403, on every route and for plain HTTP too;
* a WebSocket upgrade beyond ``max_connections_total`` gets 503 (wsfw is full:
  the same answer as a route's ``max_connections``), beyond
  ``max_connections_per_ip`` 429, and beyond ``handshake_rate_per_ip`` 429 with
  ``Retry-After`` (when the next handshake would be admitted).

**Auto-ban**: ``ban_after`` disruptive decisions against one address within
``ban_window`` seconds refuse it for ``ban_time`` seconds. What counts is what
wsfw actually enforced against a client: blocks of its messages and polling
requests (from the audit stream: never detect-mode matches, never blocks of
what the *upstream* sent) and wsfw's own closes for its abuse (message or byte
rate, frame floods, oversized or decompression-bomb messages). Handshake
refusals never count: an Origin or Host refusal is what a cross-site
WebSocket hijacking attempt gets, and that request comes from the victim's
browser, whose address must not be banned for it. Neither do the guard's own
429s: they already cost the client nothing but a refusal. Addresses in
``trusted_proxies`` are never limited per address nor banned (they only
appear as the client when a proxy forwards without ``X-Forwarded-For``, and
banning the load balancer would refuse everyone). Neither is a client whose
address is no IP address (a ``unix:`` listener's peer, a proxy's
``Forwarded: for=unknown``): all such clients would share one key, and one of
them would get the others refused. They count towards the global cap only.
Addresses are keyed in canonical form, an IPv4-mapped IPv6 address as its
IPv4 one, so spelling an address differently is no way around a limit.

Memory stays bounded under address churn (a scanner spraying source
addresses, a botnet): an address costs nothing until it does something;
every table is ordered by last use and pruned from its old end as entries
become meaningless (a handshake bucket that has refilled, an offence log
older than the window, an expired ban), and each is capped at
``max_addresses`` entries, evicting the least recently used. Per-address
connection counts need no cap: each is a live connection. The handshake
bucket is GCRA, one float per address.

All of this is per process: with ``[wsfw] workers`` above 1 each worker keeps
its own counts and bans. ``wsfw.interfaces.IClientGuard`` is the seam where a
shared implementation plugs in.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import math
from array import array

import attrs
from zope.interface import implementer

from wsfw.interfaces import IAdmissionTicket, IClientGuard
from wsfw.logs import logger

log = logger("wsfw.guard")

#: Refusal reasons, a fixed vocabulary (metrics labels, log fields).
BANNED, TOTAL, PER_IP, HANDSHAKE_RATE = "banned", "total", "per_ip", "handshake_rate"
REFUSALS = (BANNED, TOTAL, PER_IP, HANDSHAKE_RATE)

#: What a refused client reads, by IClientGuard refusal reason: no numbers, no rule names.
REFUSAL_TEXT = {
    "banned": "this address is temporarily banned",
    "total": "too many WebSocket connections: try again later",
    "per_ip": "too many WebSocket connections from this address",
    "handshake_rate": "too many WebSocket handshakes from this address",
}
#: Entries each per-address table may hold (~100-200 bytes each) before the least recently used go.
MAX_ADDRESSES = 100_000
#: Audit event kinds whose enforced blocks count towards a ban: a WebSocket message, a polling request.
OFFENCE_KINDS = frozenset({"message", "http"})


@attrs.frozen
class Admission:
    """The guard's answer about one request: admitted (``status`` None), or refused with ``status``."""

    status: int | None = None
    reason: str = ""  # one of REFUSALS when refused
    message: str = ""
    #: Seconds after which the same request would be admitted (``Retry-After``), when known.
    retry_after: int | None = None
    #: An admitted WebSocket upgrade's IAdmissionTicket (plain HTTP requests hold no slot).
    ticket: object = None

    @property
    def admitted(self) -> bool:
        return self.status is None


ADMITTED = Admission()


@implementer(IAdmissionTicket)
class Ticket:
    """One admitted WebSocket connection's slot in the guard's counts; released exactly once."""

    __slots__ = ("guard", "address", "conn", "released", "claimed")

    def __init__(self, guard: "Guard", address: str | None):
        self.guard = guard
        self.address = address
        self.conn: str | None = None
        self.released = False
        self.claimed = False  # taken over by the protocol that serves the connection (see handing_over)

    def bind(self, conn_id: str) -> None:
        if not self.released:
            self.conn = conn_id
            self.guard._conns[conn_id] = self.address

    def offence(self, reason: str) -> bool:
        return self.guard.offence(self.address, reason) if self.address is not None else False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.guard._release(self)


# -- handing a ticket from the Dispatch to the protocol ----------------------------------
#
# Autobahn's WebSocketResource.render builds the frontend protocol and connects it to
# the request's transport synchronously, without telling it anything about the request.
# The Dispatch therefore parks the ticket here for the duration of that call, and the
# protocol's connectionMade takes it: on the reactor thread nothing can run in between.
# From then on the protocol's connectionLost (called exactly once) releases it; if no
# protocol took it (Autobahn refused the request before building one), the Dispatch does.

_parked: list = []


@contextlib.contextmanager
def handing_over(ticket):
    """Park ``ticket`` while the WebSocket resource renders; release it if no protocol claimed it."""
    _parked.append(ticket)
    try:
        yield ticket
    finally:
        _parked.remove(ticket)
        if ticket is not None and not ticket.claimed:
            ticket.release()


def claim_parked():
    """The ticket the Dispatch parked for the protocol being connected now, or None."""
    if not _parked or _parked[-1] is None or _parked[-1].claimed:
        return None
    ticket = _parked[-1]
    ticket.claimed = True
    return ticket


def canonical(address) -> str | None:
    """The key an address is limited and banned under: its canonical text (an IPv4-mapped IPv6
    address as IPv4), or None when it is no IP address (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


class _Throttle:
    """At most one log line per key and interval, saying how many were folded into it.

    A flood of refusals (the very thing the guard is for) must not become a flood
    of log lines; the keys are the fixed refusal reasons, so this stays tiny.
    """

    def __init__(self, clock, interval: float = 1.0):
        self.clock = clock
        self.interval = interval
        self.state: dict[str, list] = {}  # key -> [time of the last line, lines folded since]

    def __call__(self, key: str, format: str, **fields) -> None:
        now = self.clock.seconds()
        state = self.state.get(key)
        if state is None or now - state[0] >= self.interval:
            log.info(format, suppressed=state[1] if state else 0, **fields)
            self.state[key] = [now, 0]
        else:
            state[1] += 1


@implementer(IClientGuard)
class Guard:
    """Per-address connection counts, handshake buckets, offence logs and bans, in this process."""

    def __init__(self, config, clock, *, max_addresses: int = MAX_ADDRESSES):
        self.clock = clock
        self.max_addresses = max_addresses
        #: Open (admitted, not yet released) WebSocket connections per address, and in all.
        self.connections: dict[str, int] = {}
        self.total = 0
        #: Handshake GCRA: the theoretical arrival time of each address's next handshake.
        self._tat: collections.OrderedDict[str, float] = collections.OrderedDict()
        #: Times of each address's last ``ban_after`` offences, oldest first.
        self._offences: collections.OrderedDict[str, array] = collections.OrderedDict()
        #: Banned addresses and when their ban ends, in the order they were banned.
        self._bans: collections.OrderedDict[str, float] = collections.OrderedDict()
        #: Connection id -> address of the admitted connections, for audit events that name a connection.
        self._conns: dict[str, str] = {}
        #: Plain counters read at scrape time (wsfw.metrics): refusals by reason, bans issued.
        self.refusals = dict.fromkeys(REFUSALS, 0)
        self.bans_total = 0
        self._say = _Throttle(clock)
        self._evicted_ban_logged = False
        self.limits = None
        self.configure(config)

    # -- IClientGuard --------------------------------------------------------------------

    def configure(self, config) -> None:
        old = self.limits
        limits = self.limits = config.limits
        self.settings = config.settings
        self._check_trusted = bool(config.settings.trusted_proxies)
        rate = limits.handshake_rate_per_ip
        if rate is not None:
            self._interval = 1.0 / rate.per_second
            # plus a nanosecond, so float rounding never refuses the burst's last handshake
            self._tolerance = (rate.burst - 1.0) * self._interval + 1e-9
        if old is not None and old.handshake_rate_per_ip != rate:
            self._tat.clear()  # the buckets were filled at another rate
        if old is not None and (old.ban_after, old.ban_window) != (limits.ban_after, limits.ban_window):
            self._offences.clear()  # counted under another rule
        if not limits.ban_after and self._bans:
            log.info("auto-ban is off: lifting {n} ban(s)", n=len(self._bans), event="unban")
            self._bans.clear()

    def admit(self, address: str, websocket: bool) -> Admission:
        now = self.clock.seconds()
        self._prune(now)
        address = canonical(address)
        bans = self._bans
        if bans and address is not None:
            until = bans.get(address)
            if until is not None:
                if until > now:
                    return self._refuse(BANNED, 403, address, f"address banned for another {until - now:.0f}s")
                del bans[address]
                log.info("ban on {address} expired", address=address, event="unban")
        if not websocket:
            return ADMITTED
        limits = self.limits
        cap = limits.max_connections_total
        if cap and self.total >= cap:
            return self._refuse(TOTAL, 503, address, f"{self.total} WebSocket connections open (max_connections_total)")
        if address is not None and not (self._check_trusted and self.settings.is_trusted_proxy(address)):
            per_ip = limits.max_connections_per_ip
            if per_ip and self.connections.get(address, 0) >= per_ip:
                return self._refuse(PER_IP, 429, address, f"{per_ip} WebSocket connections open from this address "
                                    "(max_connections_per_ip)")
            if limits.handshake_rate_per_ip is not None:
                wait = self._take_handshake(address, now)
                if wait:
                    return self._refuse(HANDSHAKE_RATE, 429, address, f"more handshakes than "
                                        f"{limits.handshake_rate_per_ip.text} (handshake_rate_per_ip)",
                                        retry_after=max(1, math.ceil(wait)))
        if address is not None:
            self.connections[address] = self.connections.get(address, 0) + 1
        self.total += 1
        return Admission(ticket=self.ticket(address))

    def ticket(self, address: str | None) -> Ticket:
        """The ticket of a connection admitted for ``address`` (a subclass keeping its counts
        elsewhere as well returns its own kind)."""
        return Ticket(self, address)

    def offence(self, address: str, reason: str) -> bool:
        limits = self.limits
        if not limits.ban_after:
            return False
        address = canonical(address)
        if address is None:
            return False
        if self._check_trusted and self.settings.is_trusted_proxy(address):
            log.debug("not counting an offence against trusted proxy {address}: {reason}", address=address,
                      reason=reason)
            return False
        now = self.clock.seconds()
        if self._bans.get(address, 0.0) > now:
            return False  # already banned (its open connections may still be finishing)
        stamps = self._offences.get(address)
        if stamps is None:
            stamps = self._offences[address] = array("d")
            self._cap(self._offences)
        else:
            self._offences.move_to_end(address)
        stamps.append(now)
        if len(stamps) > limits.ban_after:
            del stamps[0]
        if len(stamps) < limits.ban_after or now - stamps[0] > limits.ban_window:
            return False
        del self._offences[address]
        self._bans[address] = now + limits.ban_time
        self.bans_total += 1
        log.warn("banning {address} for {ban_time:g}s: {n} disruptive decisions within {window:g}s, the last: "
                 "{reason}", address=address, ban_time=limits.ban_time, n=limits.ban_after,
                 window=limits.ban_window, reason=reason, event="ban")
        if len(self._bans) > self.max_addresses:
            lifted, _ = self._bans.popitem(last=False)
            if not self._evicted_ban_logged:  # once: under a wide attack this would repeat for every ban
                self._evicted_ban_logged = True
                log.warn("ban table full ({n} addresses): lifting the oldest bans early, first {address}",
                         n=self.max_addresses, address=lifted, event="ban_evicted")
        return True

    def audit_event(self, event: dict) -> None:
        try:
            if not event.get("enforced") or event.get("action") != "block":
                return  # detect mode, logs, drops: nothing was done to the client
            if event.get("kind") not in OFFENCE_KINDS or event.get("direction") != "client":
                return  # handshake refusals (see the module docstring); what the upstream sent
            address = self._event_address(event)
            if address is None:
                log.debug("audit event without a client address to count against: {conn}", conn=event.get("conn"))
                return
            rules = event.get("rule_ids") or ()
            self.offence(address, f"{event.get('inspector') or 'policy'} block ({', '.join(map(str, rules[:3]))})")
        except Exception:
            log.failure("counting an audit event towards a ban failed")

    def banned_count(self) -> int:
        now = self.clock.seconds()
        return sum(1 for until in self._bans.values() if until > now)

    # -- what the rest of the guard needs ---------------------------------------------------

    def is_banned(self, address: str) -> bool:
        address = canonical(address)
        return address is not None and self._bans.get(address, 0.0) > self.clock.seconds()

    def _refuse(self, reason: str, status: int, address: str, message: str,
                retry_after: int | None = None) -> Admission:
        self.refusals[reason] += 1
        self._say(reason, "refused {address} with {status}: {message}", address=address, status=status,
                  message=message, reason=reason, event="refused")
        return Admission(status=status, reason=reason, message=message, retry_after=retry_after)

    def _take_handshake(self, address: str, now: float) -> float:
        """GCRA: 0 when a handshake may start now (and take its place), else the seconds to wait."""
        tat = self._tat.get(address)
        if tat is None or tat < now:
            tat = now
        if tat - now > self._tolerance:
            return tat - self._tolerance - now
        if address in self._tat:
            self._tat.move_to_end(address)
        self._tat[address] = tat + self._interval
        self._cap(self._tat)
        return 0.0

    def _release(self, ticket: Ticket) -> None:
        if ticket.address is not None:
            count = self.connections.get(ticket.address, 0) - 1
            if count > 0:
                self.connections[ticket.address] = count
            else:
                self.connections.pop(ticket.address, None)
        self.total = max(self.total - 1, 0)
        if ticket.conn is not None:
            self._conns.pop(ticket.conn, None)

    def _event_address(self, event: dict) -> str | None:
        """The client an audit event is about: a WebSocket connection's admitted address, else the
        event's peer (a polling request's client address, or the TCP peer of an unknown connection)."""
        address = event.get("client")
        if address:
            return str(address)
        conn = event.get("conn")
        if conn and conn in self._conns:
            return self._conns[conn]  # None for a client without an IP address: not counted
        peer = str(event.get("peer") or "")
        if event.get("kind") == "message" and ":" in peer:
            peer = peer.rpartition(":")[0]  # "ip:port" as the relay writes it
        return peer.strip("[]") or None

    def _cap(self, table: collections.OrderedDict) -> None:
        while len(table) > self.max_addresses:
            table.popitem(last=False)

    def _prune(self, now: float) -> None:
        """Drop what no longer means anything from the old end of each table (amortised O(1))."""
        bans = self._bans
        while bans:
            address, until = next(iter(bans.items()))
            if until > now:
                break
            bans.popitem(last=False)
            log.info("ban on {address} expired", address=address, event="unban")
        tat = self._tat
        while tat and next(iter(tat.values())) <= now:  # refilled: the same as never seen
            tat.popitem(last=False)
        offences = self._offences
        if offences:
            horizon = now - self.limits.ban_window
            while offences and next(iter(offences.values()))[-1] < horizon:
                offences.popitem(last=False)

    def __len__(self) -> int:
        """Entries held for addresses, over every table (what the memory bound is about)."""
        return len(self.connections) + len(self._tat) + len(self._offences) + len(self._bans)
