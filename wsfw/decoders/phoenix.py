"""Phoenix channels: the V1 object ``{"topic", "event", "payload", "ref"}`` (plus an optional
``join_ref``) and the V2 array ``[join_ref, ref, topic, event, payload]``.

Wire format: phoenixframework/phoenix lib/phoenix/socket/serializers/v1_json_serializer.ex and
v2_json_serializer.ex, assets/js/phoenix/serializer.js (the JS client sends V2 with string refs).

Params: ``phoenix.topic``, ``phoenix.event``, ``phoenix.ref``, ``phoenix.join_ref`` (absent when
null), ``phoenix.payload.*`` (walked JSON), other V1 members ``phoenix.<key>``; a message of
neither shape is walked under ``phoenix`` with an error.

Decoded.event: the event name (``phx_join``, ``new_msg``...); the topic is its own param.
V2 binary pushes (Phoenix >= 1.6) fall back like JSON: raw.
"""

from __future__ import annotations

from zope.interface import implementer

from ._jsonproto import json_message, unwrap, walk_members
from ._walk import Ctx, Stop, walk
from .base import IDecoder

def _is_ref(v):
    return v is None or (type(v) is str and (v == "" or v.isdigit()))


def _is_v2(obj):
    return (type(obj) is list and len(obj) == 5 and type(obj[2]) is str and type(obj[3]) is str
            and _is_ref(obj[0]) and _is_ref(obj[1]))


def _is_v1(obj):
    return (type(obj) is dict and type(obj.get("topic")) is str and type(obj.get("event")) is str
            and "payload" in obj and "ref" in obj)


@implementer(IDecoder)
class PhoenixDecoder:
    """Phoenix channel messages (V1 objects, V2 arrays)."""

    name = "phoenix"

    def sniff_json(self, obj):
        return _is_v2(obj) or _is_v1(obj)

    def decode(self, payload, is_binary, limits, state):
        return json_message(self, payload, is_binary, limits, state)

    def decode_json(self, text, obj, limits, state, error):
        ctx = Ctx(limits)
        obj = unwrap(ctx, obj)
        event = None
        try:
            if type(obj) is list and len(obj) == 5 and type(obj[3]) is str:
                # V2 (refs are loosely checked here: the route said Phoenix)
                event = obj[3]
                if ctx.max_depth < 1:
                    ctx.trunc("depth")
                else:
                    join_ref, ref, topic, name, payload = obj
                    walk(ctx, topic, "phoenix.topic", 1)
                    walk(ctx, name, "phoenix.event", 1)
                    if ref is not None:
                        walk(ctx, ref, "phoenix.ref", 1)
                    if join_ref is not None:
                        walk(ctx, join_ref, "phoenix.join_ref", 1)
                    walk(ctx, payload, "phoenix.payload", 1)
            elif type(obj) is dict and type(obj.get("event")) is str:
                event = obj["event"]
                skip = tuple(k for k in ("ref", "join_ref") if k in obj and obj[k] is None)
                walk_members(ctx, obj, "phoenix", 0, skip)
                if "topic" not in obj or "payload" not in obj:
                    error = error or "invalid phoenix message: missing topic or payload"
            else:
                error = error or "invalid phoenix message"
                walk(ctx, obj, "phoenix", 0)
        except Stop:
            pass
        return ctx.result(self.name, event, text, error)


DECODERS = [PhoenixDecoder()]
SUBPROTOCOLS: dict[str, str] = {}
