"""Pixels of the A1111 API: base64 images in and out, A1111's resize modes, its mask handling, compositing.

Everything here is CPU-bound and runs on the API's image threads, never on the event loop. An
image's size is read from its header and checked against ``max_pixels`` before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from .fields import FieldError, Loc

FORMATS = ("PNG", "JPEG", "WEBP")  # what A1111 clients send; other formats are refused
BACKGROUND = 255  # A1111 flattens transparent init images onto img2img_background_color, white by default


def decode(text: Any, loc: Loc, max_pixels: int) -> Any:
    """A base64 PNG/JPEG/WebP (``data:`` URLs too) as a loaded PIL image."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(text, str):
        raise FieldError(loc, f"expected a base64-encoded image, got {type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text)
    except (binascii.Error, ValueError):
        raise FieldError(loc, "expected a base64-encoded PNG or JPEG image; this is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise FieldError(loc, "expected a PNG or JPEG image; these bytes are no image") from None
    except Image.DecompressionBombError:
        raise FieldError(loc, f"expected at most {max_pixels} pixels (the server's max_pixels)") from None
    if image.format not in FORMATS:
        raise FieldError(loc, f"expected a PNG, JPEG or WebP image, got {image.format}")
    w, h = image.size
    if w * h > max_pixels:
        raise FieldError(loc, f"expected at most {max_pixels} pixels (the server's max_pixels), got {w}×{h}")
    try:
        image.load()
    except (OSError, ValueError) as exc:
        raise FieldError(loc, f"the image could not be decoded: {exc}") from None
    return image


def flatten_rgb(image: Any) -> np.ndarray:
    """(h, w, 3) uint8, transparent pixels composited onto the background colour as A1111 does."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    a = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * a + BACKGROUND * (1 - a)).astype(np.uint8)


def mask_coverage(image: Any, round_: bool) -> np.ndarray:
    """(h, w) uint8: the alpha channel when the mask has transparency, else its luminance (A1111's rule)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        cover = rgba[..., 3] if (rgba[..., 3] < 255).any() else np.asarray(image.convert("L"))
    else:
        cover = np.asarray(image.convert("L"))
    if round_:  # mask_round: a hard mask, the way A1111 binarises it
        cover = np.where(cover > 128, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(cover, dtype=np.uint8)


def blur_mask(cover: np.ndarray, blur_x: int, blur_y: int) -> np.ndarray:
    """A1111's mask blur: a Gaussian of sigma ``blur`` along each axis, kernel 2·⌊2.5σ + 0.5⌋ + 1."""
    import cv2

    out = cover
    for sigma, horizontal in ((blur_x, True), (blur_y, False)):
        if sigma > 0:
            k = 2 * int(2.5 * sigma + 0.5) + 1
            out = cv2.GaussianBlur(out, (k, 1) if horizontal else (1, k), sigma)
    return np.ascontiguousarray(out, dtype=np.uint8)


def resize(pixels: np.ndarray, width: int, height: int, mode: int) -> np.ndarray:
    """A1111's resize modes: 0 stretch (3, latent upscale, too), 1 crop to fill, 2 fit and fill the borders."""
    from PIL import Image

    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels

    def scaled(sw: int, sh: int) -> np.ndarray:
        return np.asarray(Image.fromarray(pixels).resize((max(1, sw), max(1, sh)), Image.Resampling.LANCZOS))

    if mode in (0, 3):
        return scaled(width, height)
    cover = mode == 1
    scale = max(width / w, height / h) if cover else min(width / w, height / h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    out = scaled(sw, sh)
    if cover:
        x0, y0 = (sw - width) // 2, (sh - height) // 2
        return np.ascontiguousarray(out[y0 : y0 + height, x0 : x0 + width])
    px, py = width - sw, height - sh  # fill the borders with the picture's own edge pixels
    pad = ((py // 2, py - py // 2), (px // 2, px - px // 2)) + (((0, 0),) if out.ndim == 3 else ())
    return np.pad(out, pad, mode="edge")


def bounds(cover: np.ndarray) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 of the nonzero part of a mask (exclusive ends), or None when it is empty."""
    ys, xs = np.nonzero(cover)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def composite(base: np.ndarray, layer: np.ndarray, x: int, y: int) -> np.ndarray:
    """``layer`` (RGBA, straight alpha) over ``base`` (RGB) at x, y; where its alpha is 0, ``base`` stays exact."""
    out = base.copy()
    h, w = layer.shape[:2]
    region = out[y : y + h, x : x + w]
    a = layer[..., 3:].astype(np.float32) / 255.0
    mixed = np.rint(region.astype(np.float32) * (1 - a) + layer[..., :3].astype(np.float32) * a).astype(np.uint8)
    out[y : y + h, x : x + w] = np.where(layer[..., 3:] == 0, region, mixed)
    return out


def encode_png(rgb: np.ndarray, parameters: str = "") -> str:
    """Base64 PNG (no ``data:`` prefix, as A1111 answers), with A1111's ``parameters`` text chunk."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info, compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")
