"""The positive model of a route: which operations a client may send, and their arguments' shape.

A route's model lists operation names (Socket.IO events, SignalR targets, STOMP destinations,
WAMP procedures and topics, GraphQL operation names, JSON-RPC methods: ``Decoded.ops``), each
optionally with a JSON Schema (draft 2020-12) for its arguments. Every client message is
checked before the detectors:

- a framework control message (a handshake, ping, CONNECT, ack, ``connection_init``, a
  completion...) carries no operation and passes;
- each operation of the message must be listed (an exact name, or a ``*`` pattern), else the
  message is *unknown*, as is a message the model cannot read: one in a framing without
  operations (plain text or JSON, MQTT, Phoenix...), one that did not decode, one whose
  decoding hit a bound (its operations may not all have been seen). ``unknown = block | log |
  allow`` says what happens then;
- the arguments of a listed operation that has a schema must validate, else the message is
  blocked. What is validated, per framework: the Socket.IO arguments array (after the event
  name; binary attachments as their ``{"_placeholder": true, "num": N}`` objects), the SignalR
  ``arguments`` array, the GraphQL ``variables`` object (``{}`` when absent), the JSON-RPC
  ``params`` (``null`` when absent), the STOMP SEND body (the parsed JSON when the frame's
  content-type is JSON, else the body text), the WAMP ``{"args": [...], "kwargs": {...}}``.
  Operations without arguments (STOMP SUBSCRIBE, WAMP SUBSCRIBE / REGISTER) are only checked
  against the list.
"""

from __future__ import annotations

import reprlib

from wsfw.decoders import NOARGS
from wsfw.decoders._walk import Partial, TooDeep, is_plain_key, key_path
from wsfw.inspection import Finding
from wsfw.inspection.audit import escape

from .glob import NameGlob, has_wildcards

__all__ = ["MODEL_FORMATS", "Entry", "Model", "to_json"]

#: Decoded formats whose decoders report operations (Decoded.ops). ``engineio`` is Socket.IO's
#: transport layer: pings, upgrades, noops, all control.
MODEL_FORMATS = frozenset(("socketio", "engineio", "signalr", "stomp", "wamp", "graphqlws", "jsonrpc"))
UNKNOWN_ACTIONS = ("block", "log", "allow")
#: Decoding bounds after which a message's operations or arguments may be incomplete. The
#: depth bound is not one: operations sit at the top of a message, and containers below the
#: bound become placeholders that no schema type accepts.
_INCOMPLETE = frozenset(("params", "size"))
_REASON_MAX = 240
_ENTRY_MAX = 10_000  # JSON values converted per validation (bounded anyway by the decoder's limits)


class Entry:
    """One allowed operation name, with its compiled validator (or None).

    ``fast`` (wsfw.policy.fastschema), when the schema allows one, answers "valid" without
    jsonschema's machinery; jsonschema still decides, and explains, every failure."""

    __slots__ = ("name", "validator", "fast", "where")

    def __init__(self, name: str, validator=None, where: str = "", fast=None):
        self.name = name
        self.validator = validator
        self.fast = fast
        self.where = where  # "file: [section]", for messages


class Model:
    """The compiled positive model of one route."""

    __slots__ = ("route", "unknown", "exact", "patterns", "where")

    def __init__(self, route: str, unknown: str, entries: list[Entry], where: str = ""):
        self.route = route
        self.unknown = unknown
        self.where = where
        self.exact: dict[str, Entry] = {}
        self.patterns: list[tuple[NameGlob, Entry]] = []
        for entry in entries:
            if has_wildcards(entry.name):
                self.patterns.append((NameGlob(entry.name), entry))
            else:
                self.exact[entry.name] = entry

    def lookup(self, name: str | None) -> Entry | None:
        if name is None:
            return None
        entry = self.exact.get(name)
        if entry is not None:
            return entry
        for glob, entry in self.patterns:
            if glob.match(name):
                return entry
        return None

    def check(self, decoded) -> Finding | None:
        """None when the message fits the model, else a Finding: a schema violation (block) first,
        then ``unknown`` for an unlisted operation or a message the model cannot read."""
        if self.unknown == "allow":  # only the schemas of listed operations matter
            return self._operations(decoded, False) if decoded.ops else None
        fmt = decoded.format
        if fmt not in MODEL_FORMATS:
            return self._unknown(f"{fmt} message: this route's positive model only admits framework operations",
                                 "unframed", None, "")
        finding = self._operations(decoded, True)
        if finding is not None:
            return finding
        if decoded.error:
            return self._unknown(f"undecodable {fmt} message ({decoded.error})", "undecodable", None, "")
        if decoded.truncated in _INCOMPLETE:
            return self._unknown(f"{fmt} message too large to check (decoding stopped at the {decoded.truncated} "
                                 "bound)", "too-large", None, "")
        return None

    def _operations(self, decoded, unknown: bool) -> Finding | None:
        """Validate the arguments of every listed operation that has a schema (the first violation
        blocks); with ``unknown``, the first unlisted operation's Finding when they all pass."""
        first_unknown = None
        incomplete = decoded.truncated in _INCOMPLETE
        for op in decoded.ops:
            entry = self.lookup(op.name)
            if entry is None:
                if unknown and first_unknown is None:
                    name = "(none)" if op.name is None else repr(op.name)
                    first_unknown = self._unknown(f"{op.field} {name} is not in the route's allow-list", "unknown",
                                                  name_path(op), op.name or "")
                continue
            if entry.validator is None or op.args is NOARGS:
                continue
            if incomplete:  # its arguments may be cut short: they cannot be vouched for
                return Finding(inspector="model", action="block", reason=f"{op.field} {op.name!r}: message too "
                               f"large to validate (decoding stopped at the {decoded.truncated} bound)"[:_REASON_MAX],
                               rules=("model-schema",), classes=("positive_model",), path=op.base)
            finding = self._validate(entry, op)
            if finding is not None:
                return finding
        return first_unknown

    def _unknown(self, reason, rule, path, excerpt) -> Finding | None:
        if self.unknown == "allow":
            return None
        return Finding(inspector="model", action=self.unknown, reason=reason[:_REASON_MAX],
                       rules=(f"model-{rule}",), classes=("positive_model",), path=path, excerpt=excerpt)

    def _validate(self, entry, op) -> Finding | None:
        instance = to_json(op.args)
        try:
            if entry.fast is not None and entry.fast(instance):
                return None
            error = next(iter(entry.validator.iter_errors(instance)), None)
        except Exception as e:  # an unresolvable $ref or a broken format checker: fail closed
            return Finding(inspector="model", action="block", reason=f"schema of {op.field} {op.name!r} could not "
                           f"be evaluated: {type(e).__name__}"[:_REASON_MAX], rules=("model-schema",),
                           classes=("positive_model",), path=op.base)
        if error is None:
            return None
        path = op.base
        for key in error.absolute_path:
            if type(key) is int:
                path += "[%d]" % key
            else:
                key = str(key)
                path = path + "." + key if is_plain_key(key) else key_path(path, key)
        where = "/".join(str(k) for k in error.absolute_path) or "(the arguments)"
        message = escape(error.message, 160)
        return Finding(inspector="model", action="block",
                       reason=f"{op.field} {op.name!r}: arguments violate the schema at {where}: {message}"[:_REASON_MAX],
                       rules=("model-schema",), classes=("positive_model",), path=path,
                       excerpt=_excerpt(error.instance))


def name_path(op) -> str:
    """The param path of an operation's name: ``signalr[1].target`` for ``signalr[1].arguments``."""
    prefix = op.base.rpartition(".")[0] if "." in op.base else op.base
    return f"{prefix}.{op.field.partition('.')[2]}"


def _excerpt(value) -> str:
    try:
        text = value if type(value) is str else reprlib.repr(value)
    except Exception:
        text = type(value).__name__
    return text[:120]


def to_json(value, budget=None):
    """Decoded arguments as the JSON types jsonschema knows: MessagePack/CBOR arrays (tuples)
    become lists, maps dicts with text keys, bytes text (UTF-8, else Latin-1), dates and ext
    types their text. Containers beyond the decoder's depth bound stay opaque placeholders,
    which no schema type accepts."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if budget is None:
        budget = [_ENTRY_MAX]
    budget[0] -= 1
    if budget[0] < 0:
        return TooDeep()
    if t is list:
        if all(type(x) in _SCALARS for x in value):
            return value
        return [to_json(x, budget) for x in value]
    if t is dict:
        if all(type(k) is str for k in value) and all(type(x) in _SCALARS for x in value.values()):
            return value
        return {_key(k): to_json(x, budget) for k, x in value.items()}
    if t is tuple:
        return [to_json(x, budget) for x in value]
    if t is Partial:
        return to_json(value.value, budget)
    if t is TooDeep:
        return value
    from wsfw.decoders._binparse import Map
    from wsfw.decoders._binval import _convert

    if t is Map:
        return {_key(k): to_json(x, budget) for k, x in value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        from wsfw.decoders.socketio import bytes_text
        return bytes_text(bytes(value))
    if isinstance(value, str):  # Num (a huge JSON number kept as text)
        return str(value)
    converted = _convert(value)
    return converted if type(converted) is str else to_json(converted, budget)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _key(k) -> str:
    if type(k) is str:
        return k
    if isinstance(k, (bytes, bytearray, memoryview)):
        from wsfw.decoders.socketio import bytes_text
        return bytes_text(bytes(k))
    return str(k)
