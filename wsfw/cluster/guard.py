"""Bans, per-address connection counts and handshake rates shared by a fleet through Redis.

:class:`FleetGuard` is the in-process :class:`wsfw.guard.Guard` (every decision
it makes stays, and is all there is while Redis is away) plus the fleet's view:

- **Bans.** An offence is counted locally and in Redis (a sorted set of
  offence times per address, trimmed to ``ban_window``), atomically in one
  script: ``ban_after`` offences anywhere in the fleet ban the address
  fleet-wide. Every node reads the ban set every ``BAN_SYNC`` seconds (0.5 s),
  so a ban issued on one node is enforced by all within one second, with its
  expiry; the check itself is the local table's, with no Redis round trip.
- **Per-address connections and the handshake rate** are reserved in Redis
  once per WebSocket handshake, by one script that checks the fleet's
  count for the address against ``max_connections_per_ip`` and takes a token
  from the address's fleet-wide GCRA bucket. That round trip happens while
  wsfw dials the upstream anyway (the client's handshake is held open for
  it), so it adds no latency the client would not pay, and the cap holds
  exactly, with no consistency window. Messages never touch Redis.
- **Node deaths.** Counts live in one hash per address, one field per node
  process (``node/incarnation``); each process keeps a heartbeat key with a
  ``NODE_TTL`` (10 s) expiry. The reservation script ignores (and deletes)
  fields whose heartbeat is gone, so a node killed with open connections
  leaves no phantom counts beyond the TTL.
- **Redis down.** Reservations and offences fall back to the local decision
  (the node is ``degraded``); when Redis returns, the node rewrites its own
  counts for every address it holds and republishes the bans it issued.
"""

from __future__ import annotations

import os
import secrets

from twisted.application.service import Service
from twisted.internet import defer, task
from zope.interface import implementer

from wsfw.cluster.link import RedisLink, RedisUnavailable
from wsfw.guard import BANNED, HANDSHAKE_RATE, PER_IP, Guard, Ticket
from wsfw.interfaces import IClientGuard
from wsfw.logs import logger

log = logger("wsfw.cluster")

BAN_SYNC = 0.5
NODE_TTL = 10
HEARTBEAT = 1.0
#: How long an address's count hash lives without a reservation (a backstop; fields are repaired anyway).
COUNT_TTL = 86_400

#: KEYS: conns:ADDR, ban:ADDR, hs:ADDR. ARGV: this process's field, the heartbeat key prefix,
#: per-address cap (0: none), GCRA interval and tolerance in ms (0: no rate).
#: Returns {1} when reserved, else {0, reason, retry-after ms}.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ban = redis.call('PTTL', KEYS[2])
if ban > 0 then return {0, 'banned', ban} end
local cap = tonumber(ARGV[3])
if cap > 0 then
  local fields = redis.call('HGETALL', KEYS[1])
  local total = 0
  for i = 1, #fields, 2 do
    if redis.call('EXISTS', ARGV[2] .. fields[i]) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], fields[i])
    end
  end
  if total >= cap then return {0, 'per_ip', 0} end
end
local interval = tonumber(ARGV[4])
if interval > 0 then
  local tolerance = tonumber(ARGV[5])
  local tat = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tat < now then tat = now end
  if tat - now > tolerance then return {0, 'handshake_rate', tat - tolerance - now} end
  redis.call('SET', KEYS[3], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], """ + str(COUNT_TTL) + """)
return {1}
"""

#: KEYS: strikes:ADDR, ban:ADDR, bans. ARGV: address, ban_after, window ms, ban time ms, a unique member.
#: Returns the ban's end (ms since the epoch, Redis time) when this offence banned the address, else 0.
OFFENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then return 0 end
local untl = now + tonumber(ARGV[4])
redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], untl, ARGV[1])
redis.call('DEL', KEYS[1])
return untl
"""

#: KEYS: bans. Returns {now ms, addr1, until1, addr2, until2...} of the bans in force (expired ones removed).
BANS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {tostring(now)}
local bans = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
for i = 1, #bans do out[#out + 1] = bans[i] end
return out
"""

#: KEYS: ban:ADDR, bans. ARGV: address, remaining ms. A ban issued while Redis was away, published.
PUBLISH_BAN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""


class FleetTicket(Ticket):
    """A ticket whose slot is also reserved in the fleet's counts (``confirm``)."""

    __slots__ = ("fleet",)

    def __init__(self, guard: "FleetGuard", address: str):
        super().__init__(guard, address)
        self.fleet = False  # reserved in Redis: its release must give the fleet slot back too

    def confirm(self) -> defer.Deferred:
        return self.guard._reserve(self)


@implementer(IClientGuard)
class FleetGuard(Guard, Service):
    """The in-process guard, with the fleet's bans, counts and handshake buckets (module docstring).
    As a service it runs the heartbeat and ban-sync timers."""

    name = "cluster-guard"

    def __init__(self, config, clock, link: RedisLink, **kwargs):
        Guard.__init__(self, config, clock, **kwargs)
        self.link = link
        self.field = f"{link.node}/{os.getpid()}.{secrets.token_hex(4)}"
        self.heartbeat_prefix = link.key("node") + ":"
        self.heartbeat_key = self.heartbeat_prefix + self.field
        self._held: dict[str, int] = {}  # what this process believes its field says in Redis, per address
        self._dirty = False  # a release could not reach Redis: rewrite our counts when it returns
        self._loops: list[task.LoopingCall] = []
        link.on_up(self._reconcile)

    def ticket(self, address: str) -> FleetTicket:
        return FleetTicket(self, address)

    # -- timers ----------------------------------------------------------------------

    def startService(self):
        Service.startService(self)
        for interval, call in ((HEARTBEAT, self._heartbeat), (BAN_SYNC, self._sync_bans)):
            loop = task.LoopingCall(call)
            loop.clock = self.clock
            loop.start(interval, now=True).addErrback(lambda f: log.failure("cluster timer", f))
            self._loops.append(loop)

    def stopService(self):
        Service.stopService(self)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        # A clean stop gives the fleet its slots back at once rather than after NODE_TTL.
        return self.link.command("DEL", self.heartbeat_key).addErrback(lambda f: None)

    def _heartbeat(self):
        if self._dirty and self.link.up:
            self._reconcile()  # a release that could not reach Redis: rewrite our counts
            return None
        return self.link.command("SET", self.heartbeat_key, "1", "EX", NODE_TTL).addErrback(
            self._quiet)

    # -- reservations ------------------------------------------------------------------

    def _reserve(self, ticket: FleetTicket) -> defer.Deferred:
        """None when the fleet admits the connection (or Redis is away: the local decision stands),
        else an ``Admission`` refusing it."""
        if ticket.released or ticket.address is None:  # no IP address (a unix: peer): not limited per address
            return defer.succeed(None)
        limits = self.limits
        rate = limits.handshake_rate_per_ip
        trusted = self._check_trusted and self.settings.is_trusted_proxy(ticket.address)
        cap = 0 if trusted else limits.max_connections_per_ip
        interval = tolerance = 0
        if rate is not None and not trusted:
            interval = max(1, round(self._interval * 1000))
            tolerance = round(self._tolerance * 1000)
        address = ticket.address
        d = self.link.script(RESERVE, [self.link.key("conns", address), self.link.key("ban", address),
                                       self.link.key("hs", address)],
                             [self.field, self.heartbeat_prefix, cap, interval, tolerance])

        def decided(reply):
            if int(reply[0]) == 1:
                if ticket.released:  # the client left while Redis answered: give the slot back
                    self._fleet_release(address)
                else:
                    ticket.fleet = True
                    self._held[address] = self._held.get(address, 0) + 1
                return None
            reason, wait_ms = str(reply[1]), int(float(reply[2]))
            if reason == BANNED:
                self._bans[address] = self.clock.seconds() + wait_ms / 1000.0
                return self._refuse(BANNED, 403, address, f"address banned by the fleet for another {wait_ms // 1000}s")
            if reason == PER_IP:
                return self._refuse(PER_IP, 429, address, f"{limits.max_connections_per_ip} WebSocket connections "
                                    "open from this address across the fleet (max_connections_per_ip)")
            return self._refuse(HANDSHAKE_RATE, 429, address, f"more handshakes than {rate.text} across the fleet "
                                "(handshake_rate_per_ip)", retry_after=max(1, -(-wait_ms // 1000)))

        def away(failure):
            failure.trap(RedisUnavailable)
            return None  # degraded: this node's own decision stands

        return d.addCallbacks(decided, away)

    def _release(self, ticket: Ticket) -> None:
        super()._release(ticket)
        if getattr(ticket, "fleet", False):
            self._fleet_release(ticket.address)

    def _fleet_release(self, address: str) -> None:
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)

        def failed(failure):
            self._dirty = True
            return self._quiet(failure)

        self.link.command("HINCRBY", self.link.key("conns", address), self.field, -1).addErrback(failed)

    # -- offences and bans ---------------------------------------------------------------

    def offence(self, address: str, reason: str) -> bool:
        banned = super().offence(address, reason)
        limits = self.limits
        if not limits.ban_after or not address or (self._check_trusted and self.settings.is_trusted_proxy(address)):
            return banned
        if banned:
            self._publish_ban(address, limits.ban_time)
            return True
        d = self.link.script(OFFENCE, [self.link.key("strikes", address), self.link.key("ban", address),
                                       self.link.key("bans")],
                             [address, limits.ban_after, round(limits.ban_window * 1000),
                              round(limits.ban_time * 1000), f"{self.field}:{secrets.token_hex(6)}"])

        def counted(until_ms):
            if int(until_ms or 0):
                self._learn_ban(address, self.clock.seconds() + limits.ban_time, reason=reason)

        d.addCallbacks(counted, self._quiet)
        return False

    def _publish_ban(self, address: str, seconds: float) -> None:
        self.link.script(PUBLISH_BAN, [self.link.key("ban", address), self.link.key("bans")],
                         [address, max(1, round(seconds * 1000))]).addErrback(self._quiet)

    def _learn_ban(self, address: str, until: float, reason: str | None = None) -> None:
        current = self._bans.get(address, 0.0)
        if until <= current + 0.5:
            return
        new = current <= self.clock.seconds()
        self._bans[address] = until
        self._bans.move_to_end(address)
        if new:
            log.warn("banning {address} for {seconds:.0f}s: banned by the fleet{why}", address=address,
                     seconds=until - self.clock.seconds(), why=f" ({reason})" if reason else "", event="ban",
                     scope="fleet")

    def _sync_bans(self):
        if not self.link.up:
            return None

        def merge(reply):
            now_ms = int(reply[0])
            now = self.clock.seconds()
            for address, until_ms in zip(reply[1::2], reply[2::2]):
                self._learn_ban(address, now + (float(until_ms) - now_ms) / 1000.0)

        return self.link.script(BANS, [self.link.key("bans")], []).addCallbacks(merge, self._quiet)

    # -- Redis returns ---------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Rewrite this process's counts and republish its bans (Redis may have restarted empty)."""
        self._heartbeat()
        addresses = set(self._held) | set(self.connections)
        for address in addresses:
            count = self.connections.get(address, 0)
            key = self.link.key("conns", address)
            if count:
                self.link.command("HSET", key, self.field, count).addErrback(self._quiet)
                self.link.command("EXPIRE", key, COUNT_TTL).addErrback(self._quiet)
                self._held[address] = count
            else:
                self.link.command("HDEL", key, self.field).addErrback(self._quiet)
                self._held.pop(address, None)
        now = self.clock.seconds()
        for address, until in list(self._bans.items()):
            if until > now:
                self._publish_ban(address, until - now)
        self._dirty = False
        log.info("cluster: reconciled {n} address count(s) and {b} ban(s) with Redis", n=len(addresses),
                 b=sum(1 for until in self._bans.values() if until > now), event="cluster_reconciled")

    def _quiet(self, failure):
        """Redis being away is the degraded mode, not an error to log each time."""
        failure.trap(RedisUnavailable)
        return None
