"""A fleet of wsfw nodes sharing state through Redis (``[cluster]``).

- ``link``: the connection to Redis, its health (``up`` or degraded) and the
  commands, which fail fast while Redis is away instead of queueing;
- ``events``: every node's audit events appended to one Redis Stream;
- ``guard``: bans, per-address connection counts and handshake rates shared
  by the fleet, on top of the in-process ``wsfw.guard.Guard``.

Nothing here runs per relayed message: Redis is only asked when a client
connects or leaves, when a decision is disruptive, and on short timers.
"""
