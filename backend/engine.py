"""The diffusion engine: one ``Submit`` in, result pixels out. Runs on the worker thread.

Steps of :meth:`Engine.run`, in order:

1. check the request against what this engine can do (model, scheduler, steps × strength);
2. work out the regions: the *result* rectangle (what is pasted) and the *context* (what the model sees);
3. crop image, coverage and control images to the context; shape the masks;
4. plan the resolution (native range, multiples of 8, optional refine pass);
5. run the pipeline(s) with per-step progress, previews and cancel;
6. scale back, crop the result rectangle, set alpha to the compositing mask, and copy the original
   pixels wherever alpha is 0 (so they stay bit-identical).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sfumato.protocol import (
    MODEL_KINDS,
    Control,
    ErrorCode,
    Image,
    ModelInfo,
    PixelFormat,
    Rect,
    Submit,
    context_rect,
)

from .errors import JobFailure, is_out_of_memory
from .imaging import masks, pixels
from .imaging.control import control_map
from .imaging.preview import LatentPreviewer
from .imaging.resolution import Plan, plan
from .models import addons
from .models.cache import PipelineCache
from .models.catalogue import Catalogue, ModelEntry
from .models.loading import LOADING, entered_and_left_locked
from .models.schedulers import check_scheduler, make_scheduler

log = logging.getLogger(__name__)

REFINE_STRENGTH = 0.35  # second pass of huge regions: adds detail without changing the composition


class JobCancelled(Exception):
    """Raised from the step callback: stops the pipeline at once and skips the final decode."""


class JobHooks(Protocol):
    """How a running job reports back; called on the worker thread."""

    def started(self, steps: int, steps_requested: int, width: int, height: int, seeds: list[int]) -> None: ...
    def progress(self, step: int, total: int) -> None: ...
    def wants_preview(self) -> bool: ...
    def preview(self, image: Image) -> None: ...
    def cancelled(self) -> bool: ...


class NoHooks:
    """Hooks for in-process callers that want nothing reported."""

    def started(self, steps: int, steps_requested: int, width: int, height: int, seeds: list[int]) -> None:
        pass

    def progress(self, step: int, total: int) -> None:
        pass

    def wants_preview(self) -> bool:
        return False

    def preview(self, image: Image) -> None:
        pass

    def cancelled(self) -> bool:
        return False


@dataclass
class EngineResult:
    images: list[Image]
    rect: Rect
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Job:
    """Everything prepared for the pipeline, in context coordinates."""

    req: Submit
    entry: ModelEntry
    controls: list[tuple[Control, ModelEntry]]
    context: Rect
    result: Rect
    rgb: np.ndarray  # (h, w, 3) model input, context-sized
    alpha: np.ndarray  # (h, w) compositing alpha, context-sized
    denoise: np.ndarray | None  # (h, w) inpaint mask, context-sized
    control_maps: list[np.ndarray]
    original: np.ndarray  # native pixels of the result rectangle
    seeds: list[int]
    plan: Plan
    addons: addons.Addons


def steps_run(steps: int, strength: float) -> int:
    """How many denoising steps diffusers actually runs for img2img/inpaint."""
    return min(int(steps * strength), steps)


def _quiet_libraries() -> None:
    """diffusers and transformers print progress bars and advice meant for notebooks; a server logs."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def pick_device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, precision: str = "auto") -> Any:
    import torch

    if precision == "fp32" or device == "cpu":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    return torch.float16


class Engine:
    def __init__(
        self,
        catalogue: Catalogue,
        device: str = "auto",
        precision: str = "auto",
        budget_bytes: int = 12 << 30,
        memory: str = "auto",
    ) -> None:
        _quiet_libraries()
        self.catalogue = catalogue
        self.device = pick_device(device)
        self.cache = PipelineCache(self.device, pick_dtype(self.device, precision), budget_bytes, memory=memory)
        # one previewer per VAE object, forgotten with it (a VAE's id() may be reused by a later model)
        self._previewers: weakref.WeakKeyDictionary[Any, LatentPreviewer] = weakref.WeakKeyDictionary()

    def device_label(self) -> str:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            name = torch.cuda.get_device_name(torch.device(self.device))
            return f"{self.device} ({name}), memory {self.cache.memory_mode}"[:128]
        return self.device

    def models(self) -> list[ModelInfo]:
        return [e.info() for e in self.catalogue.all() if e.kind in MODEL_KINDS]

    def loaded_models(self) -> list[str]:
        return self.cache.loaded

    # ------------------------------------------------------------------ 1. checks

    def check(self, req: Submit) -> tuple[ModelEntry, list[tuple[Control, ModelEntry]]]:
        """Everything that can be rejected before the job is queued."""
        entry = self.catalogue.get(req.model)
        check_scheduler(req.scheduler)
        if req.strength > 0 and steps_run(req.steps, req.strength) < 1:
            raise JobFailure(
                f"steps × strength = {req.steps} × {req.strength:g} runs no denoising step; it must be at least 1: "
                "raise steps or strength",
                "submit.steps",
                ErrorCode.INVALID_REQUEST,
            )
        controls = []
        for i, c in enumerate(req.controls):
            path = f"submit.controls[{i}]"
            cn = (
                self.catalogue.get(c.model, "controlnet", f"{path}.model")
                if c.model
                else self.catalogue.controlnet_for(c.type, entry.arch, f"{path}.model")
            )
            if cn.arch.split("-")[0] != entry.arch.split("-")[0]:
                raise JobFailure(
                    f"ControlNet {cn.id!r} ({cn.arch}) does not fit {entry.id!r} ({entry.arch})",
                    f"{path}.model",
                    ErrorCode.INVALID_REQUEST,
                )
            controls.append((c, cn))
        if req.task == "inpaint" and req.mask is not None and not req.mask.data.strip(b"\0"):
            raise JobFailure(
                "the selection is empty: select the part to repaint", "submit.mask", ErrorCode.INVALID_REQUEST
            )
        self.addons(req, entry)  # LoRAs, embeddings and a VAE that do not exist or fit are refused before queueing
        return entry, controls

    def addons(self, req: Submit, entry: ModelEntry) -> addons.Addons:
        return addons.resolve(req, self.catalogue, entry, self.cache.fp16)

    # ------------------------------------------------------------------ 2-4. regions, masks, plan

    def prepare(self, req: Submit, seed: int) -> _Job:
        entry, controls = self.check(req)
        image = pixels.to_float(req.image)
        coverage = pixels.to_float(req.mask)[..., 0] if req.mask is not None else None
        img_rect = req.image_rect
        if req.task == "inpaint":
            assert coverage is not None
            result = req.result or _bounds(coverage, img_rect)
            context = req.context or context_rect(result, img_rect)
        else:
            result = req.result or img_rect
            context = req.context or result
        cx, cy = context.x - img_rect.x, context.y - img_rect.y
        crop = (slice(cy, cy + context.h), slice(cx, cx + context.w))
        rgba = image[crop]
        rgb = rgba[..., :3] * rgba[..., 3:] + 0.5 * (1 - rgba[..., 3:])  # transparent areas read as grey
        denoise = None
        if req.task == "inpaint":
            assert coverage is not None
            cov = coverage[crop]
            opts = req.inpaint
            params = masks.auto_params(result.w, result.h, opts.grow, opts.feather, opts.blend)
            denoise = masks.denoise_mask(cov, params)
            alpha = masks.compositing_alpha(cov, params)
            fill = opts.fill if opts.fill != "auto" else ("blur" if req.strength >= 0.99 else "original")
            rgb = masks.fill(rgb, denoise, fill)
        else:
            alpha = rgba[..., 3].copy()
        maps = [
            control_map(c.type, pixels.to_float(c.image)[crop], c.preprocess, f"submit.controls[{i}].image")
            for i, (c, _) in enumerate(controls)
        ]
        rx, ry = result.x - img_rect.x, result.y - img_rect.y
        original = pixels.native_array(req.image)[ry : ry + result.h, rx : rx + result.w]
        seeds = [(seed + i) % (1 << 32) for i in range(req.batch_size)]
        return _Job(
            req,
            entry,
            controls,
            context,
            result,
            rgb,
            alpha,
            denoise,
            maps,
            original,
            seeds,
            plan(context.w, context.h, entry.native_size),
            self.addons(req, entry),
        )

    # ------------------------------------------------------------------ 5. generate

    def run(self, req: Submit, seed: int, hooks: JobHooks | None = None) -> EngineResult:
        hooks = hooks or NoHooks()
        t0 = time.perf_counter()
        job = self.prepare(req, seed)
        timings = {"prepare": time.perf_counter() - t0}
        n1 = steps_run(req.steps, req.strength)
        # the refine pass runs only when it gets at least one step (1-2 step Turbo/LCM requests get none)
        n2 = steps_run(req.steps, min(req.strength, REFINE_STRENGTH)) if job.plan.refine and n1 else 0
        hooks.started(n1 + n2, req.steps, job.plan.width, job.plan.height, job.seeds)
        if hooks.cancelled():
            raise JobCancelled
        if n1 == 0:  # strength 0: unchanged, by definition; no model call
            unchanged = job.original.copy()
            if req.task == "inpaint":
                unchanged[..., 3] = 0  # the layer covers nothing
            images = [pixels.make_image(unchanged, req.image.format, req.image.linear)] * req.batch_size
            timings["total"] = time.perf_counter() - t0
            return EngineResult(images, job.result, job.seeds, timings)
        else:
            try:
                t = time.perf_counter()
                outputs = self._pass(job, job.rgb, job.plan.width, job.plan.height, req.strength, 0, n1 + n2, hooks)
                timings["generate"] = time.perf_counter() - t
                if n2:
                    t = time.perf_counter()
                    w, h = job.plan.refine_width, job.plan.refine_height
                    outputs = self._pass(job, outputs, w, h, min(req.strength, REFINE_STRENGTH), n1, n1 + n2, hooks)
                    timings["refine"] = time.perf_counter() - t
            except JobCancelled:
                raise
            except Exception as exc:
                if is_out_of_memory(exc):
                    self.cache.clear()  # this job fails alone; the next one starts from a free card
                    raise JobFailure(
                        "the GPU ran out of memory; try a smaller selection, a smaller batch or fewer controls",
                        "",
                        ErrorCode.OUT_OF_MEMORY,
                    ) from None
                raise
        t = time.perf_counter()
        images = [self._finish(job, out) for out in outputs]
        timings["finish"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        return EngineResult(images, job.result, job.seeds, timings)

    def _pass(
        self,
        job: _Job,
        source: np.ndarray | list[np.ndarray],
        width: int,
        height: int,
        strength: float,
        step_offset: int,
        total: int,
        hooks: JobHooks,
    ) -> list[np.ndarray]:
        """One pipeline call. ``source`` is the context-sized input (one, or one per batch item)."""
        import torch

        req = job.req
        task = req.task + ("+control" if job.controls else "")
        with LOADING:  # workers on other devices may be loading too (models/loading.py)
            pipe = self.cache.pipeline(job.entry, task, [cn for _, cn in job.controls])
        pipe.scheduler = make_scheduler(req.scheduler, pipe.scheduler.config)
        per_item = isinstance(source, list)
        batch = len(job.seeds)
        sources = source if isinstance(source, list) else [source]
        images = [pixels.to_pil_rgb(pixels.resize(s, width, height)) for s in sources]
        prompt, negative = job.addons.prompt, job.addons.negative_prompt
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
            "callback_on_step_end": self._callback(job, step_offset, total, hooks),
        }
        if job.denoise is not None:
            kwargs.update(
                mask_image=pixels.to_pil_gray(pixels.resize(job.denoise, width, height)), height=height, width=width
            )
        if job.controls:
            maps = [pixels.to_pil_rgb(pixels.resize(m, width, height)) for m in job.control_maps]
            many = len(maps) > 1
            kwargs["control_image"] = maps if many else maps[0]
            kwargs["controlnet_conditioning_scale"] = (
                [c.strength for c, _ in job.controls] if many else job.controls[0][0].strength
            )
            kwargs["control_guidance_start"] = [c.start for c, _ in job.controls] if many else job.controls[0][0].start
            kwargs["control_guidance_end"] = [c.end for c, _ in job.controls] if many else job.controls[0][0].end
        with entered_and_left_locked(addons.applied(pipe, job.entry, job.addons, self.cache)):  # this job only
            out = pipe(**kwargs).images  # (B, H, W, 3) float
        if hooks.cancelled():
            raise JobCancelled
        return [pixels.resize(np.asarray(o, dtype=np.float32), job.context.w, job.context.h) for o in out]

    def _callback(self, job: _Job, offset: int, total: int, hooks: JobHooks) -> Any:
        def on_step_end(pipe: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            if hooks.cancelled():
                raise JobCancelled
            hooks.progress(offset + i + 1, total)
            if job.req.preview.enabled and hooks.wants_preview():
                hooks.preview(self._preview(job, pipe, kw["latents"]))
            return kw

        return on_step_end

    def _preview(self, job: _Job, pipe: Any, latents: Any) -> Image:
        previewer = self._previewers.get(pipe.vae)
        if previewer is None:
            decoder = self.catalogue.preview_decoder_for(job.entry.arch)
            with LOADING:
                tiny_vae = self.cache.preview_decoder(decoder) if decoder is not None else None
            previewer = self._previewers[pipe.vae] = LatentPreviewer(tiny_vae)
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

    # ------------------------------------------------------------------ 6. result pixels

    def _finish(self, job: _Job, generated: np.ndarray) -> Image:
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
        if job.req.task == "inpaint":
            out[..., 3][untouched] = 0  # the layer covers nothing there
        return pixels.make_image(out, fmt, job.req.image.linear)


def _bounds(coverage: np.ndarray, img_rect: Rect) -> Rect:
    ys, xs = np.nonzero(coverage > 0)
    return Rect(
        x=img_rect.x + int(xs.min()),
        y=img_rect.y + int(ys.min()),
        w=int(xs.max() - xs.min()) + 1,
        h=int(ys.max() - ys.min()) + 1,
    )
