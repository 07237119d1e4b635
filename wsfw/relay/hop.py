"""What both Autobahn hops share: the ``IRelayEnd`` face, caps, and held closes.

A transparent proxy must not answer a close or fail a connection on its own
schedule. When a peer sends a close frame, the hop *holds* its reply until the
other side's peer has answered the relayed close, so the code and reason the
upstream app chose reach the client (and messages the upstream sent before its
close still arrive). When a peer breaks the protocol, the hop stops reading and
holds the failure until the other hop has closed, so echoes of messages already
forwarded are still delivered before the 1002/1007/1009 — exactly what a direct
connection would have given. Both holds are bounded by ``close_handshake``.
"""

from __future__ import annotations

from autobahn.websocket.protocol import WebSocketProtocol

from wsfw.relay import close as closing
from wsfw.relay import tuning
from wsfw.relay.flow import reader

tuning.install()  # both hops pay Autobahn's per-frame costs: see wsfw/relay/tuning.py

_ALLOWED_LOW_CODES = frozenset(WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED)


def close_frame_problem(code: int | None, reason: bytes | None) -> tuple[str, str] | None:
    """What is wrong with a received close frame, as Autobahn would judge it, or None.

    Returns ``("protocol", why)`` for a reserved code (1002) and ``("payload",
    why)`` for a reason that is not UTF-8 (1007).
    """
    if code is not None and not (code in _ALLOWED_LOW_CODES or 3000 <= code <= 4999):
        return "protocol", f"invalid close code {code}"
    if reason is not None:
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            return "payload", "invalid close reason (non-UTF8 payload)"
    return None


class HopMixin:
    """Mixed into the frontend (server) and backend (client) protocols."""

    side: str = ""
    relay = None
    _halted = False
    _held_reply = False
    _held_failure: tuple[int, str] | None = None
    _drop_after_failure = False
    _frames = 0
    _inflated = 0

    # -- IRelayEnd ----------------------------------------------------------

    @property
    def can_send(self) -> bool:
        return self.state == WebSocketProtocol.STATE_OPEN

    def send_message(self, payload: bytes, is_binary: bool) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendMessage(payload, is_binary)

    def close(self, code: int | None, reason: str | None) -> None:
        """The one way wsfw closes a hop, whatever the state."""
        if self._held_failure is not None:
            self.release_failure()
        elif self._held_reply:
            self.reply_close(code, reason)
        elif self.state == WebSocketProtocol.STATE_OPEN:
            closing.send_close(self, code, reason)
        elif self.state == WebSocketProtocol.STATE_CONNECTING:
            self.close_connecting(code, reason)

    def close_connecting(self, code, reason) -> None:
        self.dropConnection(abort=True)

    def reply_close(self, code: int | None, reason: str | None) -> None:
        if not self._held_reply:
            return
        self._held_reply = False
        closing.send_close(self, code, reason, reply=True)
        # Read again (what arrives is discarded): a TLS close waits for the
        # peer's close_notify, and a paused transport would never see it.
        self.resume_reading()
        if self.factory.isServer:
            self.dropConnection(abort=False)

    def release_failure(self) -> None:
        if self._held_failure is None:
            return
        code, reason = self._held_failure
        self._held_failure = None
        self._halted = False
        WebSocketProtocol._fail_connection(self, code, reason)
        if self._drop_after_failure:
            # A bad close frame: Autobahn treats it as the reply to the close it
            # just sent and aborts the TCP connection; do exactly the same.
            self.dropConnection(abort=True)
            return
        self.resume_reading()
        if self.state != WebSocketProtocol.STATE_CLOSED and self.data:
            self.consumeData()

    def pause_reading(self) -> None:
        if self.transport is not None:
            reader(self.transport).pauseProducing()

    def resume_reading(self) -> None:
        if self.transport is not None:
            reader(self.transport).resumeProducing()

    def abort(self) -> None:
        self.dropConnection(abort=True)

    # -- Autobahn hooks -----------------------------------------------------

    def processData(self):
        if self._halted:
            if not self._held_reply and self._held_failure is None:
                self.data = b""  # closing: whatever the peer still sends is discarded
            return False
        return super().processData()

    def _fail_connection(self, code=1001, reason="going away"):
        relay = self.relay
        if (relay is not None and relay.started and self.state == WebSocketProtocol.STATE_OPEN
                and self._held_failure is None and not self._halted):
            self._held_failure = (code, reason)
            self._halted = True
            self.failedByMe = True  # Autobahn then ignores the rest of the bad frame
            self.pause_reading()
            relay.hop_failed(self.side, code, reason)
            return
        super()._fail_connection(code, reason)

    def onCloseFrame(self, code, reasonRaw):
        relay = self.relay
        if self.state == WebSocketProtocol.STATE_OPEN and relay is not None and relay.started and not self._halted:
            problem = close_frame_problem(code, reasonRaw)
            if problem is not None:  # fail as Autobahn would, through the held-failure path
                kind, why = problem
                self._drop_after_failure = True
                (self._protocol_violation if kind == "protocol" else self._invalid_payload)(why)
                return True
            self.remoteCloseCode = code
            self.remoteCloseReason = reasonRaw.decode("utf-8") if reasonRaw is not None else None
            self.wasClean = True
            self._held_reply = True
            self._halted = True
            self.pause_reading()
            relay.peer_closed(self.side, code, self.remoteCloseReason)
            return True
        replying = self.state == WebSocketProtocol.STATE_CLOSING
        result = super().onCloseFrame(code, reasonRaw)
        if replying and relay is not None:
            relay.close_replied(self.side, self.remoteCloseCode, self.remoteCloseReason)
        return result

    def onMessageBegin(self, isBinary):
        self._frames = 0
        self._inflated = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)
        self._frames += 1
        cap = self.factory.wsfw_limits.max_frames_per_message
        if cap and self._frames > cap and not self.failedByMe:
            self._fail_connection(closing.POLICY, f"more than {cap} frames in one message")

    def onMessageFrameData(self, payload):
        # Autobahn hands over inflated data: count it, so permessage-deflate
        # cannot smuggle a bomb past the message cap on any Autobahn release.
        self._inflated += len(payload)
        if self._inflated > self.factory.wsfw_limits.max_message_bytes and not self.failedByMe:
            self._fail_connection(closing.TOO_BIG, "message exceeds max_message_bytes after decompression")
            return
        super().onMessageFrameData(payload)

    def onMessageEnd(self):
        """Autobahn's, without firing its "message" event: nothing ever listens for it on a hop, and
        firing it (a txaio future and an errback per message) was about 9 % of the relay's CPU."""
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    def onMessage(self, payload, isBinary):
        self.relay.message(self.side, payload, isBinary)

    def onClose(self, wasClean, code, reason):
        if self.relay is not None:
            self.relay.lost(self.side, wasClean, self.remoteCloseCode, self.remoteCloseReason)
