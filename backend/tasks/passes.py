"""Running the pipeline for a prepared job: one or two passes with progress, cancel and previews.

Steps of :func:`generate`, in order:

1. report the start (steps that will run, resolution, seeds);
2. strength 0: the input unchanged, no model call;
3. the first pass at the planned resolution;
4. huge regions: a refine pass at full resolution on the first pass's pictures;
5. the result pixels (common.finish).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sfumato.protocol import ErrorCode, Image, PixelFormat

from ..errors import JobFailure, is_out_of_memory
from ..imaging import pixels
from ..imaging.preview import LatentPreviewer
from ..models import addons
from ..models.cache import PipelineCache
from ..models.catalogue import Catalogue
from ..models.loading import LOADING, entered_and_left_locked
from ..models.schedulers import make_scheduler
from . import common, reference
from .job import EngineResult, Job, JobCancelled, JobHooks, steps_run

REFINE_STRENGTH = 0.35  # second pass of huge regions: adds detail without changing the composition

Inputs = Callable[[Job, int, int], dict[str, Any]]  # a task's own pipeline arguments at a resolution


@dataclass(frozen=True)
class Runtime:
    """What a pass takes from the engine running it."""

    catalogue: Catalogue
    cache: PipelineCache
    previewers: weakref.WeakKeyDictionary[Any, LatentPreviewer]  # one per VAE object, forgotten with it


def generate(rt: Runtime, job: Job, hooks: JobHooks, inputs: Inputs, timings: dict[str, float]) -> EngineResult:
    req, resolution = job.req, job.plan
    # 1. report the start; the refine pass runs only when it gets at least one step (1-2 step Turbo/LCM get none)
    n1 = steps_run(req.steps, req.strength)
    n2 = steps_run(req.steps, min(req.strength, REFINE_STRENGTH)) if resolution.refine and n1 else 0
    hooks.started(n1 + n2, req.steps, resolution.width, resolution.height, job.seeds)
    if hooks.cancelled():
        raise JobCancelled
    # 2. strength 0
    if n1 == 0:
        return EngineResult(common.unchanged(job), job.result, job.seeds, timings)
    with job_pipeline(rt, job) as pipe:
        # 3. the first pass
        t = time.perf_counter()
        outputs = run_pass(
            rt, job, inputs, job.rgb, resolution.width, resolution.height, req.strength, 0, n1 + n2, hooks, pipe
        )
        timings["generate"] = time.perf_counter() - t
        # 4. the refine pass
        if n2:
            t = time.perf_counter()
            w, h, strength = resolution.refine_width, resolution.refine_height, min(req.strength, REFINE_STRENGTH)
            outputs = run_pass(rt, job, inputs, outputs, w, h, strength, n1, n1 + n2, hooks, pipe)
            timings["refine"] = time.perf_counter() - t
    # 5. the result pixels
    t = time.perf_counter()
    images = [common.finish(job, out) for out in outputs]
    timings["finish"] = time.perf_counter() - t
    return EngineResult(images, job.result, job.seeds, timings)


@contextmanager
def job_pipeline(rt: Runtime, job: Job) -> Iterator[Any]:
    """The job's pipeline with its LoRAs, embeddings, VAE and references applied — once for all its passes
    (and an upscale's tile batches), taken off again after it. A GPU out of memory fails this job alone."""
    models = job.models
    task = job.req.task + ("+control" if models.controls else "")
    try:
        with LOADING:  # workers on other devices may be loading too (models/loading.py)
            pipe = rt.cache.pipeline(models.entry, task, [cn for _, cn in models.controls])
        with (
            entered_and_left_locked(addons.applied(pipe, models.entry, models.addons, rt.cache)),  # this job only
            entered_and_left_locked(reference.applied(rt.cache, job, pipe)),
        ):
            yield pipe
    except JobCancelled:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            rt.cache.clear()  # this job fails alone; the next one starts from a free card
            raise JobFailure(
                "the GPU ran out of memory; try a smaller selection, a smaller batch or fewer controls",
                "",
                ErrorCode.OUT_OF_MEMORY,
            ) from None
        raise


def run_pass(
    rt: Runtime,
    job: Job,
    inputs: Inputs,
    source: np.ndarray | list[np.ndarray],
    width: int,
    height: int,
    strength: float,
    step_offset: int,
    total: int,
    hooks: JobHooks,
    pipe: Any,
) -> list[np.ndarray]:
    """One call of ``pipe`` (from :func:`job_pipeline`). ``source`` is the context-sized input (one, or one
    per batch item)."""
    import torch

    req, models = job.req, job.models
    pipe.scheduler = make_scheduler(req.scheduler, pipe.scheduler.config)
    per_item = isinstance(source, list)
    batch = len(job.seeds)
    sources = source if isinstance(source, list) else [source]
    images = [pixels.to_pil_rgb(pixels.resize(s, width, height)) for s in sources]
    prompt, negative = models.addons.prompt, models.addons.negative_prompt
    kwargs: dict[str, Any] = {
        "prompt": [prompt] * len(images) if per_item else prompt,
        "negative_prompt": [negative] * len(images) if per_item else negative,
        "image": images if per_item else images[0],
        "strength": strength,
        "num_inference_steps": req.steps,
        "guidance_scale": req.guidance,
        "num_images_per_prompt": 1 if per_item else batch,
        "generator": [torch.Generator("cpu").manual_seed(s) for s in job.seeds],
        "output_type": "np",
        "callback_on_step_end": _callback(rt, job, step_offset, total, hooks),
        **inputs(job, width, height),
        **reference.inputs(rt.cache, job, pipe, len(images) if per_item else 1),
    }
    out = pipe(**kwargs).images  # (B, H, W, 3) float
    if hooks.cancelled():
        raise JobCancelled
    return [pixels.resize(np.asarray(o, dtype=np.float32), job.context.w, job.context.h) for o in out]


def _callback(rt: Runtime, job: Job, offset: int, total: int, hooks: JobHooks) -> Any:
    def on_step_end(pipe: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if hooks.cancelled():
            raise JobCancelled
        hooks.progress(offset + i + 1, total)
        if job.req.preview.enabled and hooks.wants_preview():
            hooks.preview(preview(rt, job, pipe, kw["latents"]))
        return kw

    return on_step_end


def preview(rt: Runtime, job: Job, pipe: Any, latents: Any) -> Image:
    """A quick look at the result rectangle, at most ``preview.max_size``, with the compositing alpha."""
    previewer = rt.previewers.get(pipe.vae)
    if previewer is None:
        decoder = rt.catalogue.preview_decoder_for(job.models.entry.arch)
        with LOADING:
            tiny_vae = rt.cache.preview_decoder(decoder) if decoder is not None else None
        previewer = rt.previewers[pipe.vae] = LatentPreviewer(tiny_vae)
    rgb = previewer.rgb(latents, pipe.vae)
    h, w = rgb.shape[:2]
    c, r = job.context, job.result
    x0, y0 = (r.x - c.x) * w // c.w, (r.y - c.y) * h // c.h
    x1, y1 = max(x0 + 1, (r.right - c.x) * w // c.w), max(y0 + 1, (r.bottom - c.y) * h // c.h)
    crop = rgb[y0:y1, x0:x1]
    scale = min(1.0, job.req.preview.max_size / max(r.w, r.h))
    pw, ph = max(1, round(r.w * scale)), max(1, round(r.h * scale))
    rx, ry = r.x - c.x, r.y - c.y
    alpha = pixels.resize(job.alpha[ry : ry + r.h, rx : rx + r.w], pw, ph)
    rgba = np.concatenate([pixels.resize(crop, pw, ph), alpha[..., None]], axis=-1)
    return pixels.make_image(pixels.from_float(rgba, PixelFormat.RGBA8), PixelFormat.RGBA8)
