"""Overlapping square tiles over a large picture, and blending them back without seams.

Neighbouring tiles share ``overlap`` px; inside the shared band each tile's weight ramps linearly
from its own edge inwards (a feather), so a tile's hard edge carries almost no weight and the
picture crosses from one tile to the next gradually.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    w: int
    h: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile positions along one axis: a stride of tile − overlap, the last one flush with the end
    (so it may overlap its neighbour by more than ``overlap``, never less)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    out = list(range(0, length - tile, stride))
    return [*out, length - tile]


def grid(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """Row by row, left to right; tiles are ``tile`` px square, or the picture's side where it is smaller."""
    tw, th = min(tile, width), min(tile, height)
    return [Tile(x, y, tw, th) for y in starts(height, tile, overlap) for x in starts(width, tile, overlap)]


def _ramp(size: int, overlap: int, before: bool, after: bool) -> np.ndarray:
    """Weights along one side: (i + ½) / overlap up from an edge that has a neighbour, 1 in between."""
    w = np.ones(size, np.float32)
    n = min(overlap, size // 2)
    if n:
        up = (np.arange(n, dtype=np.float32) + 0.5) / n
        if before:
            w[:n] = np.minimum(w[:n], up)
        if after:
            w[size - n :] = np.minimum(w[size - n :], up[::-1])
    return w


def weights(tile: Tile, width: int, height: int, overlap: int) -> np.ndarray:
    """(h, w) blending weights of ``tile``: feathered only on sides where another tile continues."""
    wx = _ramp(tile.w, overlap, tile.x > 0, tile.x + tile.w < width)
    wy = _ramp(tile.h, overlap, tile.y > 0, tile.y + tile.h < height)
    return wy[:, None] * wx[None, :]


class Blender:
    """Accumulates weighted tiles; :meth:`result` is the weighted mean where tiles overlap."""

    def __init__(self, width: int, height: int, channels: int, overlap: int) -> None:
        self.width, self.height, self.overlap = width, height, overlap
        self._sum = np.zeros((height, width, channels), np.float32)
        self._weight = np.zeros((height, width, 1), np.float32)

    def add(self, tile: Tile, pixels: np.ndarray) -> None:
        w = weights(tile, self.width, self.height, self.overlap)[..., None]
        self._sum[tile.slices] += pixels * w
        self._weight[tile.slices] += w

    def result(self) -> np.ndarray:
        return self._sum / np.maximum(self._weight, 1e-12)
