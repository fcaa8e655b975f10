"""Reference images of a request (IP-Adapter): layers of the document, scaled down before they travel.

The backend's image encoders see 224² (the shorter side resized to 224, then centre-cropped), so a
reference is sent with its shorter side at ``REFERENCE_SIDE`` (never enlarged, and at most
``MAX_REFERENCE_SIDE`` long): a 4k layer costs what a thumbnail costs, and the encoder loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfumato.protocol import (
    BYTES_PER_PIXEL,
    DEFAULT_REFERENCE_MODE,
    MAX_REFERENCE_WEIGHT,
    Image,
    Rect,
    Reference,
    reference_size,
)

from .editor import DocumentLike
from .pixels import to_rgba8

# What the editors offer for a reference's weight: all the protocol takes, from a little under as trained (the
# prompt keeps its say)
REFERENCE_WEIGHT_RANGE = (0.0, MAX_REFERENCE_WEIGHT)
DEFAULT_REFERENCE_WEIGHT = 0.8


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference as the painter set it: which layer, how strongly, what of it."""

    layer: str | None = None  # a layer's name; None = the active layer
    weight: float = DEFAULT_REFERENCE_WEIGHT
    mode: str = DEFAULT_REFERENCE_MODE  # style | full | composition
    adapter: str | None = None  # an ipadapter catalogue id; None = the backend picks one for the model


def shrink(img: Image, width: int, height: int) -> Image:
    """``img`` sampled down to ``width`` × ``height``: each new pixel is the source pixel at the centre of the
    area it stands for (pure Python over the small result only; any pixel format)."""
    if (width, height) == (img.width, img.height):
        return img
    bpp = BYTES_PER_PIXEL[img.format]
    row = img.width * bpp
    xs = [(2 * x + 1) * img.width // (2 * width) * bpp for x in range(width)]
    out = bytearray()
    for y in range(height):
        start = (2 * y + 1) * img.height // (2 * height) * row
        line = img.data[start : start + row]
        out += b"".join(line[x : x + bpp] for x in xs)
    return Image(width=width, height=height, format=img.format, data=bytes(out), linear=img.linear)


def reference_for(doc: DocumentLike, spec: ReferenceSpec, canvas: Rect) -> Reference:
    """The reference ``spec`` names: its layer over the whole canvas, scaled down, as RGBA8."""
    layer = doc.read_layer(canvas, spec.layer)
    small = to_rgba8(shrink(layer, *reference_size(layer.width, layer.height)))
    return Reference(image=small, weight=spec.weight, mode=spec.mode, adapter=spec.adapter)
