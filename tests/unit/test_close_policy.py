"""The close-code table, pinned."""

from __future__ import annotations

import pytest

from wsfw.relay import CLIENT, UPSTREAM
from wsfw.relay.close import hop_failure_code, relayable
from wsfw.relay.hop import close_frame_problem


@pytest.mark.parametrize("code,expected", [
    (1000, 1000), (1001, 1001), (1002, 1002), (1003, 1003), (1007, 1007), (1008, 1008), (1009, 1009),
    (1011, 1011), (1013, 1013), (3000, 3000), (4999, 4999), (None, None), (1005, None),
    (1004, 1000), (1006, 1000), (1014, 1000), (1015, 1000), (2999, 1000), (5000, 1000),
])
def test_relayable(code, expected):
    """Application codes pass unchanged; codes that must not be sent become 1000; no code stays none."""
    assert relayable(code) == expected


def test_hop_failure_codes():
    """A failed upstream is a server error for the client (1011); a failed client is going away (1001)."""
    assert (hop_failure_code(UPSTREAM), hop_failure_code(CLIENT)) == (1011, 1001)


@pytest.mark.parametrize("code,reason,kind", [
    (1000, b"ok", None), (None, None, None), (4999, "✓".encode(), None), (999, None, "protocol"),
    (1004, None, "protocol"), (1005, None, "protocol"), (2999, None, "protocol"), (5000, None, "protocol"),
    (1000, b"\xff", "payload"),
])
def test_close_frame_problem(code, reason, kind):
    """Received close frames are judged as Autobahn judges them (1002 for codes, 1007 for reasons)."""
    problem = close_frame_problem(code, reason)
    assert (problem[0] if problem else None) == kind
