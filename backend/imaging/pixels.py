"""Wire images ⇄ numpy arrays. Floats in 0..1, straight alpha; integer formats keep exact round trips."""

from __future__ import annotations

from typing import Any

import numpy as np

from sfumato.protocol import Image, PixelFormat

_NATIVE: dict[str, tuple[np.dtype[Any], float]] = {
    PixelFormat.RGBA8: (np.dtype(np.uint8), 255.0),
    PixelFormat.RGBA16: (np.dtype("<u2"), 65535.0),
    PixelFormat.RGBAF32: (np.dtype("<f4"), 1.0),
    PixelFormat.GRAY8: (np.dtype(np.uint8), 255.0),
}


def native_array(img: Image) -> np.ndarray:
    """The pixels in their own dtype, shape (H, W, C)."""
    dtype, _ = _NATIVE[img.format]
    channels = 1 if img.format == PixelFormat.GRAY8 else 4
    return np.frombuffer(img.data, dtype=dtype).reshape(img.height, img.width, channels)


def to_float(img: Image) -> np.ndarray:
    """(H, W, C) float32 in 0..1 (float layers are clipped: the models know no HDR; NaN reads as 0)."""
    _dtype, scale = _NATIVE[img.format]
    arr = native_array(img).astype(np.float32)
    if scale != 1.0:
        arr /= scale
    if img.format == PixelFormat.RGBAF32:
        arr = np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)  # NaN would poison the latents
    if img.linear:
        arr[..., :3] = srgb_encode(arr[..., :3])  # the models were trained on sRGB-encoded pictures
    return arr


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear light → sRGB-encoded values (IEC 61966-2-1), both 0..1."""
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values → linear light, both 0..1."""
    return np.where(encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4))


def from_float(arr: np.ndarray, fmt: str) -> np.ndarray:
    """Float 0..1 → the native dtype of ``fmt`` (rounded, clipped)."""
    dtype, scale = _NATIVE[fmt]
    if fmt == PixelFormat.RGBAF32:
        return arr.astype(dtype)
    return np.clip(np.rint(arr * scale), 0, scale).astype(dtype)


def make_image(native: np.ndarray, fmt: str, linear: bool = False) -> Image:
    h, w = native.shape[:2]
    return Image(width=w, height=h, format=fmt, data=np.ascontiguousarray(native).tobytes(), linear=linear)


def resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize float (H, W[, C]) with Lanczos (down) or bicubic (up), channel by channel in float precision."""
    from PIL import Image as PILImage

    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    down = width * height < arr.shape[0] * arr.shape[1]
    return _resampled(arr, width, height, PILImage.Resampling.LANCZOS if down else PILImage.Resampling.BICUBIC)


def lanczos(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize float (H, W[, C]) with Lanczos both ways: the upscale without an upscaler model."""
    from PIL import Image as PILImage

    return _resampled(arr, width, height, PILImage.Resampling.LANCZOS)


def _resampled(arr: np.ndarray, width: int, height: int, method: Any) -> np.ndarray:
    from PIL import Image as PILImage

    planes = arr[..., None] if arr.ndim == 2 else arr
    out = np.stack(
        [
            np.asarray(PILImage.fromarray(planes[..., c].astype(np.float32), mode="F").resize((width, height), method))
            for c in range(planes.shape[2])
        ],
        axis=-1,
    )
    out = np.clip(out, 0.0, 1.0)
    return out[..., 0] if arr.ndim == 2 else out


def to_pil_rgb(arr: np.ndarray) -> Any:
    from PIL import Image as PILImage

    return PILImage.fromarray(np.clip(np.rint(arr[..., :3] * 255), 0, 255).astype(np.uint8), mode="RGB")


def to_pil_gray(arr: np.ndarray) -> Any:
    from PIL import Image as PILImage

    return PILImage.fromarray(np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8), mode="L")
