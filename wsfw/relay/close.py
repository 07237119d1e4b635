"""The close-code policy and the single place that sends close frames.

Autobahn's ``sendClose`` refuses 1001, 1008 and 1011, which are exactly the
codes a proxy needs for its own failures, so every close goes through
:func:`send_close`, which writes the frame with ``sendCloseFrame`` the way
``sendClose`` does after its check. Application codes are relayed unchanged;
codes that must never appear on the wire become 1000.
"""

from __future__ import annotations

from autobahn.util import encode_truncate
from autobahn.websocket.protocol import WebSocketProtocol

from wsfw.relay import UPSTREAM

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011

#: Codes an endpoint may put in a close frame (RFC 6455 7.4, IANA registry).
#: 1014 is left out: Autobahn rejects incoming codes above 1013.
SENDABLE = frozenset(range(1000, 1004)) | frozenset(range(1007, 1014)) | frozenset(range(3000, 5000))


def relayable(code: int | None) -> int | None:
    """The code to send on one hop for a close its other hop received.

    ``None`` (a close frame without a code, 1005 on the receiving side) stays
    without a code; anything not sendable becomes 1000.
    """
    if code is None or code == 1005:
        return None
    return code if code in SENDABLE else NORMAL


def hop_failure_code(failed_side: str) -> int:
    """What the surviving hop gets when the other hop failed or vanished.

    An upstream that dies is the server's error (1011); a client that dies is
    a client going away (1001), which the upstream app already handles.
    """
    return INTERNAL_ERROR if failed_side == UPSTREAM else GOING_AWAY


def send_close(protocol, code: int | None, reason: str | None, *, reply: bool = False) -> bool:
    """Send a close frame on an open hop. Returns whether a frame was sent."""
    if protocol.state != WebSocketProtocol.STATE_OPEN:
        return False
    reason_bytes = encode_truncate(reason, 123) if (reason and code is not None) else None
    protocol.sendCloseFrame(code=code, reasonUtf8=reason_bytes, isReply=reply)
    return True
