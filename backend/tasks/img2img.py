"""Restyle: the layer (or the request's result rectangle) goes through img2img; its alpha is kept."""

from __future__ import annotations

from typing import Any

from sfumato.protocol import Submit

from ..imaging import pixels
from ..models.catalogue import Catalogue
from . import common, control, passes
from .job import EngineResult, Job, JobHooks, Models


def check(req: Submit, catalogue: Catalogue) -> None:
    """Nothing beyond the common checks."""


def prepare(req: Submit, models: Models, seed: int) -> Job:
    # 1. regions: the result is the layer, or the request's rectangle; the model sees just that
    result = req.result or req.image_rect
    context = req.context or result
    crop = common.crop(context, req.image_rect)
    # 2. the pixels the model sees; the result keeps the layer's alpha
    rgba = pixels.to_float(req.image)[crop]
    rgb = common.model_rgb(rgba)
    alpha = rgba[..., 3].copy()
    # 3. ControlNet maps of the context
    maps = control.maps(models.controls, crop)
    return common.assemble(req, models, seed, context, result, rgb, alpha, None, maps, covers_mask_only=False)


def inputs(job: Job, width: int, height: int) -> dict[str, Any]:
    """The pipeline arguments of this task beyond the common ones: only its conditioning."""
    return control.inputs(job, width, height)


def generate(rt: passes.Runtime, job: Job, hooks: JobHooks, timings: dict[str, float]) -> EngineResult:
    """One pass, and a refine pass for huge regions (passes.py)."""
    return passes.generate(rt, job, hooks, inputs, timings)
