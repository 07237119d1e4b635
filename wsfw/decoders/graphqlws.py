"""GraphQL over WebSocket: ``graphql-transport-ws`` (the graphql-ws library) and the legacy
``subscriptions-transport-ws`` (Apollo; subprotocol ``graphql-ws``).

Params: ``graphql.type``, ``graphql.id``; for an operation (``subscribe`` / ``start``) its
payload's ``graphql.query`` (the document text: inspected like any value),
``graphql.operationName``, ``graphql.variables.*`` and ``graphql.extensions.*`` (walked JSON)
plus any other payload member as ``graphql.payload.*``; for every other message the payload as
``graphql.payload.*`` (connection_init parameters, results, errors). Other top-level members
are ``graphql.<key>``.

Decoded.event: the operationName when given, else the name of the first operation in the
query (``subscription OnChat(...)`` -> ``OnChat``), else the message type.
"""

from __future__ import annotations

import re

from zope.interface import implementer

from ._jsonproto import json_message, unwrap, walk_members
from ._walk import Ctx, Stop, walk
from .base import NOARGS, IDecoder

#: graphql-transport-ws (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md)
TRANSPORT_WS_TYPES = frozenset((
    "connection_init", "connection_ack", "ping", "pong", "subscribe", "next", "error", "complete",
))
#: subscriptions-transport-ws (https://github.com/apollographql/subscriptions-transport-ws/blob/master/PROTOCOL.md)
LEGACY_TYPES = frozenset((
    "connection_init", "connection_ack", "connection_error", "connection_terminate", "ka",
    "start", "stop", "data", "error", "complete",
))
TYPES = TRANSPORT_WS_TYPES | LEGACY_TYPES
# Messages only these protocols send, so sniffing may claim them without a query.
_CONNECTION_TYPES = frozenset(("connection_init", "connection_ack", "connection_error",
                               "connection_terminate", "ka"))
_OPERATION_TYPES = frozenset(("subscribe", "start"))
_OPERATION_ORDER = ("query", "operationName", "variables", "extensions")
_OPERATION_FIELDS = frozenset(_OPERATION_ORDER)
_OP_KEYWORDS = frozenset(("query", "mutation", "subscription"))

# The usual document: the operation first, named.
_OP_HEAD = re.compile(r"[\s,\ufeff]*(?:query|mutation|subscription)[\s,]+([_A-Za-z][_0-9A-Za-z]*)")
# Tokens outside selection sets (ignored: whitespace, commas, comments; strings kept whole).
_TOP = re.compile(
    r'[\s,\ufeff]+|#[^\n\r]*|"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n\r]|\\.)*"'
    r"|([_A-Za-z][_0-9A-Za-z]*)|(\{)|[^\s]",
)
# A selection set is skipped in large chunks: only braces outside strings/comments count.
_BLOCK = re.compile(r'[^"{}#]+|"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n\r]|\\.)*"|#[^\n\r]*|(\{)|(\})|"')
_MAX_TOP_TOKENS = 4096


def operation_name(query):
    """Name of the first operation defined in a GraphQL document, or None if anonymous.

    Not a parser: it reads the definitions' heads and skips selection sets by brace counting,
    so it is linear and cheap; a document with more than a few thousand top-level tokens
    (never a real one) is given up on.
    """
    m = _OP_HEAD.match(query)
    if m is not None:
        return m.group(1)
    pos = 0
    n = len(query)
    after_keyword = skip_name = False
    for _ in range(_MAX_TOP_TOKENS):
        if pos >= n:
            return None
        m = _TOP.match(query, pos)
        pos = m.end()
        name, brace = m.group(1), m.group(2)
        if name is not None:
            if after_keyword:
                return name
            if skip_name:  # a fragment's name, which may be spelled "query"
                skip_name = False
            elif name in _OP_KEYWORDS:
                after_keyword = True
            elif name == "fragment":
                skip_name = True
        elif brace is not None:
            if after_keyword:
                return None  # query { ... }: anonymous
            pos = _skip_block(query, pos)
            if pos < 0:
                return None
        elif after_keyword and m.group(0)[0] in "(@":
            return None  # query ($v: T) / query @dir: anonymous
    return None


def _skip_block(query, pos):
    level = 1
    while level:
        m = _BLOCK.match(query, pos)
        if m is None:
            return -1
        pos = m.end()
        if m.group(1) is not None:
            level += 1
        elif m.group(2) is not None:
            level -= 1
    return pos


def _operation(payload):
    """The operation a subscribe / start payload runs: its operationName, else the name of the
    first operation in its query; None for an anonymous operation."""
    name = payload.get("operationName")
    if type(name) is str and name:
        return name
    query = payload.get("query")
    if type(query) is str:
        return operation_name(query)
    return None


def _event(obj, mtype):
    """``mtype`` is the message type when it is a string, else None."""
    if mtype in _OPERATION_TYPES:
        payload = obj.get("payload")
        if type(payload) is dict:
            name = payload.get("operationName")
            if type(name) is str and name:
                return name
            query = payload.get("query")
            if type(query) is str:
                name = operation_name(query)
                if name is not None:
                    return name
    return mtype


@implementer(IDecoder)
class GraphQLWSDecoder:
    """graphql-transport-ws and subscriptions-transport-ws messages."""

    name = "graphqlws"

    def sniff_json(self, obj):
        if type(obj) is not dict:
            return False
        mtype = obj.get("type")
        if type(mtype) is not str or mtype not in TYPES:
            return False
        if mtype in _CONNECTION_TYPES:
            return True
        payload = obj.get("payload")
        return type(payload) is dict and "query" in payload

    def decode(self, payload, is_binary, limits, state):
        return json_message(self, payload, is_binary, limits, state)

    def decode_json(self, text, obj, limits, state, error):
        ctx = Ctx(limits)
        obj = unwrap(ctx, obj)
        event = None
        try:
            if type(obj) is not dict:
                error = error or "graphql-ws message is not an object"
                walk(ctx, obj, "graphql", 0)
                return ctx.result(self.name, None, text, error)
            mtype = obj.get("type")
            if type(mtype) is not str:
                mtype = None
            if mtype not in TYPES:
                error = error or "unknown graphql-ws message type"
            event = _event(obj, mtype)
            payload = obj.get("payload")
            if mtype in _OPERATION_TYPES:
                if type(payload) is dict:
                    variables = payload.get("variables")
                    ctx.op("graphql.operationName", _operation(payload), {} if variables is None else variables,
                           "graphql.variables")
                else:
                    ctx.op("graphql.operationName", None, NOARGS, "graphql.variables")
            if mtype in _OPERATION_TYPES and type(payload) is dict:
                walk_members(ctx, obj, "graphql", 0, ("payload",))
                if ctx.max_depth < 2:
                    ctx.trunc("depth")
                else:
                    for k in _OPERATION_ORDER:
                        if k in payload:
                            walk(ctx, payload[k], "graphql." + k, 2)
                    if not payload.keys() <= _OPERATION_FIELDS:
                        walk_members(ctx, payload, "graphql.payload", 1, _OPERATION_FIELDS)
            else:
                walk_members(ctx, obj, "graphql", 0)
        except Stop:
            pass
        return ctx.result(self.name, event, text, error)


DECODERS = [GraphQLWSDecoder()]
SUBPROTOCOLS = {"graphql-transport-ws": "graphqlws", "graphql-ws": "graphqlws"}
