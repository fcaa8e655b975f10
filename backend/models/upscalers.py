"""Image upscalers (ESRGAN and kin) from the catalogue, loaded and run through spandrel.

spandrel recognises the architecture from the weights and builds the network; Sfumato never
builds one by hand. The weights are read from ``.safetensors`` only (the catalogue never offers a
pickle). An upscaler is small (tens of MB) and runs once per job, so it is loaded per job rather
than held in the pipeline cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sfumato.protocol import ErrorCode

from ..errors import JobFailure
from ..imaging import tiles
from .catalogue import ModelEntry
from .loading import LOADING

TILE = 256  # input px per upscaler call: bounds the activations of a large picture
OVERLAP = 16


def load(entry: ModelEntry, device: str, field: str) -> Any:
    """The spandrel model descriptor of ``entry``, on ``device``, in eval mode; a typed error when
    spandrel is missing or does not take the file for a 3-channel image upscaler."""
    try:
        import spandrel
    except ImportError as exc:  # spandrel and torchvision come with the backend extras
        raise JobFailure(
            f"the upscaler {entry.id!r} needs spandrel, which cannot be imported here ({exc}); "
            "reinstall the backend (./install/start) or upscale without an upscaler",
            field,
            ErrorCode.MISSING_WEIGHTS,
        ) from None
    try:
        with LOADING:
            model = spandrel.ModelLoader(device).load_from_file(entry.path)
    except Exception as exc:  # spandrel raises plain exceptions for files it does not recognise
        raise JobFailure(
            f"{entry.id!r} is not an upscaler spandrel can load: {exc}", field, ErrorCode.MISSING_WEIGHTS
        ) from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.input_channels != 3 or model.scale < 1:
        raise JobFailure(f"{entry.id!r} is not an RGB image upscaler", field, ErrorCode.MISSING_WEIGHTS)
    return model.eval()


def upscale(model: Any, rgb: np.ndarray, cancelled: Callable[[], bool]) -> np.ndarray:
    """``rgb`` (h, w, 3) float enlarged by the model's own scale, in blended tiles; ``cancelled`` is
    asked between tiles (the caller raises)."""
    import torch

    h, w = rgb.shape[:2]
    s = model.scale
    blend = tiles.Blender(w * s, h * s, 3, OVERLAP * s)
    for tile in tiles.grid(w, h, TILE, OVERLAP):
        if cancelled():
            break
        x = torch.from_numpy(np.ascontiguousarray(rgb[tile.slices].transpose(2, 0, 1)))[None]
        with torch.inference_mode():
            y = model(x.to(model.device, model.dtype)).float().clamp(0, 1)
        big = tiles.Tile(tile.x * s, tile.y * s, tile.w * s, tile.h * s)
        blend.add(big, y[0].permute(1, 2, 0).cpu().numpy())
    return blend.result()
