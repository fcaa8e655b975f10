"""ControlNet control maps: taken as they are from a layer that already is a map, or extracted.

Canny needs no weights: OpenCV's detector. Depth, line art and pose extractors need model weights
that are not bundled; without them the error says what is missing and how to proceed.
"""

from __future__ import annotations

import numpy as np

from sfumato.protocol import ErrorCode

from ..errors import JobFailure


def control_map(kind: str, rgba: np.ndarray, preprocess: bool, field: str) -> np.ndarray:
    """(H, W, 3) float 0..1 map for the ControlNet."""
    rgb = rgba[..., :3] * rgba[..., 3:4]  # transparent areas read as black (no structure)
    if not preprocess:
        return rgb
    if kind == "canny":
        edges = canny(rgb @ np.full(3, 1 / 3, np.float32))  # the grey level (a matrix product: no temporaries)
        return np.repeat(edges[..., None].astype(np.float32), 3, axis=2)
    if kind in ("scribble", "tile"):
        return rgb
    raise JobFailure(
        f"the {kind} preprocessor needs annotator weights that are not installed; paint or import a "
        f"ready {kind} map into a layer and use it with preprocess off",
        field,
        ErrorCode.MISSING_WEIGHTS,
    )


# ControlNet's own Canny annotator uses these thresholds (on 0..255 gradients); the Canny models were trained on them.
CANNY_LOW, CANNY_HIGH = 100, 200


def canny(gray: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """Canny edges of a 0..1 grey image as a bool map (OpenCV's, the standard the models were trained with)."""
    import cv2  # imported on first use: a backend that never extracts Canny does not load OpenCV

    grey8 = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    return np.asarray(cv2.Canny(grey8, low, high)) > 0
