"""Mask shaping for seamless inpainting, all relative to the selection size.

* denoise mask (what the model repaints): the selection grown, then feathered;
* compositing alpha (what the result layer covers): the selection coverage, with a ramp just inside
  its edge so the new pixels fade into the old ones. It is exactly 0 wherever coverage is 0;
* empty canvas (expand): transparent pixels under the selection hold nothing to keep or fade into.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskParams:
    grow: int
    feather: int
    blend: int


def auto_params(sel_w: int, sel_h: int, grow: int | None, feather: int | None, blend: int | None) -> MaskParams:
    size = (sel_w + sel_h) / 2
    return MaskParams(
        grow=grow if grow is not None else int(np.clip(round(size * 0.04), 2, 48)),
        feather=feather if feather is not None else int(np.clip(round(size * 0.04), 2, 48)),
        blend=blend if blend is not None else int(np.clip(round(size * 0.03), 1, 32)),
    )


def box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window, edges replicated. O(1) per pixel via summed-area tables."""
    if r <= 0:
        return a.astype(np.float32, copy=True)
    k = 2 * r + 1
    p = np.pad(a.astype(np.float64), r, mode="edge")
    s = np.pad(p.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    out = s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]
    return (out / (k * k)).astype(np.float32)


def blur(a: np.ndarray, r: int) -> np.ndarray:
    """Three box passes of radius r/√3 ≈ a Gaussian of radius r."""
    step = max(1, round(r / 3**0.5)) if r > 0 else 0
    for _ in range(3 if step else 0):
        a = box_blur(a, step)
    return a.astype(np.float32)


def dilate(m: np.ndarray, r: int) -> np.ndarray:
    return box_blur(m.astype(np.float32), r) > 1e-6 if r > 0 else m.copy()


def erode(m: np.ndarray, r: int) -> np.ndarray:
    return box_blur(m.astype(np.float32), r) > 1 - 1e-6 if r > 0 else m.copy()


def denoise_mask(coverage: np.ndarray, p: MaskParams) -> np.ndarray:
    return np.clip(blur(dilate(coverage > 0, p.grow).astype(np.float32), p.feather), 0, 1)


def compositing_alpha(coverage: np.ndarray, p: MaskParams) -> np.ndarray:
    ramp = blur(erode(coverage > 0, p.blend).astype(np.float32), p.blend)
    alpha = np.minimum(coverage, np.clip(ramp * 1.5, 0, 1))  # ×1.5: the ramp reaches 1 before the centre
    alpha[coverage <= 0] = 0.0
    return alpha


def empty_canvas(coverage: np.ndarray, layer_alpha: np.ndarray) -> np.ndarray:
    """How empty each selected pixel is: the rule that makes transparent (or newly added) canvas count as
    masked. Only under the selection, so transparency elsewhere (a cut-out figure) is never filled."""
    return coverage * (1.0 - layer_alpha)


def surroundings(rgb: np.ndarray, keep: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: the kept pixels' colours spread ``r`` px (un-normalised) and their weight."""
    colour = np.stack([blur(rgb[..., c] * keep, r) for c in range(3)], axis=-1)
    return colour, blur(keep, r)


def fill_empty(rgb: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Empty canvas takes the colours of the nearest picture: normalised convolution at radii doubling
    from 4 px until every empty pixel is reached (a new border may be far wider than the ``blur`` fill's
    radius). A context with no picture at all stays mid-grey."""
    keep = (empty <= 0.01).astype(np.float32)
    filled = np.full_like(rgb, 0.5)
    todo = np.ones(empty.shape, bool)
    r = 4
    while keep.any() and todo.any():
        colour, weight = surroundings(rgb, keep, r)
        reached = todo & (weight > 1e-4)
        filled[reached] = colour[reached] / weight[reached][:, None]
        todo &= ~reached
        if r > 2 * max(empty.shape):
            break
        r *= 2
    m = empty[..., None]
    return rgb * (1 - m) + filled * m


def fill(rgb: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """What the masked area holds before denoising (matters most at strength 1)."""
    if mode in ("none", "original"):
        return rgb
    m = mask[..., None]
    if mode == "neutral":
        return rgb * (1 - m) + 0.5 * m
    if mode == "blur":  # colours of the surroundings, by normalised convolution
        keep = 1.0 - (mask > 0.01).astype(np.float32)
        colour, weight = surroundings(rgb, keep, max(4, int(max(rgb.shape[:2]) * 0.1)))
        filled = np.where(weight[..., None] > 1e-4, colour / np.maximum(weight, 1e-4)[..., None], 0.5)
        return rgb * (1 - m) + filled * m
    raise ValueError(mode)
