"""Upscale: enlarge the whole image ×2 or ×4 (an upscaler model, or Lanczos), then refine it at low
strength in overlapping tiles at the checkpoint's native size, blended so no seam shows.

Steps of :func:`generate`, in order:

1. the tiles: size and overlap from the request or the checkpoint's native size;
2. report the start: the denoising steps of all tiles together, one progress over them;
3. enlarge: the upscaler model (spandrel) or Lanczos, then exactly to the requested size;
4. refine the tiles, a batch at a time, each tile seeded seed + its index, held to its own picture by a
   tile ControlNet when the catalogue has one for the checkpoint's family, blended by feathered weights;
5. the result: the enlarged alpha, the document's pixel format.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sfumato.protocol import Control, ErrorCode, Image, PixelFormat, Rect, Submit, arch_family

from ..errors import JobFailure
from ..imaging import pixels, tiles
from ..imaging.resolution import plan
from ..models import upscalers
from ..models.catalogue import Catalogue, ModelEntry
from . import common, passes
from .job import EngineResult, Job, JobCancelled, JobHooks, Models, steps_run

TILES_PER_BATCH = 4  # tiles denoised in one pipeline call (one image each of a batch)
MULTIPLE = 8  # the pipeline's latent grid
# The tile ControlNet's settings; its map is each tile's own picture (Job.control_maps), so the
# record's image, which a Control must carry, is never read.
TILE_CONTROL = Control(
    type="tile", image=Image(width=1, height=1, format=PixelFormat.GRAY8, data=b"\0"), preprocess=False
)


def check(req: Submit, catalogue: Catalogue) -> None:
    if req.batch_size != 1:
        raise JobFailure(
            "an upscale makes one picture: batch_size must be 1", "submit.batch_size", ErrorCode.INVALID_REQUEST
        )
    if req.controls:
        raise JobFailure("an upscale takes no controls", "submit.controls", ErrorCode.INVALID_REQUEST)
    if req.upscale.upscaler is not None:
        catalogue.get(req.upscale.upscaler, "upscaler", "submit.upscale.upscaler")


def prepare(req: Submit, models: Models, seed: int) -> Job:
    # the whole image as the model sees it; the result is the image's rectangle scaled by the factor
    rgba = pixels.to_float(req.image)
    rgb, alpha = common.model_rgb(rgba), rgba[..., 3].copy()
    original = pixels.native_array(req.image)
    size = tile_size(req, models)
    return Job(
        req,
        models,
        req.image_rect,
        req.output_rect,
        rgb,
        alpha,
        None,
        [],
        original,
        [seed],
        plan(size, size, size),
        False,
    )


def inputs(job: Job, width: int, height: int) -> dict[str, Any]:
    """With a tile ControlNet: each tile of the batch conditioned on its own enlarged picture."""
    if not job.models.controls:
        return {}
    return {
        "control_image": [pixels.to_pil_rgb(pixels.resize(m, width, height)) for m in job.control_maps],
        "controlnet_conditioning_scale": TILE_CONTROL.strength,
    }


def tile_controlnet(catalogue: Catalogue, entry: ModelEntry) -> ModelEntry | None:
    """The catalogue's tile ControlNet for the checkpoint's family, if it has one."""
    found = [
        e
        for e in catalogue.of_kind("controlnet")
        if e.control_type == "tile" and arch_family(e.arch) == arch_family(entry.arch)
    ]
    return found[0] if found else None


def tile_size(req: Submit, models: Models) -> int:
    native = models.entry.native_size or 512
    return max(MULTIPLE, (req.upscale.tile or native) // MULTIPLE * MULTIPLE)


def generate(rt: passes.Runtime, job: Job, hooks: JobHooks, timings: dict[str, float]) -> EngineResult:
    req, out = job.req, job.result
    # 1. the tiles
    size = tile_size(req, job.models)
    overlap = req.upscale.overlap if req.upscale.overlap is not None else size // 8
    grid = tiles.grid(out.w, out.h, size, overlap)
    batches = [grid[i : i + TILES_PER_BATCH] for i in range(0, len(grid), TILES_PER_BATCH)]
    # 2. report the start
    n = steps_run(req.steps, req.strength)
    total = n * len(batches)
    hooks.started(total, req.steps, min(size, out.w), min(size, out.h), job.seeds)
    # 3. enlarge
    big = enlarge(rt, job, hooks)
    alpha = pixels.lanczos(job.alpha, out.w, out.h)
    # 4. refine
    if n:
        blend = tiles.Blender(out.w, out.h, 3, overlap)
        tile_req = dataclasses.replace(req, task="img2img")  # each tile is restyled
        cn = tile_controlnet(rt.catalogue, job.models.entry)
        if cn is not None:
            job = dataclasses.replace(job, models=dataclasses.replace(job.models, controls=[(TILE_CONTROL, cn)]))
        job = dataclasses.replace(job, req=tile_req)
        with passes.job_pipeline(rt, job) as pipe:  # add-ons applied once for every batch
            for b, batch in enumerate(batches):
                if hooks.cancelled():
                    raise JobCancelled
                refined = refine(rt, pipe, job, batch, big, alpha, b * TILES_PER_BATCH, b * n, total, hooks)
                for tile, rgb in zip(batch, refined):
                    blend.add(tile, rgb)
        big = blend.result()
    # 5. the result
    if req.image.linear:
        big = pixels.srgb_decode(big)  # back to the document's linear light
    fmt = req.image.format
    rgba = pixels.from_float(np.concatenate([big, alpha[..., None]], axis=-1), fmt)
    return EngineResult([pixels.make_image(rgba, fmt, req.image.linear)], out, job.seeds, timings)


def enlarge(rt: passes.Runtime, job: Job, hooks: JobHooks) -> np.ndarray:
    """The picture at the result's size: the upscaler's own scale, then Lanczos to the exact factor."""
    out, rgb = job.result, job.rgb
    if job.req.upscale.upscaler is not None:
        entry = rt.catalogue.get(job.req.upscale.upscaler, "upscaler", "submit.upscale.upscaler")
        model = upscalers.load(entry, rt.cache.device, "submit.upscale.upscaler")
        rgb = upscalers.upscale(model, rgb, hooks.cancelled)
        if hooks.cancelled():
            raise JobCancelled
    return pixels.lanczos(rgb, out.w, out.h)


def refine(
    rt: passes.Runtime,
    pipe: Any,
    job: Job,
    batch: list[tiles.Tile],
    big: np.ndarray,
    alpha: np.ndarray,
    first: int,
    offset: int,
    total: int,
    hooks: JobHooks,
) -> list[np.ndarray]:
    """One pipeline call over a batch of same-sized tiles; the previews show the batch's first tile."""
    t = batch[0]
    seeds = [(job.seeds[0] + first + i) % (1 << 32) for i in range(len(batch))]
    rect = Rect(x=t.x, y=t.y, w=t.w, h=t.h)
    sources = [big[tile.slices] for tile in batch]
    tile_job = dataclasses.replace(
        job,
        context=rect,
        result=rect,
        rgb=big[t.slices],
        alpha=alpha[t.slices],
        seeds=seeds,
        control_maps=sources,
    )
    width, height = _snap(t.w), _snap(t.h)
    return passes.run_pass(rt, tile_job, inputs, sources, width, height, job.req.strength, offset, total, hooks, pipe)


def _snap(side: int) -> int:
    return max(MULTIPLE, -(-side // MULTIPLE) * MULTIPLE)
