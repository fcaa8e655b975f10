"""Pixel-format conversions with the standard library only (Krita's Python may have no numpy).

Krita's ``Node.pixelData`` is BGRA for integer layers (8/16 bit) and RGBA for float layers; the
protocol is always RGBA. Slice assignment on bytearrays and ``array``/``struct`` keep this in C.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator

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
    if img.linear:  # a linear float layer used as a control map: encode it as the painter sees it
        for c in range(3):  # a whole channel at a time (alpha is never encoded)
            values[c::4] = array("f", map(linear_to_srgb, values[c::4]))
    data = bytes(min(255, max(0, round(v * 255))) if v == v else 0 for v in values)  # (v != v: NaN)
    return Image(width=img.width, height=img.height, format=PixelFormat.RGBA8, data=data)


def linear_to_srgb(linear: float) -> float:
    """One linear-light value (0..1) → sRGB-encoded (IEC 61966-2-1)."""
    if not linear > 0.0031308:  # also NaN and negatives
        return max(0.0, linear * 12.92) if linear == linear else 0.0
    return float(1.055 * min(linear, 1.0) ** (1 / 2.4) - 0.055)  # float ** float is Any to mypy (it may be complex)


def swap_red_blue_16(data: bytes) -> bytes:
    """BGRA16 ⇄ RGBA16 (little-endian samples: each channel is two bytes)."""
    out = bytearray(data)
    out[0::8], out[1::8], out[4::8], out[5::8] = data[4::8], data[5::8], data[0::8], data[1::8]
    return bytes(out)


# Samples converted per struct call: a whole layer at once would build a tuple of millions of Python floats.
CHUNK_SAMPLES = 1 << 16


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, CHUNK_SAMPLES):
        yield start, min(CHUNK_SAMPLES, count - start)


def half_to_float(data: bytes) -> bytes:
    """Little-endian float16 samples → little-endian float32 (how half-float layers travel: rgbaf32)."""
    values = array("f")
    for start, n in _chunks(len(data) // 2):
        values.extend(struct.unpack_from(f"<{n}e", data, 2 * start))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def float_to_half(data: bytes) -> bytes:
    """Little-endian float32 samples → little-endian float16 (results for half-float layers)."""
    values = array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return b"".join(struct.pack(f"<{n}e", *values[start : start + n]) for start, n in _chunks(len(values)))


def srgb_to_linear(encoded: float) -> float:
    """One sRGB-encoded value (0..1) → linear light (IEC 61966-2-1)."""
    return encoded / 12.92 if encoded <= 0.04045 else ((encoded + 0.055) / 1.055) ** 2.4


def rgba8_to_float(rgba8: bytes, linear: bool) -> bytes:
    """8-bit RGBA (a preview) → float32 RGBA, RGB decoded to linear light when the layer is linear."""
    alpha = [i / 255 for i in range(256)]
    rgb = [srgb_to_linear(v) for v in alpha] if linear else alpha
    values = array("f", bytes(4 * len(rgba8)))
    for c in range(4):  # a whole channel at a time, looked up in C
        values[c::4] = array("f", map((alpha if c == 3 else rgb).__getitem__, rgba8[c::4]))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def rgba8_to_16(rgba8: bytes) -> bytes:
    """8-bit samples → 16-bit little-endian (v × 257: 0 → 0, 255 → 65535)."""
    out = bytearray(len(rgba8) * 2)
    out[0::2] = rgba8
    out[1::2] = rgba8
    return bytes(out)
