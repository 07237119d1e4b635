"""Shipped test doubles: a verified fake ``IRelayEnd`` for driving the relay without sockets.

Shipped in the package (as txtorcon's testutil is) so inspector authors can
test against the same fake the project does.
"""

from __future__ import annotations

from zope.interface import implementer

from wsfw.interfaces import IRelayEnd


@implementer(IRelayEnd)
class FakeRelayEnd:
    """Records what the relay asks of a hop; state changes as a real hop's would."""

    def __init__(self, side: str):
        self.side = side
        self.can_send = True
        self.sent: list[tuple[bytes, bool]] = []
        self.closes: list[tuple[int | None, str | None]] = []
        self.replies: list[tuple[int | None, str | None]] = []
        self.failures_released = 0
        self.reading = True
        self.aborted = False

    def send_message(self, payload, is_binary):
        assert self.can_send, "relay sent on a closed hop"
        self.sent.append((payload, is_binary))

    def close(self, code, reason):
        self.closes.append((code, reason))
        self.can_send = False

    def reply_close(self, code, reason):
        self.replies.append((code, reason))
        self.can_send = False

    def release_failure(self):
        self.failures_released += 1
        self.can_send = False

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def abort(self):
        self.aborted = True
        self.can_send = False
