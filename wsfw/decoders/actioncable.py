"""Rails ActionCable (``actioncable-v1-json``).

Wire format (rails/rails actioncable: app/javascript/action_cable/subscriptions.js and
lib/action_cable/connection/subscriptions.rb): the client sends
``{"command": "subscribe"|"unsubscribe"|"message", "identifier": "<JSON>", "data": "<JSON>"}``
where identifier and data are JSON documents *inside JSON strings*; the server sends
``{"type": "welcome"|"ping"|"confirm_subscription"|"reject_subscription"|"disconnect", ...}``
and broadcasts ``{"identifier": "<JSON>", "message": {...}}``.

Params: ``actioncable.command``, ``actioncable.type``, the decoded identifier and data walked
as ``actioncable.identifier.channel``, ``actioncable.data.action``, ``actioncable.data.body``
..., ``actioncable.message.*``, other members ``actioncable.<key>``. An identifier or data
string that is not JSON (which Rails rejects) is kept as a string param, with an error.

Decoded.event: the identifier's channel, plus ``#<action>`` when data names one
(``ChatChannel#speak``); without a channel the command or type.
"""

from __future__ import annotations

from zope.interface import implementer

from ._jsonproto import json_message, member_path, unwrap
from ._walk import Ctx, Stop, parse_json, walk
from .base import IDecoder

_EMBEDDED = frozenset(("identifier", "data"))


def _embedded(value, max_depth, max_items):
    """The JSON document inside an identifier/data string, or None."""
    if type(value) is not str:
        return None
    try:
        return parse_json(value, max_depth, max_items)
    except (ValueError, RecursionError):
        return None


def _event(obj, identifier, data):
    channel = identifier.get("channel") if type(identifier) is dict else None
    if type(channel) is str and channel:
        action = data.get("action") if type(data) is dict else None
        return channel + "#" + action if type(action) is str and action else channel
    for key in ("command", "type"):
        v = obj.get(key)
        if type(v) is str:
            return v
    return None


@implementer(IDecoder)
class ActionCableDecoder:
    """ActionCable JSON messages, with the JSON-in-string identifier and data decoded."""

    name = "actioncable"

    def sniff_json(self, obj):
        return type(obj) is dict and "command" in obj and "identifier" in obj

    def decode(self, payload, is_binary, limits, state):
        return json_message(self, payload, is_binary, limits, state)

    def decode_json(self, text, obj, limits, state, error):
        ctx = Ctx(limits)
        obj = unwrap(ctx, obj)
        if type(obj) is not dict:
            try:
                walk(ctx, obj, "actioncable", 0)
            except Stop:
                pass
            return ctx.result(self.name, None, text, error or "actioncable message is not an object")
        decoded = {}
        for key in _EMBEDDED:
            if key in obj:
                decoded[key] = _embedded(obj[key], limits.max_depth, ctx.nodes)
        event = _event(obj, decoded.get("identifier"), decoded.get("data"))
        try:
            if ctx.max_depth < 1:
                ctx.trunc("depth")
            else:
                for k, v in obj.items():
                    path = member_path(ctx, "actioncable", k)
                    inner = decoded.get(k) if k in _EMBEDDED else None
                    if inner is not None or (k in _EMBEDDED and v is None):
                        walk(ctx, inner, path, 1)
                    else:
                        if k in _EMBEDDED and error is None:
                            error = "actioncable %s is not a JSON string" % k
                        walk(ctx, v, path, 1)
        except Stop:
            pass
        return ctx.result(self.name, event, text, error)


DECODERS = [ActionCableDecoder()]
SUBPROTOCOLS = {"actioncable-v1-json": "actioncable", "actioncable-unsupported": "actioncable"}
