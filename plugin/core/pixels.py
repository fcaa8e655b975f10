"""Pixel-format conversions with the standard library only (Krita's Python may have no numpy).

Krita's ``Node.pixelData`` is BGRA for integer layers (8/16 bit) and RGBA for float layers; the
protocol is always RGBA. Slice assignment on bytearrays and ``array``/``struct`` keep this in C.
"""

from __future__ import annotations

import sys
from array import array

from sfumato.protocol import Image, PixelFormat


def swap_red_blue_8(data: bytes) -> bytes:
    """BGRA8 ⇄ RGBA8."""
    out = bytearray(data)
    out[0::4], out[2::4] = data[2::4], data[0::4]
    return bytes(out)


def to_rgba8(img: Image) -> Image:
    """Any RGBA image → rgba8 (for control maps); gray8 → grey RGBA8."""
    if img.format == PixelFormat.RGBA8:
        return img
    if img.format == PixelFormat.GRAY8:
        out = bytearray(len(img.data) * 4)
        for c in range(3):
            out[c::4] = img.data
        out[3::4] = b"\xff" * len(img.data)
        return Image(width=img.width, height=img.height, format=PixelFormat.RGBA8, data=bytes(out))
    if img.format == PixelFormat.RGBA16:
        return Image(width=img.width, height=img.height, format=PixelFormat.RGBA8, data=bytes(img.data[1::2]))
    values = array("f")
    values.frombytes(img.data)
    if sys.byteorder != "little":
        values.byteswap()
    data = bytes(min(255, max(0, round(v * 255))) for v in values)
    return Image(width=img.width, height=img.height, format=PixelFormat.RGBA8, data=data)
