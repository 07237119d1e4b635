"""Backpressure between the two hops, after Twisted's ``portforward`` idiom.

Each transport gets the *other* transport as its streaming producer, so when
one peer stops reading and its send buffer passes Twisted's ``bufferSize``,
the transport pauses reading from the other peer; the kernel buffers fill and
TCP pushes back to the sender. Autobahn itself has no flow control.

The producer is wrapped in :class:`PeerProducer` because Twisted calls
``stopProducing()`` on a registered producer when its consumer's connection
drops, which on a raw transport means ``loseConnection()``: the surviving hop
would vanish without a close frame. The wrapper lets the relay decide.
"""

from __future__ import annotations

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


@implementer(IPushProducer)
class PeerProducer:
    """Pauses and resumes a peer transport; counts pauses for the operators."""

    def __init__(self, transport, on_pause=None):
        self.transport = transport
        self.pauses = 0
        self._on_pause = on_pause

    def pauseProducing(self):
        self.pauses += 1
        if self._on_pause is not None:
            self._on_pause()
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        """The consumer's connection is gone; the relay closes the other hop itself."""


def reader(transport):
    """The object whose ``pauseProducing`` stops reading: the TCP transport under any TLS wrapper."""
    while not hasattr(transport, "pauseProducing") and hasattr(transport, "transport"):
        transport = transport.transport
    return transport


def _registered(transport) -> bool:
    return (getattr(transport, "producer", None) or getattr(transport, "_producer", None)) is not None


def link(front_transport, back_transport) -> tuple[PeerProducer, PeerProducer]:
    """Cross-register the two transports as each other's producer.

    The front transport came through a twisted.web ``Site``, whose
    ``HTTPChannel`` is still registered on it as producer: a second
    registration would raise, so it is unregistered first (the
    ``WebSocketResource`` trap).
    """
    for transport in (front_transport, back_transport):
        if _registered(transport):
            transport.unregisterProducer()
    slow_upstream = PeerProducer(reader(front_transport))
    slow_client = PeerProducer(reader(back_transport))
    back_transport.registerProducer(slow_upstream, True)
    front_transport.registerProducer(slow_client, True)
    return slow_upstream, slow_client


def unlink(*transports) -> None:
    """Unregister whatever producer the relay put on each transport still connected."""
    for transport in transports:
        if transport is not None and _registered(transport):
            transport.unregisterProducer()
