"""The node's connection to Redis: reconnects with backoff, knows whether Redis answers.

txredisapi keeps one connection up (its ``ClientService`` reconnects with
exponential backoff and jitter). Its lazy handler would park commands until
Redis comes back; a firewall must not pile up work behind a dead store, so
:meth:`RedisLink.command` fails at once while the link is down and callers
fall back to their local state. A PING every second decides ``up``; the
transitions are logged once each way and callers registered with
``on_up`` reconcile (republish what they hold) when Redis returns.
"""

from __future__ import annotations

import hashlib

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString

from wsfw.config import Cluster
from wsfw.logs import logger

log = logger("wsfw.cluster")

#: Seconds between health checks, and how long one command may take before the link is reset.
HEARTBEAT = 1.0
REPLY_TIMEOUT = 2.0


class RedisUnavailable(Exception):
    """Redis is not connected (or did not answer): use local state."""


class RedisLink(Service):
    name = "cluster-link"

    def __init__(self, reactor, cluster: Cluster, heartbeat: float = HEARTBEAT):
        self.reactor = reactor
        self.cluster = cluster
        self.heartbeat = heartbeat
        self.up = False
        self.errors = 0  # commands that failed (a metric)
        self.transitions = 0  # times the link went down after being up
        self._factory = None
        self._loop = None
        self._on_up: list = []
        self._scripts: dict[str, str] = {}

    @property
    def node(self) -> str:
        return self.cluster.node

    def key(self, *parts: str) -> str:
        """A key under the fleet's prefix: ``key("ban", ip)`` -> ``wsfw:ban:192.0.2.1``."""
        return self.cluster.prefix + ":".join(parts)

    def on_up(self, callback) -> None:
        """Call ``callback()`` each time Redis becomes reachable (also the first time)."""
        self._on_up.append(callback)

    # -- service ------------------------------------------------------------------

    def startService(self):
        super().startService()
        import txredisapi

        endpoint = clientFromString(self.reactor, self.cluster.redis)
        factory = txredisapi.RedisFactory(self.cluster.redis, self.cluster.db or None, 1, isLazy=True,
                                          password=self.cluster.password, replyTimeout=REPLY_TIMEOUT,
                                          convertNumbers=False)
        factory.maxDelay = 5  # back off to one attempt per 5 s at most: Redis returns are noticed soon
        factory.noisy = False
        factory.connectionError = self._connection_error
        factory.startConnecting(endpoint)
        factory.deferred.addCallbacks(lambda _: self._check(), lambda f: None)  # up as soon as connected
        self._factory = factory
        log.info("cluster: node {node} connecting to Redis at {redis} (prefix {prefix!r})", node=self.node,
                 redis=self.cluster.redis, prefix=self.cluster.prefix, event="cluster_connecting")
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = self.reactor
        self._loop.start(self.heartbeat, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        factory, self._factory = self._factory, None
        if factory is not None:
            return factory.disconnect()
        return None

    def _connection_error(self, message) -> None:
        log.debug("cluster: {message}", message=message)

    # -- commands -----------------------------------------------------------------

    def _connection(self):
        factory = self._factory
        if factory is None or not factory.pool:
            return None
        return factory.pool[0]

    def command(self, *args) -> defer.Deferred:
        """Run one Redis command; fails with :class:`RedisUnavailable` at once when not connected."""
        connection = self._connection()
        if connection is None:
            return defer.fail(RedisUnavailable("not connected to Redis"))
        try:
            d = connection.execute_command(*args)
        except Exception as e:  # txredisapi raises ConnectionError synchronously on a dying connection
            return defer.fail(RedisUnavailable(str(e)))
        return d.addErrback(self._failed)

    def script(self, source: str, keys: list[str], args: list) -> defer.Deferred:
        """EVALSHA a Lua script (loading it on NOSCRIPT): each runs atomically in Redis."""
        sha = self._scripts.get(source)
        if sha is None:
            sha = self._scripts[source] = hashlib.sha1(source.encode("utf-8")).hexdigest()

        def retry(failure):
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return self.command("EVAL", source, len(keys), *keys, *args)

        return self.command("EVALSHA", sha, len(keys), *keys, *args).addErrback(retry)

    def _failed(self, failure):
        self.errors += 1
        if failure.check(RedisUnavailable):
            return failure
        import txredisapi

        if failure.check(txredisapi.ConnectionError, defer.CancelledError):
            raise RedisUnavailable(failure.getErrorMessage())
        return failure

    # -- health -------------------------------------------------------------------

    def _check(self):
        return self.command("PING").addCallbacks(lambda _: self._set(True), lambda f: self._set(False, f))

    def _set(self, up: bool, failure=None) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            log.info("cluster: Redis at {redis} is reachable: sharing bans, counts and events with the fleet",
                     redis=self.cluster.redis, event="cluster_up")
            for callback in list(self._on_up):
                try:
                    callback()
                except Exception:
                    log.failure("cluster: reconciling after Redis returned failed")
        else:
            self.transitions += 1
            log.warn("cluster: Redis at {redis} is unreachable ({why}): degraded, relaying and inspecting on "
                     "this node's own state until it returns", redis=self.cluster.redis,
                     why=failure.getErrorMessage() if failure is not None else "?", event="cluster_degraded")
