"""A msgpack header scanner: structural limits enforced before a single object is unpacked.

``msgpack.unpackb`` would happily build four million empty maps out of a 4 MiB frame; walking the
headers first costs at most ``max_objects`` iterations, skips string and binary payloads without
touching them, and refuses the frame at the first header past a limit.
"""

from __future__ import annotations

from .errors import BadFrame
from .limits import DecodeLimits

_SCALAR_BYTES = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_STR_LEN_BYTES = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BIN_LEN_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_ARRAY_LEN_BYTES = {0xDC: 2, 0xDD: 4}
_MAP_LEN_BYTES = {0xDE: 2, 0xDF: 4}
_EXT = frozenset((0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8))


def scan(data: bytes, limits: DecodeLimits) -> None:
    """Raise :class:`BadFrame`/:class:`LimitExceeded` unless ``data`` is one msgpack value within limits."""
    end = len(data)
    pos = 0
    objects = 0
    pending = [1]  # values still expected at each open level; the first level is the frame itself

    def length(at: int, size: int) -> int:
        if at + size > end:
            raise BadFrame("expected one msgpack value, got a truncated frame", "frame")
        return int.from_bytes(data[at : at + size], "big")

    while True:
        while pending and pending[-1] == 0:
            pending.pop()
        if not pending:
            break
        pending[-1] -= 1
        if pos >= end:
            raise BadFrame("expected one msgpack value, got a truncated frame", "frame")
        objects += 1
        if objects > limits.max_objects:
            raise BadFrame(f"expected at most {limits.max_objects} values in one frame, got more", "frame")
        b = data[pos]
        pos += 1
        count = -1  # ≥ 0 when the header opens a list or map
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            continue
        if b <= 0x8F:
            count = 2 * (b & 0x0F)
        elif b <= 0x9F:
            count = b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F
        elif b in _SCALAR_BYTES:
            pos += _SCALAR_BYTES[b]
        elif b in _STR_LEN_BYTES:
            size = length(pos, _STR_LEN_BYTES[b])
            if size > limits.max_str_bytes:
                raise BadFrame(f"expected strings of at most {limits.max_str_bytes} bytes, got {size}", "frame")
            pos += _STR_LEN_BYTES[b] + size
        elif b in _BIN_LEN_BYTES:
            pos += _BIN_LEN_BYTES[b] + length(pos, _BIN_LEN_BYTES[b])
        elif b in _ARRAY_LEN_BYTES:
            count = length(pos, _ARRAY_LEN_BYTES[b])
            pos += _ARRAY_LEN_BYTES[b]
            if count > limits.max_items:
                raise BadFrame(f"expected lists of at most {limits.max_items} items, got {count}", "frame")
        elif b in _MAP_LEN_BYTES:
            count = length(pos, _MAP_LEN_BYTES[b])
            pos += _MAP_LEN_BYTES[b]
            if count > limits.max_items:
                raise BadFrame(f"expected maps of at most {limits.max_items} entries, got {count}", "frame")
            count *= 2
        elif b in _EXT:
            raise BadFrame("expected no msgpack extension types, got one", "frame")
        else:  # 0xc1 is never used
            raise BadFrame(f"expected one msgpack value, got the invalid byte 0x{b:02x}", "frame")
        if pos > end:
            raise BadFrame("expected one msgpack value, got a truncated frame", "frame")
        if count >= 0:
            if len(pending) > limits.max_depth:
                raise BadFrame(f"expected nesting of at most {limits.max_depth} levels, got deeper", "frame")
            pending.append(count)
    if pos != end:
        raise BadFrame(f"expected one msgpack value, got {end - pos} bytes after it", "frame")
