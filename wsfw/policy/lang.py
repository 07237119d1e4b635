"""The ``when =`` condition language of rules: a small hand-written lexer, parser and compiler.

Grammar (keywords are case-insensitive)::

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | test
    test   := field "==" value | field "!=" value
            | field ("<" | "<=" | ">" | ">=") number
            | field ["not"] "in" list-or-value
            | field ("prefix" | "suffix" | "contains" | "matches") string
            | field "is" ["not"] type
            | field "exists"
    field  := name | prefix ":" argument | "len" "(" field ")"
    list   := "[" value ("," value)* [","] "]"
    value  := "double-quoted" (JSON escapes) | 'single-quoted' (raw) | bare-word

A field usually has several values (every decoded parameter a glob matches, every operation
of a batched message, every occurrence of a header); a test holds when at least one value
passes. ``!=`` and ``not in`` are the negations of ``==`` and ``in``: true when no value is
equal (also when the field has no value at all).

Compiled tests return a *witness* (the parameter path or field that satisfied them) or None;
the witness of the whole expression is what the audit line names as the matched param.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import json
import re


__all__ = ["ParseError", "FIELDS", "PREFIXED", "POST_FIELDS", "Expr", "parse"]

KEYWORDS = frozenset(("and", "or", "not", "in", "is", "prefix", "suffix", "contains", "matches", "exists"))
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
STRING_OPS = ("prefix", "suffix", "contains", "matches")

#: Plain fields: name -> kind ("str", "num" or "ip").
FIELDS = {
    "event": "str",
    "socketio.event": "str",
    "socketio.namespace": "str",
    "signalr.target": "str",
    "stomp.destination": "str",
    "wamp.procedure": "str",
    "wamp.topic": "str",
    "graphql.operationName": "str",
    "jsonrpc.method": "str",
    "framing": "str",
    "client": "ip",
    "origin": "str",
    "subprotocol": "str",
    "path": "str",
    "query": "str",
    "size": "num",
    "detector": "str",
    "signature": "str",
    "rule_id": "str",
    "score": "num",
    "inspector": "str",
}
#: Fields that take an argument after a colon: ``param:"glob"``, ``header:origin`` ...
PREFIXED = ("param", "header", "cookie", "query")
#: Fields known only after the detectors ran: rules using them run after detection.
POST_FIELDS = frozenset(("detector", "signature", "rule_id", "score", "inspector"))
#: Framework fields whose values are operation names (wsfw.decoders.Op.field).
OP_FIELDS = frozenset(("socketio.event", "signalr.target", "stomp.destination", "wamp.procedure", "wamp.topic",
                       "graphql.operationName", "jsonrpc.method"))
TYPES = ("integer", "number", "boolean", "null", "empty", "ascii", "uuid")

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_INTEGER = re.compile(r"-?[0-9]+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_TYPE_TESTS = {
    "integer": lambda v: _INTEGER.match(v) is not None,
    "number": lambda v: _NUMBER.match(v) is not None,
    "boolean": lambda v: v == "true" or v == "false",
    "null": lambda v: v == "null",
    "empty": lambda v: v == "",
    "ascii": lambda v: v.isascii(),
    "uuid": lambda v: _UUID.match(v) is not None,
}
#: Characters that end a bare word.
_STOP = frozenset(" \t\r\n()[],\"'=!<>")


class ParseError(ValueError):
    """A bad expression: ``message`` and the character offset it points at."""

    def __init__(self, message: str, pos: int | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos

    def where(self, text: str) -> str:
        """``message`` plus the line/column and the text it points at."""
        if self.pos is None:
            return self.message
        line = text.count("\n", 0, self.pos) + 1
        start = text.rfind("\n", 0, self.pos) + 1
        column = self.pos - start + 1
        near = text[self.pos:self.pos + 30].split("\n", 1)[0]
        at = f"line {line}, column {column}" if "\n" in text.strip() else f"column {column}"
        return f"{self.message} (at {at}: {near!r})" if near else f"{self.message} (at {at}: end of text)"


# -- lexer ---------------------------------------------------------------------


class Token:
    __slots__ = ("kind", "text", "value", "pos", "end")

    def __init__(self, kind, text, value, pos, end):
        self.kind = kind  # "word" | "string" | "op" | "(" | ")" | "[" | "]" | "," | "eof"
        self.text = text
        self.value = value
        self.pos = pos
        self.end = end

    def is_keyword(self, *words):
        return self.kind == "word" and self.value.lower() in words


def _found(token) -> str:
    return repr(token.text) if token.text else "the end"


def lex(text: str) -> list[Token]:
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c in "()[],":
            tokens.append(Token(c, c, c, i, i + 1))
            i += 1
            continue
        two = text[i:i + 2]
        if two in ("==", "!=", "<=", ">="):
            tokens.append(Token("op", two, two, i, i + 2))
            i += 2
            continue
        if c in "<>":
            tokens.append(Token("op", c, c, i, i + 1))
            i += 1
            continue
        if c == "=" or c == "!":
            raise ParseError(f"{c!r} is not an operator (did you mean '==' or '!='?)", i)
        if c == '"':
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == '"':
                    break
                j += 1
            if j >= n:
                raise ParseError("unterminated string (a double-quoted string ends with \")", i)
            try:
                value = json.loads(text[i:j + 1])
            except ValueError as e:
                raise ParseError(f"bad escape in a double-quoted string ({e.args[0].split(':')[0]}); "
                                 "use 'single quotes' for backslashes taken literally", i) from None
            tokens.append(Token("string", text[i:j + 1], value, i, j + 1))
            i = j + 1
            continue
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise ParseError("unterminated string (a single-quoted string ends with ')", i)
            tokens.append(Token("string", text[i:j + 1], text[i + 1:j], i, j + 1))
            i = j + 1
            continue
        # A bare word; brackets inside it (socketio.args[0]) are part of it while balanced.
        j = i
        depth = 0
        while j < n:
            d = text[j]
            if d == "[":
                depth += 1
            elif d == "]":
                if depth == 0:
                    break
                depth -= 1
            elif d in _STOP and not (depth and d == ","):
                break
            j += 1
        tokens.append(Token("word", text[i:j], text[i:j], i, j))
        i = j
    tokens.append(Token("eof", "", None, n, n))
    return tokens


# -- syntax tree -----------------------------------------------------------------


class Field:
    """A field reference: ``name`` (a FIELDS key or a PREFIXED one), ``arg`` for prefixed
    fields, ``length`` for ``len(...)``."""

    __slots__ = ("name", "arg", "length", "pos")

    def __init__(self, name, arg=None, length=False, pos=0):
        self.name = name
        self.arg = arg
        self.length = length
        self.pos = pos

    @property
    def kind(self) -> str:
        if self.length:
            return "num"
        if self.name in PREFIXED:
            return "str"
        return FIELDS[self.name]

    @property
    def label(self) -> str:
        base = f"{self.name}:{self.arg}" if self.arg is not None else self.name
        return f"len({base})" if self.length else base


class Test:
    __slots__ = ("field", "op", "arg", "pos")

    def __init__(self, field, op, arg, pos):
        self.field = field
        self.op = op  # "==", "<", ..., "in", "prefix", "suffix", "contains", "matches", "is", "exists"
        self.arg = arg  # the compiled literal: str, number, tuple, pattern, type name
        self.pos = pos


class And:
    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts


class Or:
    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts


class Not:
    __slots__ = ("part",)

    def __init__(self, part):
        self.part = part


# -- parser ----------------------------------------------------------------------


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = lex(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self):
        if self.peek().kind == "eof":
            raise ParseError("empty condition (leave `when` out to match every message)", 0)
        node = self.parse_or()
        token = self.peek()
        if token.kind != "eof":
            if token.kind == ")":
                raise ParseError("unbalanced ')'", token.pos)
            raise ParseError(f"expected 'and', 'or' or the end, found {_found(token)}", token.pos)
        return node

    def parse_or(self):
        parts = [self.parse_and()]
        while self.peek().is_keyword("or"):
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(parts)

    def parse_and(self):
        parts = [self.parse_not()]
        while self.peek().is_keyword("and"):
            self.take()
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else And(parts)

    def parse_not(self):
        token = self.peek()
        if token.is_keyword("not"):
            self.take()
            return Not(self.parse_not())
        if token.kind == "(":
            self.take()
            node = self.parse_or()
            close = self.take()
            if close.kind != ")":
                raise ParseError(f"expected ')' to close the '(' at column {token.pos + 1}, found "
                                 f"{_found(close)}", close.pos)
            return node
        return self.parse_test()

    def parse_field(self) -> Field:
        token = self.take()
        if token.kind != "word" or token.value.lower() in KEYWORDS:
            raise ParseError(f"expected a field (event, param:\"glob\", header:NAME, client, ...), found "
                             f"{_found(token)}", token.pos)
        word = token.value
        if word == "len" and self.peek().kind == "(":
            self.take()
            inner = self.parse_field()
            if inner.length:
                raise ParseError("len(len(...)) makes no sense", token.pos)
            if inner.kind != "str":
                raise ParseError(f"len() takes a text field; {inner.label} is a "
                                 f"{'number' if inner.kind == 'num' else 'client address'}", inner.pos)
            close = self.take()
            if close.kind != ")":
                raise ParseError("expected ')' after the field in len(...)", close.pos)
            inner.length = True
            inner.pos = token.pos
            return inner
        if ":" in word:
            prefix, _, arg = word.partition(":")
            if prefix not in PREFIXED:
                near = difflib.get_close_matches(prefix, PREFIXED, n=1)
                hint = f" (did you mean {near[0]}:?)" if near else f" (known: {', '.join(p + ':' for p in PREFIXED)})"
                raise ParseError(f"unknown field prefix {prefix + ':'!r}{hint}", token.pos)
            if arg == "":
                nxt = self.peek()
                if nxt.kind == "string" and nxt.pos == token.end:
                    arg = self.take().value
                elif nxt.kind == "word" and nxt.pos == token.end:
                    arg = self.take().value
            if arg == "":
                raise ParseError(f"{prefix}: needs a name, e.g. {prefix}:\"{_EXAMPLES[prefix]}\"", token.pos)
            if prefix == "header":
                arg = arg.lower()
            return Field(prefix, arg, pos=token.pos)
        if word in PREFIXED and word != "query":
            raise ParseError(f"{word} needs a name: {word}:\"{_EXAMPLES[word]}\"", token.pos)
        if word not in FIELDS:
            near = difflib.get_close_matches(word, list(FIELDS) + [p + ":" for p in PREFIXED], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ParseError(f"unknown field {word!r}{hint}", token.pos)
        return Field(word, pos=token.pos)

    def value(self, what="a value") -> Token:
        token = self.take()
        if token.kind == "string" or (token.kind == "word" and token.value.lower() not in KEYWORDS):
            return token
        raise ParseError(f"expected {what}, found {_found(token)} (quote it if it is a value)", token.pos)

    def parse_test(self):
        field = self.parse_field()
        token = self.take()
        pos = token.pos
        if token.kind == "op":
            op = token.value
            literal = self.value("a number" if op in ("<", "<=", ">", ">=") else "a value")
            if op in ("==", "!="):
                test = Test(field, "==", self.literal(field, literal), pos)
                return Not(test) if op == "!=" else test
            if field.kind == "ip":
                raise ParseError(f"{field.label} is a client address: compare it with ==, != or in "
                                 "(addresses and CIDR networks)", pos)
            return Test(field, op, self.number(literal), pos)
        if token.is_keyword("not"):
            nxt = self.take()
            if not nxt.is_keyword("in"):
                raise ParseError(f"expected 'in' after 'not' (write `not {field.label} ...` to negate a test)",
                                 nxt.pos)
            return Not(Test(field, "in", self.members(field), pos))
        if token.is_keyword("in"):
            return Test(field, "in", self.members(field), pos)
        if token.is_keyword(*STRING_OPS):
            op = token.value.lower()
            if field.kind != "str":
                raise ParseError(f"{field.label} is {_KIND_NAMES[field.kind]}: '{op}' compares text; use ==, in"
                                 f"{', <, >' if field.kind == 'num' else ''}", pos)
            literal = self.value("a string")
            if op == "matches":
                try:
                    pattern = re.compile(literal.value)
                except re.error as e:
                    raise ParseError(f"bad regular expression: {e}", literal.pos) from None
                return Test(field, op, pattern, pos)
            return Test(field, op, literal.value, pos)
        if token.is_keyword("is"):
            negate = False
            name = self.take()
            if name.is_keyword("not"):
                negate = True
                name = self.take()
            if name.kind != "word" or name.value.lower() not in TYPES:
                raise ParseError(f"expected a type after 'is' ({', '.join(TYPES)}), found {_found(name)}",
                                 name.pos)
            if field.kind != "str":
                raise ParseError(f"{field.label} is {_KIND_NAMES[field.kind]}: 'is' tests the type of text values",
                                 pos)
            test = Test(field, "is", name.value.lower(), pos)
            return Not(test) if negate else test
        if token.is_keyword("exists"):
            return Test(field, "exists", None, pos)
        raise ParseError(f"expected an operator after {field.label} (==, !=, <, <=, >, >=, in, not in, prefix, "
                         f"suffix, contains, matches, is, exists), found {_found(token)}", pos)

    def members(self, field):
        token = self.peek()
        if token.kind != "[":
            return (self.literal(field, self.value()),)
        self.take()
        items = []
        while True:
            token = self.peek()
            if token.kind == "]":
                self.take()
                break
            if token.kind == "eof":
                raise ParseError("unterminated list (expected ']')", token.pos)
            items.append(self.literal(field, self.value()))
            if self.peek().kind == ",":
                self.take()
        if not items:
            raise ParseError("empty list", token.pos)
        return tuple(items)

    def literal(self, field, token):
        """A value compared with ``field``: an address/network for client, a number for numbers."""
        if field.kind == "ip":
            try:
                if "/" in token.value:
                    return ipaddress.ip_network(token.value, strict=False)
                return ipaddress.ip_network(token.value)
            except ValueError:
                raise ParseError(f"{token.value!r} is not an IP address or CIDR network", token.pos) from None
        if field.kind == "num":
            return self.number(token)
        return token.value

    def number(self, token):
        if _NUMBER.match(token.value) is None:
            raise ParseError(f"{token.value!r} is not a number", token.pos)
        return float(token.value)


_EXAMPLES = {"param": "socketio.args[0].text", "header": "origin", "cookie": "session", "query": "token"}
_KIND_NAMES = {"num": "a number", "ip": "a client address", "str": "text"}


def parse(text: str):
    """The syntax tree of ``text``; raises ParseError."""
    return _Parser(text).parse()


# -- analysis ----------------------------------------------------------------------


def fields_of(node) -> set[str]:
    if isinstance(node, Test):
        return {node.field.name}
    if isinstance(node, Not):
        return fields_of(node.part)
    out = set()
    for part in node.parts:
        out |= fields_of(part)
    return out


def index_names(node) -> tuple[str, ...] | None:
    """Operation names every match must carry (``event == "x"``, ``signalr.target in [...]``
    at the top level of the condition), or None: the rule is then a candidate for every message."""
    parts = node.parts if isinstance(node, And) else [node]
    for part in parts:
        if (isinstance(part, Test) and not part.field.length and part.op in ("==", "in")
                and (part.field.name == "event" or part.field.name in OP_FIELDS)):
            return (part.arg,) if part.op == "==" else tuple(part.arg)
    return None


# -- compiler ------------------------------------------------------------------------


def _num(value):
    if type(value) is float or type(value) is int:
        return value
    if _NUMBER.match(value) is None:
        return None
    return float(value)


def _predicate(test: Test):
    """``value -> bool`` for one value of the field (already of the field's kind)."""
    op, arg, kind = test.op, test.arg, test.field.kind
    if kind == "ip":
        if op == "==":
            network = arg
            return lambda v: v is not None and v in network
        networks = arg
        return lambda v: v is not None and any(v in n for n in networks)
    if op == "==":
        if kind == "num":
            return lambda v: v == arg
        return lambda v: v == arg
    if op == "in":
        members = frozenset(arg)
        return lambda v: v in members
    if op in ("<", "<=", ">", ">="):
        import operator
        compare = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]
        if kind == "num":
            return lambda v: compare(v, arg)

        def numeric(v):
            n = _num(v)
            return n is not None and compare(n, arg)
        return numeric
    if op == "prefix":
        return lambda v: v.startswith(arg)
    if op == "suffix":
        return lambda v: v.endswith(arg)
    if op == "contains":
        return lambda v: arg in v
    if op == "matches":
        search = arg.search
        return lambda v: search(v) is not None
    if op == "is":
        return _TYPE_TESTS[arg]
    raise AssertionError(op)


def _witness_rank(node) -> int:
    """0: a param test (names the parameter), 1: another positive test on the message, 2: the rest."""
    if _names_param(node):
        return 0
    if isinstance(node, Test) and not _per_connection(node):
        return 1
    return 2


def _names_param(node) -> bool:
    """Whether ``node``'s witness is a parameter path (a positive test on param:)."""
    if isinstance(node, Test):
        return node.field.name == "param"
    if isinstance(node, (And, Or)):
        return any(_names_param(p) for p in node.parts)
    return False


#: Fields whose values are fixed for a connection (they come from its handshake).
CONNECTION_FIELDS = frozenset(("client", "origin", "header", "cookie", "query", "path", "subprotocol"))
_memo_keys = itertools.count()


def _per_connection(node) -> bool:
    return fields_of(node) <= CONNECTION_FIELDS


def compile_node(node, getters, memo=True):
    """A ``msg -> witness | None`` function for ``node``; ``getters(field)`` gives the
    ``msg -> iterable of (label, value)`` function of a field.

    A subexpression on handshake fields only (client, origin, header:, cookie:, query,
    path, subprotocol) has one result per connection: it is evaluated once and remembered
    in the connection's state (``m.state.memo``)."""
    if memo and _per_connection(node):
        inner = compile_node(node, getters, False)
        key = next(_memo_keys)

        def remembered(m):
            cache = m.state.memo
            try:
                return cache[key]
            except KeyError:
                w = cache[key] = inner(m)
                return w
        return remembered
    if isinstance(node, And):
        # The witness of a conjunction, what the audit line names: the parameter a param test
        # matched, else the first positive test on the message, else the first part's
        # (``signalr.target == "X" and not client in [...]`` names signalr.target). Parts on
        # handshake fields are evaluated first: remembered per connection, they are the cheapest.
        ranked = [(_witness_rank(p), i, p) for i, p in enumerate(node.parts)]
        ordered = sorted(ranked, key=lambda r: (not _per_connection(r[2]), r[1])) if memo else ranked
        parts = [(compile_node(p, getters, memo), (rank, i)) for rank, i, p in ordered]

        def all_of(m):
            witness = None
            best = None
            for part, rank in parts:
                w = part(m)
                if w is None:
                    return None
                if best is None or rank < best:
                    witness = w
                    best = rank
            return witness
        return all_of
    if isinstance(node, Or):
        ordered = sorted(node.parts, key=lambda p: not _per_connection(p)) if memo else node.parts
        parts = [compile_node(p, getters, memo) for p in ordered]

        def any_of(m):
            for part in parts:
                w = part(m)
                if w is not None:
                    return w
            return None
        return any_of
    if isinstance(node, Not):
        part = compile_node(node.part, getters, memo)
        label = node.part.field.label if isinstance(node.part, Test) else "not"

        def negated(m):
            return label if part(m) is None else None
        return negated
    get = getters(node.field)
    if node.op == "exists":
        def exists(m):
            for label, _ in get(m):
                return label
            return None
        return exists
    pred = _predicate(node)
    if node.field.length:
        inner = pred

        def pred(v):
            return inner(float(len(v)))

    def test(m):
        for label, value in get(m):
            if pred(value):
                return label
        return None
    return test


class Expr:
    """A parsed, compiled condition: ``match(msg)`` is the witness (a non-empty string) or None."""

    __slots__ = ("text", "tree", "fields", "match", "names")

    def __init__(self, text: str, getters):
        self.text = text
        self.tree = parse(text)
        self.fields = fields_of(self.tree)
        self.names = index_names(self.tree)
        self.match = compile_node(self.tree, getters)
