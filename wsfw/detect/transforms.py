"""Value normalisation applied before signature matching.

Every transform is total: on any internal error it returns its input
unchanged, so a hostile value can never make the detector raise.

``variants(value)`` returns the distinct strings to scan: the original
value first, then successively decoded forms (bounded number of decode
rounds, so double/triple encoding is undone), then a "normalised" form
(SQL comments and whitespace runs collapsed, lower-cased).  Case-folding
for the signature scan itself is done by the matcher (caseless flag), so
lower-casing does not create an extra scan for plain text.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata

#: Maximum number of characters of one value that are inspected.
MAX_SCAN_CHARS = 64 * 1024

#: Maximum decode rounds (url -> html -> escapes ... repeated).
MAX_ROUNDS = 3

_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_PCT = re.compile(r"%([0-9a-fA-F]{2})")
# "Overlong" / malformed escapes seen in traversal payloads (%c0%af, %c0%2e,
# %e0%80%af, %uF025 ...).  We map the well-known overlong forms of '.', '/'
# and '\\' to their ASCII meaning (like IIS and old decoders did).
_OVERLONG = re.compile(
    r"%(?:c0%(?:ae|af|2e|2f|5c|9v|qf)|c1%(?:1c|9c|pc|8s)"
    r"|e0%80%(?:ae|af)|f0%80%80%(?:ae|af)|f8%80%80%80%(?:ae|af)"
    r"|fc%80%80%80%80%(?:ae|af)|uf025|uf02e|uf02f|uf05c|u2215|u2216|u2024)",
    re.I,
)
_OVERLONG_MAP = {
    "ae": ".", "2e": ".", "af": "/", "2f": "/", "9v": "/", "qf": "/",
    "5c": "\\", "1c": "/", "9c": "\\", "pc": "/", "8s": "\\",
    "uf025": "/", "uf02e": ".", "uf02f": "/", "uf05c": "\\",
    "u2215": "/", "u2216": "\\", "u2024": ".",
}
_BS_U = re.compile(r"\\u\{?([0-9a-fA-F]{4,6})\}?")
_BS_X = re.compile(r"\\x([0-9a-fA-F]{2})")
_BS_OCT = re.compile(r"\\([0-3][0-7]{2})")
_SQL_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_WS = re.compile(r"[ \t\x0b\x0c]+")  # newlines are kept: they carry meaning
_WS_ODD = re.compile(r"\s\s|[^\S ]")
_B64_HINT = re.compile(r"[A-Za-z0-9+/_-]{20}")
_B64_BLOB = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")

# Characters that make a decode round worth trying at all.
_NEEDS_DECODE = re.compile(r"[%&\\\x00]|\+[^\s]")  # == HINT_DECODE


def _overlong_sub(m: re.Match) -> str:
    tok = m.group(0).lower().replace("%", "")
    for key, val in _OVERLONG_MAP.items():
        if tok.endswith(key):
            return val
    return m.group(0)


def url_decode(s: str) -> str:
    """Decode %XX (as UTF-8 where possible, else Latin-1), %uXXXX and '+'."""
    try:
        if "%" not in s and "+" not in s:
            return s
        s = _OVERLONG.sub(_overlong_sub, s)
        s = _PCT_U.sub(lambda m: chr(int(m.group(1), 16)), s)
        if "%" in s:
            out = []
            pos = 0
            buf = bytearray()
            for m in _PCT.finditer(s):
                if m.start() != pos:
                    if buf:
                        out.append(buf.decode("utf-8", "replace") if _ok_utf8(buf) else buf.decode("latin-1"))
                        buf = bytearray()
                    out.append(s[pos:m.start()])
                buf.append(int(m.group(1), 16))
                pos = m.end()
            if buf:
                out.append(buf.decode("utf-8", "replace") if _ok_utf8(buf) else buf.decode("latin-1"))
            out.append(s[pos:])
            s = "".join(out)
        if "+" in s and " " not in s:
            s = s.replace("+", " ")
        return s
    except Exception:
        return s


def _ok_utf8(b: bytearray) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


_ENT_NOSEMI = re.compile(r"&#(x[0-9a-fA-F]+|[0-9]+)(?![0-9a-fA-F;])", re.I)


def html_decode(s: str) -> str:
    """Decode HTML character references (named, decimal, hex; ';' optional)."""
    try:
        if "&" not in s:
            return s
        s = _ENT_NOSEMI.sub(lambda m: m.group(0) + ";", s)
        return html.unescape(s)
    except Exception:
        return s


def _chr_safe(code: int) -> str:
    try:
        return chr(code)
    except (ValueError, OverflowError):
        return ""


def escape_decode(s: str) -> str:
    """Decode \\uXXXX, \\u{XXXX}, \\xXX and \\NNN (octal) escapes."""
    try:
        if "\\" not in s:
            return s
        s = _BS_U.sub(lambda m: _chr_safe(int(m.group(1), 16)), s)
        s = _BS_X.sub(lambda m: chr(int(m.group(1), 16)), s)
        s = _BS_OCT.sub(lambda m: chr(int(m.group(1), 8)), s)
        return s
    except Exception:
        return s


def remove_nulls(s: str) -> str:
    try:
        return s.replace("\x00", "") if "\x00" in s else s
    except Exception:
        return s


def nfkc(s: str) -> str:
    """Unicode compatibility folding (fullwidth '＜' -> '<', circled digits ...)."""
    try:
        if s.isascii():
            return s
        return unicodedata.normalize("NFKC", s)
    except Exception:
        return s


def normalise(s: str) -> str:
    """Replace /*...*/ comments by a space, collapse blank runs, lower-case."""
    try:
        if "/*" in s:
            s = _SQL_COMMENT.sub(" ", s)
        s = _WS.sub(" ", s)
        return s.lower()
    except Exception:
        return s


def b64_blobs(s: str) -> list[str]:
    """Decode obvious base64 blobs (>= 20 chars) that yield printable text."""
    out = []
    try:
        for m in _B64_BLOB.finditer(s):
            blob = m.group(0)
            if blob.isalpha() or blob.isdigit():
                continue
            try:
                raw = base64.b64decode(blob + "=" * (-len(blob) % 4), altchars=b"-_" if ("-" in blob or "_" in blob) else None)
            except (binascii.Error, ValueError):
                continue
            try:
                txt = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(txt) >= 8 and sum(c.isprintable() or c in "\r\n\t" for c in txt) >= 0.95 * len(txt):
                out.append(txt)
            if len(out) >= 4:
                break
    except Exception:
        pass
    return out


def decode_round(s: str) -> str:
    s = url_decode(s)
    s = html_decode(s)
    s = escape_decode(s)
    s = remove_nulls(s)
    return s


#: Regexes (shared with the engine's scan database as non-scoring gates)
#: telling which transforms can change a value at all.
HINT_DECODE = r"[%&\\\x00]|\+[^\s]"
HINT_NORM = r"/\*|\s\s|[\t\n\r\x0b\x0c]"
HINT_B64 = r"[A-Za-z0-9+/_-]{20}"


def variants(value: str, hints: frozenset | set | None = None) -> list[str]:
    """Distinct forms of ``value`` to scan, original first (bounded work).

    ``hints`` (optional) is the set of {"decode", "norm", "b64"} transforms
    known to be applicable to the original (the engine gets them for free
    from its multi-pattern scan); ``None`` means "find out yourself".
    """
    try:
        if len(value) > MAX_SCAN_CHARS:
            value = value[:MAX_SCAN_CHARS]
        out = [value]
        if hints is None:
            hints = set()
            if _NEEDS_DECODE.search(value):
                hints.add("decode")
            if "/*" in value or _WS_ODD.search(value):
                hints.add("norm")
            if _B64_HINT.search(value):
                hints.add("b64")
        cur = value
        if not cur.isascii():
            folded = nfkc(cur)
            if folded != cur:
                out.append(folded)
                cur = folded
        if "decode" in hints or (cur is not value and _NEEDS_DECODE.search(cur)):
            for _ in range(MAX_ROUNDS):
                nxt = decode_round(cur)
                if nxt == cur:
                    break
                if not nxt.isascii():
                    nxt = nfkc(nxt)
                out.append(nxt)
                cur = nxt
        if (cur is value and "norm" in hints) or (cur is not value and ("/*" in cur or _WS_ODD.search(cur))):
            norm = normalise(cur)
            if norm != cur.lower():
                out.append(norm)
        if "b64" in hints:
            for blob in b64_blobs(value):
                out.append(blob)
        # de-duplicate, keep order
        seen = set()
        uniq = []
        for v in out:
            if v not in seen:
                seen.add(v)
                uniq.append(v)
        return uniq
    except Exception:
        return [value[:MAX_SCAN_CHARS] if isinstance(value, str) else ""]
