"""Two per-frame costs of Autobahn that a relay pays four times per round trip, taken out.

A relayed round trip is four frames through Autobahn: the client's (unmasked
on arrival), the copy to the upstream (masked), the upstream's answer and the
copy back. A profile of wsfw in block mode under load (py-spy, closed loop,
64 B chat messages; see bench/README.md) put two of Autobahn's per-frame
costs at a fifth of the daemon's CPU, neither of them doing anything for us:

- **Debug log arguments built eagerly.** ``sendData`` and ``dataReceived``
  call ``log.debug(..., func=hltype(...), peer=hlval(...))`` for every chunk:
  the arguments (click-styled, colour-coded strings) are built before the
  logger drops the event, about 11 % of the CPU. :func:`install` makes those
  two helpers (and the ``pformat`` of every connection's option list) return
  their argument as it is: a debug line (if ever enabled) shows the plain
  value instead of a coloured or pretty-printed one.
- **A native XOR masker allocated per frame.** Autobahn's NVX masker is a
  CFFI object (``ffi.new``, ``ffi.gc``, an implementation switch) built for
  every masked frame, about 8 % of the CPU; XOR-ing a frame is cheap next to
  that. :class:`XorMasker` (Autobahn's masker interface) and :func:`mask`
  (a whole payload, for :mod:`wsfw.relay.frames`) call the C ``apply_mask``
  of the ``websockets`` package, a plain function over a buffer: measured
  here, 0.4 µs at 64 B, 0.6 at 1 KiB and 1.1 at 16 KiB, against 14-20 µs for
  NVX and 1.8 / 5.4 / 12.6 for a big-integer XOR in Python (the fallback
  when that extension is not built).

Masking itself is unchanged: every frame to the upstream is still masked
with a fresh random key (RFC 6455 5.3); only who computes the XOR differs.
:func:`install` checks that Autobahn still has the names it replaces, so an
Autobahn upgrade that moves them fails at start instead of silently losing
the optimisation.
"""

from __future__ import annotations

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - a websockets built without its C extension
    _apply_mask = None


def _xor(data, key: bytes) -> bytes:
    """``data`` XOR-ed with the 4-byte ``key`` repeated, as one big-integer XOR."""
    n = len(data)
    if not n:
        return b""
    return (int.from_bytes(data, "little") ^
            int.from_bytes((key * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")


_apply = _apply_mask if _apply_mask is not None else _xor


def mask(key: bytes, data: bytes) -> bytes:
    """RFC 6455 masking (or unmasking) of a whole frame payload with its 4-byte ``key``."""
    return _apply(data, key)


class XorMasker:
    """RFC 6455 masking through :func:`mask`, with the interface of Autobahn's maskers
    (``process`` in one or more chunks, ``pointer``, ``reset``)."""

    __slots__ = ("_mask", "_ptr")

    def __init__(self, key: bytes):
        self._mask = bytes(key)
        self._ptr = 0

    def pointer(self) -> int:
        return self._ptr

    def reset(self) -> None:
        self._ptr = 0

    def process(self, data) -> bytes:
        offset = self._ptr & 3
        key = self._mask
        if offset:
            key = key[offset:] + key[:offset]
        self._ptr += len(data)
        return _apply(data, key)


def _plain(value, *args, **kwargs):
    return value


def install() -> None:
    """Patch Autobahn's protocol modules (idempotent). Raises ``RuntimeError`` when this
    Autobahn no longer has what is patched."""
    import autobahn.twisted.websocket as twisted_websocket
    import autobahn.websocket.protocol as protocol

    for module, names in ((protocol, ("hltype", "hlval", "create_xor_masker", "pformat")),
                          (twisted_websocket, ("hltype", "hlval"))):
        missing = [name for name in names if not hasattr(module, name)]
        if missing:
            raise RuntimeError(f"wsfw.relay.tuning: {module.__name__} has no {', '.join(missing)}: this Autobahn "
                               "is not the one wsfw was tuned for (requirements.txt pins it)")
    if getattr(protocol.create_xor_masker, "wsfw_tuned", False):
        return

    def create_xor_masker(key, length=None):
        return XorMasker(key)

    create_xor_masker.wsfw_tuned = True
    protocol.create_xor_masker = create_xor_masker
    for module in (protocol, twisted_websocket):
        module.hltype = _plain
        module.hlval = _plain
    protocol.pformat = _plain  # a pretty-printed option list for a debug line, built per connection
