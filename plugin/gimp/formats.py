"""How a GIMP image's pixels travel: its precision → the babl format read and written, and the wire format.

Pixels are always read as *perceptual* R'G'B'A: the models were trained on sRGB-encoded pictures,
and GEGL converts from (and back to) whatever the image stores, linear light included. That is why
GIMP can send 16-bit and float images where Krita cannot yet.
"""

from __future__ import annotations

from sfumato.protocol import PixelFormat

# Gimp.ImageBaseType
RGB, GRAY, INDEXED = 0, 1, 2

# Gimp.Precision is <component type> * 100 + <trc> (0 linear, 50 non-linear, 75 perceptual).
U8, U16, U32, HALF, FLOAT, DOUBLE = 1, 2, 3, 5, 6, 7

BABL = {
    PixelFormat.RGBA8: "R'G'B'A u8",
    PixelFormat.RGBA16: "R'G'B'A u16",
    PixelFormat.RGBAF32: "R'G'B'A float",
}
SELECTION_BABL = "Y u8"  # coverage as stored: 0 = unselected … 255 = selected (linear, no gamma)


class UnsupportedImage(Exception):
    """The image cannot be sent as it is; the message says what to do."""


def wire_format(precision: int) -> str:
    """The protocol format that carries ``precision`` without losing anything the model could use."""
    component = int(precision) // 100
    if component == U8:
        return PixelFormat.RGBA8
    if component == U16:
        return PixelFormat.RGBA16
    if component in (U32, HALF, FLOAT, DOUBLE):  # u32 does not fit rgba16; float32 keeps 24 bits
        return PixelFormat.RGBAF32
    raise UnsupportedImage(f"unknown GIMP precision {int(precision)}")


def check_base_type(base_type: int) -> None:
    if int(base_type) == INDEXED:
        raise UnsupportedImage(
            "Sfumato works on RGB and grayscale images; this one is indexed. Use Image > Mode > RGB, "
            "generate, then Image > Mode > Indexed to go back."
        )
    if int(base_type) not in (RGB, GRAY):
        raise UnsupportedImage(f"unknown GIMP image type {int(base_type)}")
