"""ControlNet control maps: taken as they are from a layer that already is a map, or extracted.

Canny needs no weights and is built in. Depth, line art and pose extractors need model weights
that are not bundled; without them the error says what is missing and how to proceed.
"""

from __future__ import annotations

import numpy as np

from sfumato.protocol import ErrorCode, ProtocolError

from .masks import blur


def control_map(kind: str, rgba: np.ndarray, preprocess: bool, field: str) -> np.ndarray:
    """(H, W, 3) float 0..1 map for the ControlNet."""
    rgb = rgba[..., :3] * rgba[..., 3:4]  # transparent areas read as black (no structure)
    if not preprocess:
        return rgb
    if kind == "canny":
        edges = canny(rgb.mean(axis=2))
        return np.repeat(edges[..., None].astype(np.float32), 3, axis=2)
    if kind in ("scribble", "tile"):
        return rgb
    raise ProtocolError(
        f"the {kind} preprocessor needs annotator weights that are not installed; paint or import a "
        f"ready {kind} map into a layer and use it with preprocess off",
        field,
        ErrorCode.MISSING_WEIGHTS,
    )


def canny(gray: np.ndarray, low: float = 0.08, high: float = 0.2) -> np.ndarray:
    """Canny edges: smooth, Sobel, non-maximum suppression, hysteresis. Returns a bool map."""
    g = blur(gray.astype(np.float32), 1)
    p = np.pad(g, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.hypot(gx, gy) / 4.0
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (np.floor((angle + 22.5) / 45.0).astype(np.int8)) % 4  # 0: E-W, 1: NE, 2: N-S, 3: NW
    mp = np.pad(mag, 1)
    neighbours = {
        0: (mp[1:-1, 2:], mp[1:-1, :-2]),
        1: (mp[:-2, 2:], mp[2:, :-2]),
        2: (mp[2:, 1:-1], mp[:-2, 1:-1]),
        3: (mp[2:, 2:], mp[:-2, :-2]),
    }
    keep = np.zeros_like(mag, dtype=bool)
    for s, (a, b) in neighbours.items():
        keep |= (sector == s) & (mag >= a) & (mag >= b)
    thin = np.where(keep, mag, 0.0)
    strong, weak = thin >= high, thin >= low
    edges = strong
    while True:  # grow strong edges through connected weak ones
        grown = weak & (
            np.pad(edges, 1)[:-2, :-2]
            | np.pad(edges, 1)[:-2, 1:-1]
            | np.pad(edges, 1)[:-2, 2:]
            | np.pad(edges, 1)[1:-1, :-2]
            | edges
            | np.pad(edges, 1)[1:-1, 2:]
            | np.pad(edges, 1)[2:, :-2]
            | np.pad(edges, 1)[2:, 1:-1]
            | np.pad(edges, 1)[2:, 2:]
        )
        if (grown == edges).all():
            return edges
        edges = grown
