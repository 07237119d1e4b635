"""JSON-RPC 2.0 (https://www.jsonrpc.org/specification), 1.0 tolerated, single and batch.

Params: ``jsonrpc.method``, ``jsonrpc.id``, ``jsonrpc.params.*`` / ``jsonrpc.params[i]``,
``jsonrpc.result.*``, ``jsonrpc.error.code`` / ``.message`` / ``.data.*``, other members as
``jsonrpc.<key>``; a batch's elements are ``jsonrpc[i].method`` etc. The ``"jsonrpc": "2.0"``
version marker itself is not a param (a fixed string: nothing to inspect, a detector pass
saved per call); any other value of it is.

Decoded.event: the method (of the first request in a batch); None for responses.
"""

from __future__ import annotations

from zope.interface import implementer

from ._jsonproto import json_message, member_path, unwrap
from ._walk import Ctx, Stop, walk
from .base import IDecoder

_VERSIONS = frozenset(("2.0", "1.0"))
_KINDS = ("method", "result", "error")
_ELEMENT_PATHS = tuple("jsonrpc[%d]" % i for i in range(64))


def _is_message(obj):
    return type(obj) is dict and obj.get("jsonrpc") == "2.0" and (
        "method" in obj or "result" in obj or "error" in obj)


def _walk_message(ctx, obj, prefix, depth):
    """One request/response object at ``depth``; returns its problem or None."""
    if "method" in obj:
        method = obj["method"]
        ctx.op("jsonrpc.method", method if type(method) is str else None, obj.get("params"), prefix + ".params")
    if depth >= ctx.max_depth:
        ctx.trunc("depth")
        return None
    inner = depth + 1
    for k, v in obj.items():
        if k == "jsonrpc" and type(v) is str and v in _VERSIONS:
            continue
        walk(ctx, v, member_path(ctx, prefix, k), inner)
    if not ("method" in obj or "result" in obj or "error" in obj):
        return "invalid json-rpc message: no method, result or error"
    method = obj.get("method")
    if method is not None and type(method) is not str:
        return "invalid json-rpc message: method is not a string"
    return None


@implementer(IDecoder)
class JSONRPCDecoder:
    """JSON-RPC requests, notifications and responses; batches element by element."""

    name = "jsonrpc"

    def sniff_json(self, obj):
        if type(obj) is list:
            return bool(obj) and _is_message(obj[0]) and all(type(x) is dict for x in obj)
        return _is_message(obj)

    def decode(self, payload, is_binary, limits, state):
        return json_message(self, payload, is_binary, limits, state)

    def decode_json(self, text, obj, limits, state, error):
        ctx = Ctx(limits)
        obj = unwrap(ctx, obj)
        event = None
        try:
            if type(obj) is dict:
                method = obj.get("method")
                if type(method) is str:
                    event = method
                error = error or _walk_message(ctx, obj, "jsonrpc", 0)
            elif type(obj) is list:
                for x in obj:
                    if type(x) is dict and type(x.get("method")) is str:
                        event = x["method"]
                        break
                if not obj:
                    error = error or "invalid json-rpc message: empty batch"
                elif ctx.max_depth < 1:
                    ctx.trunc("depth")
                    obj = ()
                for i, x in enumerate(obj):
                    path = _ELEMENT_PATHS[i] if i < 64 else "jsonrpc[%d]" % i
                    if type(x) is dict:
                        problem = _walk_message(ctx, x, path, 1)
                    else:
                        walk(ctx, x, path, 1)
                        problem = "invalid json-rpc message: batch element is not an object"
                    if problem is not None and error is None:
                        error = "%s (at [%d])" % (problem, i)
            else:
                error = error or "invalid json-rpc message: not an object or array"
                walk(ctx, obj, "jsonrpc", 0)
        except Stop:
            pass
        return ctx.result(self.name, event, text, error)


DECODERS = [JSONRPCDecoder()]
SUBPROTOCOLS: dict[str, str] = {}
