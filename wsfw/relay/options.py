"""One mapper from validated config to Autobahn's ``setProtocolOptions``, per hop role.

Keeping every Autobahn knob in one place (as Crossbar's
``set_websocket_options`` does) makes the protocol hygiene auditable: masking
and UTF-8 validation stay at Autobahn's strict defaults and are never exposed
as switches; only sizes, timeouts, pings and compression come from config.
"""

from __future__ import annotations

import inspect

from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)

from wsfw.config import Config


def deflate_size_cap_supported() -> bool:
    """Whether this Autobahn caps *inflated* message size (GHSA-hxp9-w8x3-p566).

    Autobahn 22.7 counts compressed bytes against the message cap and never
    drains zlib's unconsumed tail; releases with the fix take
    ``max_output_len`` in ``decompress_message_data``.
    """
    from autobahn.websocket.compress_deflate import PerMessageDeflate

    return "max_output_len" in inspect.signature(PerMessageDeflate.decompress_message_data).parameters


def _accept_deflate(offers):
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def _accept_deflate_response(response):
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None


def _common(config: Config) -> dict:
    t, limits = config.timeouts, config.limits
    return dict(
        maxFramePayloadSize=limits.max_frame_bytes,
        maxMessagePayloadSize=limits.max_message_bytes,
        closeHandshakeTimeout=t.close_handshake,
        autoPingInterval=t.auto_ping_interval,
        autoPingTimeout=t.auto_ping_timeout if t.auto_ping_interval else 0,
        autoFragmentSize=0,
        failByDrop=False,  # say why in a close frame, as a well-behaved endpoint does
        echoCloseCodeReason=False,
        tcpNoDelay=True,
    )


def server_options(config: Config) -> dict:
    """Options for the client-facing hop (Autobahn server)."""
    return dict(
        _common(config),
        versions=[13],
        webStatus=False,
        openHandshakeTimeout=config.timeouts.open_handshake,
        maxConnections=config.limits.max_connections,
        perMessageCompressionAccept=_accept_deflate if config.limits.compress_client else (lambda offers: None),
    )


def client_options(config: Config) -> dict:
    """Options for the upstream hop (Autobahn client).

    Its own open-handshake timer is a backstop only: the frontend's upstream
    deadline (``[timeouts] connect``) answers the client with 504 first.
    """
    options = dict(
        _common(config),
        version=13,
        openHandshakeTimeout=config.timeouts.open_handshake,
        serverConnectionDropTimeout=config.timeouts.close_handshake,
    )
    if config.limits.compress_upstream:
        options["perMessageCompressionOffers"] = [PerMessageDeflateOffer()]
        options["perMessageCompressionAccept"] = _accept_deflate_response
    return options
