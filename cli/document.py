"""Image files seen as an editor document, so the CLI builds requests with the same core as Krita."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage

from sfumato.protocol import Image, PixelFormat, Rect

if TYPE_CHECKING:
    from sfumato.plugin.core.expand import Margins


class ImageTooLarge(Exception):
    """An image file has more pixels than ``max_pixels``; found from its header, nothing decoded."""

    def __init__(self, size: tuple[int, int], max_pixels: int) -> None:
        w, h = size
        super().__init__(f"{w}×{h} = {w * h} pixels, over the limit of {max_pixels} pixels")
        self.size, self.max_pixels = size, max_pixels


@contextlib.contextmanager
def open_image(path: Path, max_pixels: int) -> Iterator[PILImage.Image]:
    """Open an image file reading only its header; raise ImageTooLarge before any pixel is decoded.

    Pillow's own DecompressionBombWarning is silenced: ``max_pixels`` is the limit that counts (the
    backend's, always lower than Pillow's default). Pillow's DecompressionBombError (an image over twice
    Pillow's limit) is left to the caller.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        with PILImage.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageTooLarge(im.size, max_pixels)
            yield im


def image_size(path: Path, max_pixels: int) -> tuple[int, int]:
    """Width and height from the file's header (see open_image)."""
    with open_image(path, max_pixels) as im:
        return im.size


def load_rgba(path: Path, max_pixels: int) -> np.ndarray:
    with open_image(path, max_pixels) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()


def load_gray(path: Path, max_pixels: int) -> np.ndarray:
    with open_image(path, max_pixels) as im:
        if im.mode in ("RGBA", "LA"):  # a mask painted as alpha
            return np.asarray(im.getchannel("A"), dtype=np.uint8).copy()
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()


def save_rgba(path: Path, pixels: np.ndarray) -> None:
    PILImage.fromarray(pixels, mode="RGBA").save(path)


class ImageDocument:
    """A one-layer document (plus named control layers, and reference images of their own sizes) backed by arrays."""

    def __init__(
        self,
        pixels: np.ndarray,
        mask: np.ndarray | None = None,
        layers: dict[str, np.ndarray] | None = None,
        name: str = "image",
        references: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.pixels, self.mask, self.layers, self.name = pixels, mask, layers or {}, name
        self.references = references or {}  # files, not layers of the canvas: read whole, whatever the rect
        self.results: list[tuple[Image, Rect, str]] = []
        self.previews = 0

    def is_open(self) -> bool:
        return True

    def grow(self, margins: Margins) -> None:
        """Krita's Image ▸ Canvas Size: every layer (and the selection) padded, transparent on the new border."""
        pad = ((margins.top, margins.bottom), (margins.left, margins.right))
        self.pixels = np.pad(self.pixels, (*pad, (0, 0)))
        self.layers = {name: np.pad(layer, (*pad, (0, 0))) for name, layer in self.layers.items()}
        self.mask = None if self.mask is None else np.pad(self.mask, pad)

    def title(self) -> str:
        return self.name

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=self.pixels.shape[1], h=self.pixels.shape[0])

    def selection_bounds(self) -> Rect | None:
        if self.mask is None or not self.mask.any():
            return None
        ys, xs = np.nonzero(self.mask)
        return Rect(x=int(xs.min()), y=int(ys.min()), w=int(xs.max() - xs.min()) + 1, h=int(ys.max() - ys.min()) + 1)

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        if layer in self.references:
            ref = np.ascontiguousarray(self.references[layer])
            return Image(width=ref.shape[1], height=ref.shape[0], format=PixelFormat.RGBA8, data=ref.tobytes())
        src = self.layers[layer] if layer else self.pixels
        crop = np.ascontiguousarray(src[rect.y : rect.bottom, rect.x : rect.right])
        return Image(width=rect.w, height=rect.h, format=PixelFormat.RGBA8, data=crop.tobytes())

    def read_selection(self, rect: Rect) -> Image:
        assert self.mask is not None
        crop = np.ascontiguousarray(self.mask[rect.y : rect.bottom, rect.x : rect.right])
        return Image(width=rect.w, height=rect.h, format=PixelFormat.GRAY8, data=crop.tobytes())

    def show_preview(self, image: Image, rect: Rect) -> None:
        self.previews += 1

    def clear_preview(self) -> None:
        pass

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        self.results.append((image, rect, name))


def composite(base: np.ndarray, layer: Image, rect: Rect) -> np.ndarray:
    """Paint an RGBA8 layer over ``base`` at ``rect`` (normal blend, straight alpha).

    Pixels where the layer's alpha is 0 are copied from ``base`` untouched, bit for bit.
    """
    out = base.copy()
    region = out[rect.y : rect.bottom, rect.x : rect.right]
    top = PILImage.frombytes("RGBA", (rect.w, rect.h), layer.data)
    blended = np.asarray(PILImage.alpha_composite(PILImage.fromarray(region, mode="RGBA"), top))
    keep = np.frombuffer(layer.data, np.uint8).reshape(rect.h, rect.w, 4)[..., 3] == 0
    out[rect.y : rect.bottom, rect.x : rect.right] = np.where(keep[..., None], region, blended)  # bit for bit
    return out


def layer_canvas(size: tuple[int, int], layer: Image, rect: Rect) -> np.ndarray:
    """The result layer alone, on a transparent canvas of the input's size."""
    w, h = size
    out = np.zeros((h, w, 4), np.uint8)
    out[rect.y : rect.bottom, rect.x : rect.right] = np.frombuffer(layer.data, np.uint8).reshape(rect.h, rect.w, 4)
    return out
