"""The WebSocket relay: two Autobahn hops joined by a protocol-free relay object."""

CLIENT = "client"
UPSTREAM = "upstream"


def other(side: str) -> str:
    return UPSTREAM if side == CLIENT else CLIENT
