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
from wsfw.relay import frames, tuning
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


#: Autobahn state that only the opening handshake reads: the raw request and response and
#: their parsed headers (a few KB with cookies), released once both hops are open.
HANDSHAKE_STATE = ("http_request_data", "http_response_data", "http_headers", "http_request_params",
                   "http_status_line", "_wskey", "websocket_key", "_response", "connecting_request")

#: Values every wsfw hop holds for these Autobahn attributes once open (options wsfw never varies,
#: and state at rest). Autobahn copies or sets each on every protocol instance; they are also class
#: attributes here, so :meth:`HopMixin.compact` can drop each instance copy that still equals its
#: class value and halve the instance's ``__dict__`` (92 entries, 3.3 KB, on a frontend).
AT_REST = {
    "allowNullOrigin": False, "applyMask": True, "autoFragmentSize": 0, "autoPingRestartOnAnyTraffic": True,
    "echoCloseCodeReason": False, "failByDrop": False, "logFrames": False, "logOctets": False,
    "maskServerFrames": False, "requireMaskedClientFrames": True, "acceptMaskedServerFrames": False,
    "maskClientFrames": True, "serveFlashSocketPolicy": False, "tcpNoDelay": True, "trackTimings": False,
    "trackedTimings": None, "trustXForwardedFor": 0, "utf8validateIncoming": True, "webStatus": False,
    "wasServingFlashSocketPolicyFile": False, "autoPingPending": None, "autoPingPendingCall": None,
    "autoPingTimeoutCall": None, "closeHandshakeTimeoutCall": None, "openHandshakeTimeoutCall": None,
    "serverConnectionDropTimeoutCall": None, "wasClean": False, "wasCloseHandshakeTimeout": False,
    "wasMaxFramePayloadSizeExceeded": False, "wasMaxMessagePayloadSizeExceeded": False,
    "wasNotCleanReason": None, "wasOpenHandshakeTimeout": False, "wasServerConnectionDropTimeout": False,
    "closedByMe": False, "droppedByMe": False, "failedByMe": False, "localCloseCode": None,
    "localCloseReason": None, "remoteCloseCode": None, "remoteCloseReason": None, "inside_message": False,
    "current_frame": None, "_perMessageCompress": None, "websocket_protocol_in_use": None,
    "_backend": None, "_dial": None, "_deadline": None, "_handshake": None,
}


_MISSING = object()


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
    _fast_cap: int | None = None

    def compact(self) -> None:
        """Shrink this open hop's instance state (it lives as long as the connection): drop the
        handshake-only data, and every attribute whose value equals its class value in
        :data:`AT_REST` (reads find the same value on the class; a later write sets it again),
        then rebuild the ``__dict__``, which never shrinks by itself."""
        state = self.__dict__
        for name in HANDSHAKE_STATE:
            state.pop(name, None)
        for name, value in AT_REST.items():
            current = state.get(name, _MISSING)
            if current is value or (type(current) is type(value) and current == value):
                del state[name]
        self.__dict__ = dict(state)

    # -- IRelayEnd ----------------------------------------------------------

    @property
    def can_send(self) -> bool:
        return self.state == WebSocketProtocol.STATE_OPEN

    def send_message(self, payload: bytes, is_binary: bool) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            if frames.can_write_fast(self, len(payload)):
                frames.write_message(self, payload, is_binary)
            else:
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

    def _dataReceived(self, data: bytes) -> None:
        """Simple frames take the fast path of :mod:`wsfw.relay.frames`; Autobahn parses the rest.
        What the read makes the other hop send goes out in one write when it is done."""
        opened = frames.batch()
        try:
            if not frames.can_read_fast(self):
                super()._dataReceived(data)
            else:
                self.data = self.data + data if self.data else data
                if self._read_fast():
                    self.consumeData()
        finally:
            if opened:
                frames.end_batch()

    def sendData(self, data, sync=False, chopsize=None):
        frames.flush(self.transport)  # frames of the open batch first: nothing overtakes them
        super().sendData(data, sync, chopsize)

    def _closeConnection(self, abort=False):
        frames.flush(self.transport)
        super()._closeConnection(abort)

    def _read_fast(self) -> bool:
        """The fast path over the buffer; whether Autobahn has to go on with what it left."""
        cap = self._fast_cap
        if cap is None:
            cap = self._fast_cap = frames.frame_cap(self)
        self.data, waiting = frames.read_frames(self, self.data, cap)
        return bool(self.data) and not waiting

    def processData(self):
        if self._halted:
            if not self._held_reply and self._held_failure is None:
                self.data = b""  # closing: whatever the peer still sends is discarded
            return False
        if self.current_frame is None and self.data and frames.can_read_fast(self):
            # Between frames inside Autobahn's own loop (after a frame only it takes): simple
            # frames go back to the fast path, instead of Autobahn keeping every later read
            # until one happens to end on a frame boundary.
            before = len(self.data)
            if not self._read_fast():
                return False
            if len(self.data) != before:
                return True  # Autobahn's loop calls again for what is left
        return super().processData()

    def _fail_connection(self, code=1001, reason="going away"):
        if self._held_failure is not None:
            # Already failing, held: Autobahn fails an invalid text frame a second time at its
            # end ("ended within Unicode code point"); that must not release the first early.
            return
        relay = self.relay
        if (relay is not None and relay.started and self.state == WebSocketProtocol.STATE_OPEN
                and not self._halted):
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


for _name, _value in AT_REST.items():  # the class values compact() lets the instance copies fall back to
    setattr(HopMixin, _name, _value)
