"""Images on the wire: raw pixel payloads in msgpack ``bin``, optionally zlib-compressed.

Pixel formats (rows top to bottom, no padding, little-endian samples, straight alpha):

* ``rgba8``   – 4 bytes per pixel, R, G, B, A.
* ``gray8``   – 1 byte per pixel (masks and selection coverage, 0 = untouched, 255 = fully selected).
* ``rgba16``  – 8 bytes per pixel, R, G, B, A as uint16 LE (16-bit integer layers).
* ``rgbaf32`` – 16 bytes per pixel, R, G, B, A as float32 LE (16- and 32-bit float layers; f16
  layers are widened to f32 by the editor).

Note that Krita hands integer layers over as BGRA; the editor swaps to RGBA before sending.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

from .errors import InvalidMessage, LimitExceeded
from .limits import DEFAULT_LIMITS, HARD_MAX_PIXELS, DecodeLimits
from .schema import Bool, Int, Kind, Record, Str, describe, wire


class PixelFormat:
    RGBA8 = "rgba8"
    GRAY8 = "gray8"
    RGBA16 = "rgba16"
    RGBAF32 = "rgbaf32"
    ALL = (RGBA8, GRAY8, RGBA16, RGBAF32)


BYTES_PER_PIXEL = {PixelFormat.RGBA8: 4, PixelFormat.GRAY8: 1, PixelFormat.RGBA16: 8, PixelFormat.RGBAF32: 16}

ENCODINGS = ("raw", "zlib")


class _Bytes(Kind):
    doc = "bytes"

    def check(self, value: Any, path: str) -> bytes:
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        if not isinstance(value, bytes):
            raise InvalidMessage(f"expected bytes, got {describe(value)}", path)
        return value


@dataclasses.dataclass(frozen=True)
class Image(Record):
    """A block of pixels. ``data`` always holds the raw (uncompressed) pixels in memory."""

    PATH = "image"

    width: int = wire(Int(1, 65535), "pixels")
    height: int = wire(Int(1, 65535), "pixels")
    format: str = wire(Str(choices=PixelFormat.ALL), "pixel format")
    data: bytes = wire(_Bytes(), "width × height × bytes-per-pixel raw bytes")
    # Samples that encode linear light (Krita's default float profiles, GIMP's linear precisions): the
    # backend shows the model sRGB-encoded pixels and returns results linear again.
    linear: bool = wire(Bool(), "RGB samples are linear light, not sRGB-encoded", default=False)

    def validate(self) -> None:
        if self.width * self.height > HARD_MAX_PIXELS:
            raise LimitExceeded(
                f"expected at most {HARD_MAX_PIXELS} pixels, got {self.width}×{self.height}", self._path("width")
            )
        expected = self.width * self.height * BYTES_PER_PIXEL[self.format]
        if len(self.data) != expected:
            raise InvalidMessage(
                f"expected {expected} bytes for {self.width}×{self.height} {self.format}, got {len(self.data)}",
                self._path("data"),
            )

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def __repr__(self) -> str:  # never print megabytes of pixels
        return f"Image({self.width}×{self.height} {self.format}{' linear' if self.linear else ''})"

    # Wire form: {"w", "h", "fmt", "enc", "data"}; see ImageKind.


class ImageKind(Kind):
    """An image on the wire. Sizes are checked against the limits before anything is allocated."""

    doc = "image map {w, h, fmt, enc, data}"

    def __init__(self, formats: tuple[str, ...] = PixelFormat.ALL) -> None:
        self.formats = formats
        self.doc = f"image map {{w, h, fmt, enc, data}}, fmt one of {', '.join(formats)}"

    def check(self, value: Any, path: str) -> Image:
        if not isinstance(value, Image):
            raise InvalidMessage(f"expected an Image, got {describe(value)}", path)
        if value.format not in self.formats:
            raise InvalidMessage(f"expected format {' or '.join(self.formats)}, got {value.format!r}", f"{path}.fmt")
        return value

    def _header(self, value: Any, path: str, limits: DecodeLimits) -> tuple[int, int, str, int]:
        """Width, height, format and raw byte size, checked against the limits; no payload touched."""
        if not isinstance(value, dict):
            raise InvalidMessage(f"expected an image map, got {describe(value)}", path)
        w = Int(1, 65535).check(value.get("w"), f"{path}.w")
        h = Int(1, 65535).check(value.get("h"), f"{path}.h")
        fmt = Str(choices=self.formats).check(value.get("fmt"), f"{path}.fmt")
        if w * h > limits.max_pixels:
            raise LimitExceeded(f"expected at most {limits.max_pixels} pixels, got {w}×{h} = {w * h}", path)
        return w, h, fmt, w * h * BYTES_PER_PIXEL[fmt]

    def declared_bytes(self, value: Any, path: str, limits: DecodeLimits) -> int:
        return self._header(value, path, limits)[3]

    def load(self, value: Any, path: str, limits: DecodeLimits = DEFAULT_LIMITS) -> Image:
        w, h, fmt, expected = self._header(value, path, limits)
        enc = value.get("enc")
        enc = Str(choices=ENCODINGS).check("raw" if enc is None else enc, f"{path}.enc")
        data = _Bytes().check(value.get("data"), f"{path}.data")
        if enc == "zlib":
            data = _inflate(data, expected, f"{path}.data")
        elif len(data) != expected:
            raise InvalidMessage(f"expected {expected} bytes for {w}×{h} {fmt}, got {len(data)}", f"{path}.data")
        linear = value.get("linear")
        linear = False if linear is None else Bool().check(linear, f"{path}.linear")
        return Image(width=w, height=h, format=fmt, data=data, linear=linear)

    def dump(self, value: Image) -> dict[str, Any]:
        return {
            "w": value.width,
            "h": value.height,
            "fmt": value.format,
            "enc": "raw",
            "data": value.data,
            "linear": value.linear,
        }


def _inflate(data: bytes, expected: int, path: str) -> bytes:
    """Decompress at most ``expected`` bytes: a zip bomb cannot allocate more than the limit allows."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, expected)
    except zlib.error as exc:
        raise InvalidMessage(f"expected zlib data, got a corrupt stream ({exc})", path) from None
    if len(out) != expected or d.unconsumed_tail or not d.eof:
        raise InvalidMessage(f"expected {expected} bytes after decompression, got a different amount", path)
    return out


def compress_images(wire_map: Any, level: int = 1) -> Any:
    """Rewrite every image map inside a dumped message to ``enc: "zlib"`` (for remote links)."""
    if isinstance(wire_map, dict):
        if "fmt" in wire_map and wire_map.get("enc") == "raw" and isinstance(wire_map.get("data"), bytes):
            return {**wire_map, "enc": "zlib", "data": zlib.compress(wire_map["data"], level)}
        return {k: compress_images(v, level) for k, v in wire_map.items()}
    if isinstance(wire_map, list):
        return [compress_images(v, level) for v in wire_map]
    return wire_map
