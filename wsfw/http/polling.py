"""Long-polling sessions (Engine.IO ``sid``, SignalR ``id``) that wsfw ended after a block.

Over WebSocket a block closes the attacker's socket. Over long-polling there is
no socket to close: the "connection" is a session id carried by a stream of
short HTTP requests. To end it just as decisively, wsfw remembers the session
id for a while, refuses every later request that carries it (403), and cuts
the requests of that session still in flight (typically the pending GET poll),
so the client sees its session end at once; the proxy also sends the upstream
app its own end-of-session request (an Engine.IO close packet, a SignalR DELETE).
"""

from __future__ import annotations

import collections

from wsfw.http.responses import plain
from wsfw.logs import logger

log = logger("wsfw.http")

ENDED = "session ended by policy"


class EndedSessions:
    """Bounded memory of ended session ids (oldest forgotten first) and the live requests per id."""

    def __init__(self, clock, ttl: float = 300.0, limit: int = 10_000):
        self.clock = clock
        self.ttl = ttl
        self.limit = limit
        self._ended: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._inflight: dict[str, set] = {}

    def is_ended(self, sid: str) -> bool:
        expiry = self._ended.get(sid)
        if expiry is None:
            return False
        if expiry < self.clock.seconds():
            del self._ended[sid]
            return False
        return True

    def track(self, sid: str, request) -> None:
        requests = self._inflight.setdefault(sid, set())
        requests.add(request)

        def done(result):
            requests.discard(request)
            if not requests and self._inflight.get(sid) is requests:
                del self._inflight[sid]
            return None
        request.notifyFinish().addBoth(done)

    def end(self, sid: str) -> None:
        self._ended[sid] = self.clock.seconds() + self.ttl
        self._ended.move_to_end(sid)
        while len(self._ended) > self.limit:
            self._ended.popitem(last=False)
        for request in list(self._inflight.pop(sid, ())):
            if request.finished or request._disconnected:
                continue
            if request.startedWriting:
                request.channel.transport.abortConnection()
            else:
                request.write(plain(request, 403, ENDED, close=True))
                request.finish()
        log.info("polling session {sid} ended by policy", sid=sid, event="polling_session_ended")
