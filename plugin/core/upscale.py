"""Upscale from an editor: the whole active layer enlarged ×2 or ×4 and refined in tiles.

The result is a new document (``DocumentLike.open_enlarged``), never pasted into the source: an
upscale is a bigger picture of the painting, not a layer of it. Previews are not shown in the source
document (they are tiles of the enlarged picture); the progress bar shows the work over all tiles.
"""

from __future__ import annotations

import dataclasses

from sfumato.protocol import UPSCALE_STRENGTH, Submit, UpscaleOptions

from .editor import DocumentLike
from .requests import GenerationParams, new_job_id, submit_for


def build_upscale(
    doc: DocumentLike,
    params: GenerationParams,
    factor: int,
    upscaler: str | None = None,
    strength: float = UPSCALE_STRENGTH,
    job_id: str | None = None,
    tile: int | None = None,
) -> Submit:
    """The request that enlarges the active layer over the whole canvas by ``factor`` (2 or 4).

    ``tile`` is the refine tile's side (None: the model's native size)."""
    # one picture, refined at the given strength; ControlNets and references of the docker are not an
    # upscale's (a tile ControlNet, when the backend has one, is used by the backend itself)
    refine = dataclasses.replace(params, strength=strength, batch_size=1, controls=(), references=())
    submit = submit_for(doc, refine, job_id or new_job_id(), "upscale", doc.canvas(), None, None)
    return dataclasses.replace(submit, upscale=UpscaleOptions(factor=factor, upscaler=upscaler, tile=tile))
