"""Repaint the selection: only the context around it is seen, the mask is grown and feathered for
the model and ramped for compositing, and pixels the selection does not cover stay bit-identical.
Transparent canvas under the selection is filled (expand the canvas: the new border is the selection)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sfumato.protocol import ErrorCode, Rect, Submit, context_rect

from ..errors import JobFailure
from ..imaging import masks, pixels
from ..models.catalogue import Catalogue
from . import common, control, passes
from .job import EngineResult, Job, JobHooks, Models


def check(req: Submit, catalogue: Catalogue) -> None:
    if req.mask is not None and not req.mask.data.strip(b"\0"):
        raise JobFailure("the selection is empty: select the part to repaint", "submit.mask", ErrorCode.INVALID_REQUEST)


def prepare(req: Submit, models: Models, seed: int) -> Job:
    assert req.mask is not None  # the protocol requires one for inpaint
    coverage = pixels.to_float(req.mask)[..., 0]
    # 1. regions: the result is the selection's bounds, the context what the model sees around it
    result = req.result or bounds(coverage, req.image_rect)
    context = req.context or context_rect(result, req.image_rect)
    crop = common.crop(context, req.image_rect)
    rgba = pixels.to_float(req.image)[crop]
    rgb = common.model_rgb(rgba)
    # 2. masks, relative to the selection size: what the model repaints, what the result covers
    cov = coverage[crop]
    opts = req.inpaint
    params = masks.auto_params(result.w, result.h, opts.grow, opts.feather, opts.blend)
    denoise = masks.denoise_mask(cov, params)
    alpha = masks.compositing_alpha(cov, params)
    # 3. transparent canvas under the selection (expand): it reads as the colours of the nearest picture
    #    rather than grey, and the result covers it fully, since there is nothing there to fade into
    empty = masks.empty_canvas(cov, rgba[..., 3])
    if empty.any():
        rgb = masks.fill_empty(rgb, empty)
        alpha = np.maximum(alpha, empty)
    # 4. what the masked area holds before denoising (auto: the surroundings when it is repainted from scratch)
    fill = opts.fill if opts.fill != "auto" else ("blur" if req.strength >= 0.99 else "original")
    rgb = masks.fill(rgb, denoise, fill)
    # 5. ControlNet maps of the context
    maps = control.maps(models.controls, crop)
    return common.assemble(req, models, seed, context, result, rgb, alpha, denoise, maps, covers_mask_only=True)


def inputs(job: Job, width: int, height: int) -> dict[str, Any]:
    """The denoise mask at the pass's resolution, and the conditioning."""
    assert job.denoise is not None
    mask = pixels.to_pil_gray(pixels.resize(job.denoise, width, height))
    return {"mask_image": mask, "height": height, "width": width, **control.inputs(job, width, height)}


def bounds(coverage: np.ndarray, img_rect: Rect) -> Rect:
    """The selection's bounding box, in document coordinates."""
    ys, xs = np.nonzero(coverage > 0)
    return Rect(
        x=img_rect.x + int(xs.min()),
        y=img_rect.y + int(ys.min()),
        w=int(xs.max() - xs.min()) + 1,
        h=int(ys.max() - ys.min()) + 1,
    )


def generate(rt: passes.Runtime, job: Job, hooks: JobHooks, timings: dict[str, float]) -> EngineResult:
    """One pass, and a refine pass for huge regions (passes.py)."""
    return passes.generate(rt, job, hooks, inputs, timings)
