"""Bounded parameter collection: the JSON walker and the nested-encoding decoders.

Path scheme (see wsfw/decoders/__init__.py for the full description):

- object member: ``parent.key`` when the key is a plain identifier, else ``parent["key"]``
  (the key JSON-quoted, cut to 128 characters); a non-plain key is also emitted as its own
  param ``(parent["key"]<key>, key)`` so value detectors see ``$ne``, ``__proto__`` ...
- array element: ``parent[i]``
- nested encodings of a string: ``path<json>`` (then walked like JSON), ``path<url>``,
  ``path<html>``, ``path<js>`` (\\uXXXX / \\xXX escapes), ``path<b64>``.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from urllib.parse import unquote

from .base import Decoded, Op


class Stop(Exception):
    """A params or size bound was hit: stop producing params."""


class Num(str):
    """A JSON number kept as its source text (no int/float conversion, no 4300-digit limit)."""

    __slots__ = ()


class TooDeep:
    """Placeholder for a container the fallback parser did not build (beyond max_depth)."""

    __slots__ = ()


TOO_DEEP = TooDeep()


class Partial:
    """A document the fallback parser stopped building after ``max_items`` values."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

# The C scanner with default int/float parsing is the fast path; the Num scanner (numbers
# kept as text, via a Python callback) only handles ints over sys.get_int_max_str_digits().
_scan_once = json.JSONDecoder().scan_once
_scan_once_num = json.JSONDecoder(parse_int=Num, parse_float=Num).scan_once
_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = frozenset(" \t\n\r")  # "" is not in it: callers check emptiness
_UNPLAIN = frozenset(("constructor", "prototype"))
_MAX_KEY_IN_PATH = 128


def parse_json(s, max_depth, max_items=100_000):
    """Parse JSON text; returns the value, raises ValueError on malformed input.

    Very deep documents make the C parser raise RecursionError; then a linear, iterative parser
    builds the structure down to ``max_depth`` (TOO_DEEP below it) and at most ``max_items``
    values (then it returns a Partial wrapping what it built).
    """
    if len(s) > 4096 and s.count(",") > max_items:
        # Far more values than can be emitted: parse only a bounded prefix (the C parser would
        # build the whole document first, ~0.1-1 s for a few MB).
        return _deep_parse(s, max_depth, max_items)
    i = 0
    if s[:1] in _WS_CHARS:
        i = _WS.match(s, 0).end()
    try:
        obj, end = _scan_once(s, i)
    except StopIteration:
        raise ValueError("expected a JSON value") from None
    except RecursionError:
        return _deep_parse(s, max_depth, max_items)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an int longer than the int/str conversion limit
        try:
            obj, end = _scan_once_num(s, i)
        except StopIteration:
            raise ValueError("expected a JSON value") from None
        except RecursionError:
            return _deep_parse(s, max_depth, max_items)
    n = len(s)
    if end != n and _WS.match(s, end).end() != n:
        raise ValueError("extra data after JSON value")
    return obj


def json_root(text, limits):
    """The parsed document when ``text`` is a JSON object or array (leading blanks allowed),
    else None: how a message or a payload of no declared type is told apart from text."""
    c = text[:1]
    if c in _WS_CHARS:
        c = text.lstrip(" \t\r\n")[:1]
    if c != "{" and c != "[":
        return None
    try:
        return parse_json(text, limits.max_depth, 4 * limits.max_params + 64)
    except ValueError:
        return None


_TOK = re.compile(
    r"""[ \t\n\r]*(?:
      ([\[{])
    | ([\]}])
    | ([,:])
    | (")  # a string: scanned by the C scanner
    | (-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|-?Infinity)
    | (true|false|null)
    )""",
    re.X,
)
_CONST = {"true": True, "false": False, "null": None}


_SKIP = re.compile(r'[^"\[\]{}]+|"[^"\\]*(?:\\.[^"\\]*)*"|([\[{])|([\]}])', re.S)


def _deep_parse(s, max_depth, max_items):
    """Iterative, loosely validating JSON parser that does not build beyond ``max_depth``.

    Containers below ``max_depth`` are skipped with a coarse scanner (linear, few regex calls);
    after ``max_items`` values the rest of the document is dropped (returns a Partial).
    """
    pos = 0
    n = len(s)
    stack = []  # frames: [container, pending_key]
    root = _unset = object()
    match = _TOK.match
    skip_match = _SKIP.match
    items = 0
    while True:
        m = match(s, pos)
        if m is None:
            if _WS.match(s, pos).end() == n:
                break
            raise ValueError("invalid JSON token at %d" % pos)
        pos = m.end()
        op, cl, punct, st, num, const = m.groups()
        if punct is not None:
            continue
        if op is not None:
            if root is not _unset:
                raise ValueError("extra data after JSON value")
            if len(stack) < max_depth:
                stack.append([{} if op == "{" else [], None])
                continue
            # Skip this container: count brackets outside strings.
            level = 1
            while level:
                k = skip_match(s, pos)
                if k is None:
                    raise ValueError("truncated JSON")
                pos = k.end()
                if k.group(1) is not None:
                    level += 1
                elif k.group(2) is not None:
                    level -= 1
            value = TOO_DEEP
        elif cl is not None:
            if not stack:
                raise ValueError("unbalanced %r" % cl)
            value = stack.pop()[0]
            if (cl == "}") != (type(value) is dict):
                raise ValueError("mismatched %r" % cl)
        elif st is not None:
            try:
                value, pos = _scan_once(s, pos - 1)
            except StopIteration:
                raise ValueError("invalid JSON string at %d" % pos) from None
        elif num is not None:
            value = Num(num)
        else:
            value = _CONST[const]
        if stack:
            items += 1
            if items > max_items:
                while len(stack) > 1:
                    _place(stack[:-1], stack.pop()[0])
                return Partial(stack[0][0])
            _place(stack, value)
        elif root is _unset:
            root = value
        else:
            raise ValueError("extra data after JSON value")
    if stack or root is _unset:
        raise ValueError("truncated JSON")
    return root


def _place(stack, value):
    frame = stack[-1]
    c = frame[0]
    if type(c) is list:
        c.append(value)
    elif frame[1] is None:
        if type(value) is not str:
            raise ValueError("object key is not a string")
        frame[1] = value
    else:
        c[frame[1]] = value
        frame[1] = None


def is_plain_key(k):
    """True for keys shown as ``.key`` in paths and not emitted as their own param."""
    return k.isascii() and k.isidentifier() and k[0] != "_" and k not in _UNPLAIN


_SCALAR_TEXT = {True: "true", False: "false", None: "null"}


def flat_params(prefix, obj, limits):
    """The params ``walk`` would emit for a flat object of scalars with plain keys (most chat
    messages: ``{"type": "chat", "text": "..."}``), built without the bounded collector, or
    None when ``obj`` is anything else or a bound could be reached (then walk it)."""
    if type(obj) is not dict or limits.max_depth < 1 or len(obj) > limits.max_params or len(obj) > 64:
        return None
    params = []
    budget = limits.max_expanded_bytes
    for k, v in obj.items():
        suffix = _PLAIN_SUFFIX.get(k)
        if suffix is None:
            suffix = _plain_suffix(k)
        if not suffix:
            return None
        v = flat_text(v, limits.max_depth > 1)
        if v is None:
            return None
        budget -= len(v)
        if budget < 0:
            return None
        params.append((prefix + suffix, v))
    return params


def flat_text(v, nesting):
    """The text ``walk`` emits for a scalar of a flat object (the string itself; a number,
    boolean or null spelled as JSON), or None for anything else, or for a string it would
    also decode further (``nesting``: nested encodings are followed at this depth)."""
    t = type(v)
    if t is str:
        return None if nesting and len(v) > 2 and may_nest(v) else v
    if t is int or t is Num:
        return str(v)
    if t is float:
        return repr(v)
    if v is True or v is False or v is None:
        return _SCALAR_TEXT[v]
    return None


def path_rule_key(k):
    """Whether a parameter path with key ``k`` passes the gate of the detector's path rules
    (prototype pollution and NoSQL operator keys: ``$``, ``__proto__``, ``prototype``; see
    wsfw.detect.Engine.scan), so only full decoding and the detector may judge it."""
    return "$" in k or "__proto__" in k or "prototype" in k


#: key -> ".key" for plain keys, "" for the others: keys repeat from message to message.
_PLAIN_SUFFIX: dict[str, str] = {}
_PLAIN_SUFFIX_MAX = 4096


def _plain_suffix(k):
    suffix = "." + k if is_plain_key(k) else ""
    if len(k) <= 64:
        if len(_PLAIN_SUFFIX) >= _PLAIN_SUFFIX_MAX:
            _PLAIN_SUFFIX.clear()
        _PLAIN_SUFFIX[k] = suffix
    return suffix


def key_path(path, k):
    """Path of member ``k`` of the object at ``path``."""
    if len(k) > _MAX_KEY_IN_PATH:
        k = k[:_MAX_KEY_IN_PATH] + "..."
    return "%s[%s]" % (path, json.dumps(k, ensure_ascii=False))


class Ctx:
    """Bounded collector of (path, value) params for one message."""

    __slots__ = (
        "params",
        "max_params",
        "max_depth",
        "budget",
        "nodes",
        "truncated",
        "placeholders",
        "ops",
    )

    def __init__(self, limits):
        self.params = []
        self.max_params = limits.max_params
        self.max_depth = limits.max_depth
        self.budget = limits.max_expanded_bytes
        # JSON values visited: bounds walking containers that emit nothing ([[],[],...]).
        self.nodes = 4 * limits.max_params + 64
        self.truncated = None
        self.placeholders = None  # Socket.IO attachment num -> path, when collecting
        self.ops = None  # the message's operations (base.Op), when it carries any

    def add(self, path, value):
        if len(self.params) >= self.max_params:
            if self.truncated is None:
                self.truncated = "params"
            raise Stop
        n = len(value)
        if n > self.budget:
            self.params.append((path, value[: self.budget]))
            self.budget = 0
            if self.truncated is None:
                self.truncated = "size"
            raise Stop
        self.budget -= n
        self.params.append((path, value))

    def op(self, field, name, args, base):
        """Record one application operation (see base.Op). Decoders call this before walking
        the arguments, so a bound hit while walking them cannot hide the operation."""
        op = Op(field, name, args, base)
        if self.ops is None:
            self.ops = [op]
        else:
            self.ops.append(op)

    def trunc(self, what):
        if self.truncated is None:
            self.truncated = what

    def result(self, fmt, event, raw, error=None):
        """Build the Decoded, appending ("raw", raw) unless it equals the single decoded value."""
        params = self.params
        if not (len(params) == 1 and params[0][1] == raw):
            params.append(("raw", raw))
        ops = self.ops
        return Decoded(fmt, event, tuple(params), self.truncated, error, tuple(ops) if ops else ())


def walk(ctx, v, path, depth):
    """Emit params for JSON value ``v`` at ``path``; ``depth`` containers/encodings enclose it."""
    ctx.nodes -= 1
    if ctx.nodes < 0:
        ctx.trunc("params")
        raise Stop
    t = type(v)
    if t is str:
        ctx.add(path, v)
        if depth < ctx.max_depth and len(v) > 2 and may_nest(v):
            nested(ctx, v, path, depth)
    elif t is dict:
        if depth >= ctx.max_depth:
            ctx.trunc("depth")
            return
        if ctx.placeholders is not None and v.get("_placeholder") is True:
            num = v.get("num")
            if type(num) is int and 0 <= num < 1_000_000_000:
                # socket.io-parser replaces the whole object by the attachment: the
                # binary message is emitted at this path + "<binary>".
                ctx.placeholders[num] = path
                return
        depth += 1
        for k, x in v.items():
            suffix = _PLAIN_SUFFIX.get(k)
            if suffix is None:
                suffix = _plain_suffix(k)
            if suffix:
                p = path + suffix
            else:
                p = key_path(path, k)
                ctx.add(p + "<key>", k)
            walk(ctx, x, p, depth)
    elif t is list:
        if depth >= ctx.max_depth:
            ctx.trunc("depth")
            return
        depth += 1
        i = 0
        for x in v:
            walk(ctx, x, "%s[%d]" % (path, i), depth)
            i += 1
    elif t is int:
        ctx.add(path, str(v))
    elif t is float:
        ctx.add(path, repr(v))
    elif t is Num:
        ctx.add(path, str(v))
    elif v is True:
        ctx.add(path, "true")
    elif v is False:
        ctx.add(path, "false")
    elif v is None:
        ctx.add(path, "null")
    elif v is TOO_DEEP:
        ctx.trunc("depth")
    elif t is Partial:
        ctx.trunc("params")
        ctx.nodes += 1
        walk(ctx, v.value, path, depth)
    else:  # pragma: no cover - json only produces the types above
        ctx.add(path, str(v))


_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_JSESC = re.compile(r"\\u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})|\\u\{([0-9A-Fa-f]{1,6})\}")
_SURR = re.compile("[\ud800-\udfff]")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_B64_URLSAFE = bytes.maketrans(b"-_", b"+/")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_JSON_START = frozenset("{[")
_NEST_FIRST = _JSON_START | _WS_CHARS  # may_nest's first characters: JSON, or blanks around it


def _js_repl(m):
    h = m.group(1) or m.group(2) or m.group(3)
    c = int(h, 16)
    return chr(c) if c < 0x110000 else "\ufffd"


def js_unescape(s):
    """Decode \\uXXXX, \\u{X...} and \\xXX escapes; pairs surrogates, replaces lone ones."""
    r = _JSESC.sub(_js_repl, s)
    if _SURR.search(r):
        r = r.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return r


def b64_text(s):
    """Decode a base64 / base64url blob to printable UTF-8 text, else None."""
    b = s.rstrip("=")
    if len(b) % 4 == 1:
        return None
    b = b.encode("ascii").translate(_B64_URLSAFE)
    b += b"=" * (-len(b) % 4)
    try:
        text = base64.b64decode(b, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not text or _CTRL.search(text) or _SURR.search(text):
        return None
    return text


def may_nest(s):
    """Cheap necessary condition for nested(): most strings (prose, names, ids) fail it
    without a function call or regex per encoding."""
    return (s[0] in _NEST_FIRST or s[-1] in "]}" or "%" in s or "&" in s or "\\" in s
            or (len(s) >= 16 and " " not in s))


def nested(ctx, s, path, depth, seen=None):
    """Emit the nested decodings of string ``s`` (which is already emitted at ``path``).

    ``seen`` dedupes the decodings of one original string (``%26lt;`` -> url then html and
    html then url give the same text), which also bounds the branching.
    """
    depth += 1
    if s[0] in _JSON_START or s[-1] in "]}" or s[0] in " \t\r\n":
        t = s.strip()
        if t and t[0] in _JSON_START and t[-1] in "]}":
            try:
                obj = parse_json(t, ctx.max_depth - depth + 1, ctx.nodes)
            except (ValueError, RecursionError):
                pass
            else:
                walk(ctx, obj, path + "<json>", depth)
    if "%" in s and _PCT.search(s):
        try:
            r = unquote(s, errors="strict")
        except UnicodeDecodeError:
            r = None
        if r is not None and r != s:
            seen = _emit_nested(ctx, r, path + "<url>", depth, seen)
    if "&" in s:
        r = html.unescape(s)
        if r != s:
            seen = _emit_nested(ctx, r, path + "<html>", depth, seen)
    if "\\" in s and _JSESC.search(s):
        r = js_unescape(s)
        if r != s:
            seen = _emit_nested(ctx, r, path + "<js>", depth, seen)
    if len(s) >= 16 and _B64.fullmatch(s):
        r = b64_text(s)
        if r is not None and r != s:
            _emit_nested(ctx, r, path + "<b64>", depth, seen)


def _emit_nested(ctx, r, path, depth, seen):
    if seen is None:
        seen = set()
    elif r in seen:
        return seen
    seen.add(r)
    ctx.add(path, r)
    if depth < ctx.max_depth and len(r) > 2:
        nested(ctx, r, path, depth, seen)
    return seen
