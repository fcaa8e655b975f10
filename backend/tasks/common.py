"""What every task does the same way: crop to the context, read pixels as the model sees them,
assemble the job; and, at the end, turn generated pixels into result images."""

from __future__ import annotations

import numpy as np

from sfumato.protocol import Image, Rect, Submit

from ..imaging import pixels
from ..imaging.resolution import plan
from .job import Job, Models

Crop = tuple[slice, slice]


def crop(context: Rect, image: Rect) -> Crop:
    """The context rectangle as array slices of the request's image."""
    cx, cy = context.x - image.x, context.y - image.y
    return slice(cy, cy + context.h), slice(cx, cx + context.w)


def model_rgb(rgba: np.ndarray) -> np.ndarray:
    """What the model sees: straight colours over grey (transparent areas read as grey)."""
    return rgba[..., :3] * rgba[..., 3:] + 0.5 * (1 - rgba[..., 3:])


def assemble(
    req: Submit,
    models: Models,
    seed: int,
    context: Rect,
    result: Rect,
    rgb: np.ndarray,
    alpha: np.ndarray,
    denoise: np.ndarray | None,
    control_maps: list[np.ndarray],
    covers_mask_only: bool,
) -> Job:
    """The job, with what does not depend on the task: original pixels, seeds, resolution plan."""
    rx, ry = result.x - req.image_rect.x, result.y - req.image_rect.y
    original = pixels.native_array(req.image)[ry : ry + result.h, rx : rx + result.w]
    seeds = [(seed + i) % (1 << 32) for i in range(req.batch_size)]
    resolution = plan(context.w, context.h, models.entry.native_size)
    return Job(
        req, models, context, result, rgb, alpha, denoise, control_maps, original, seeds, resolution, covers_mask_only
    )


def unchanged(job: Job) -> list[Image]:
    """Strength 0: the input, by definition; no model call."""
    same = job.original.copy()
    if job.covers_mask_only:
        same[..., 3] = 0  # the layer covers nothing
    return [pixels.make_image(same, job.req.image.format, job.req.image.linear)] * job.req.batch_size


def finish(job: Job, generated: np.ndarray) -> Image:
    """Crop the result rectangle, set alpha to the compositing alpha, and copy the original pixels
    wherever alpha is 0 (so they stay bit-identical)."""
    c, r = job.context, job.result
    rx, ry = r.x - c.x, r.y - c.y
    rgb = generated[ry : ry + r.h, rx : rx + r.w]
    if job.req.image.linear:
        rgb = pixels.srgb_decode(rgb)  # back to the document's linear light
    alpha = job.alpha[ry : ry + r.h, rx : rx + r.w]
    fmt = job.req.image.format
    out = pixels.from_float(np.concatenate([rgb, alpha[..., None]], axis=-1), fmt)
    untouched = alpha <= 0
    out[untouched] = job.original[untouched]
    if job.covers_mask_only:
        out[..., 3][untouched] = 0  # the layer covers nothing there
    return pixels.make_image(out, fmt, job.req.image.linear)
