"""One A1111 generation as Sfumato jobs: ``Submit`` messages from the request, the A1111 answer from the results.

``n_iter`` batches become ``n_iter`` jobs of ``batch_size`` images, seeds following one another
as A1111's do (image *i* of the request uses seed + *i*), so they interleave with other editors'
jobs in the fair queue like any editor's. Both functions run on the API's image threads.

* img2img: the init image is resized to ``width`` × ``height`` (``resize_mode``) and restyled.
* inpainting (a ``mask``): with ``inpaint_full_res`` (A1111's "only masked", its default) the
  init image keeps its size, the model sees the mask's bounds grown by
  ``inpaint_full_res_padding``, and the answer is the init image with the repainted part pasted in;
  without it, the whole picture is resized to ``width`` × ``height`` and the model sees all of it.
  The mask's blur is the only softening (Sfumato's own grow, feather and blend are 0), so pixels
  the blurred mask does not cover come back bit-identical.
* txt2img: img2img at strength 1.0 from a neutral grey picture (the engine has no txt2img task).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sfumato.protocol import (
    Control,
    Image,
    InpaintOptions,
    ModelInfo,
    PixelFormat,
    PreviewSettings,
    ProtocolError,
    Rect,
    Reference,
    Result,
    Submit,
    reference_size,
)

from . import images
from .fields import IMG2IMG, MAX_SEED, ControlUnit, FieldError, Params, control_units, find_model, scheduler_for

VERSION = "sfumato"
NEUTRAL = 128  # txt2img starts from mid-grey: at strength 1.0 the noise is all the model sees of it
# inpainting_fill: 0 fill (surrounding colours), 1 original, 2 latent noise, 3 latent nothing
FILL = {0: "blur", 1: "original", 2: "neutral", 3: "neutral"}
PREVIEW = PreviewSettings(enabled=True, max_size=512)
# a Submit field a refusal names → the A1111 field the client sent
A1111_NAMES = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "strength": "denoising_strength",
    "steps": "steps",
    "guidance": "cfg_scale",
    "scheduler": "sampler_name",
    "batch_size": "batch_size",
    "image": "width",
    "mask": "mask",
    "controls": "alwayson_scripts",
    "references": "alwayson_scripts",
    "model": "sd_model_checkpoint",
}


@dataclass
class Plan:
    """What a request became: its jobs, and what its answer needs."""

    task: str  # txt2img | img2img
    params: Params
    model: ModelInfo
    submits: list[Submit]
    base: np.ndarray  # (h, w, 3) uint8: what results are pasted onto
    seeds: list[int]
    sampler: str  # the A1111 sampler name, for the infotext
    timestamp: str


def plan(
    task: str,
    params: Params,
    model: ModelInfo,
    controlnets: list[ModelInfo],
    job_prefix: str,
    max_pixels: int,
    max_controls: int,
    adapters: tuple[ModelInfo, ...] = (),
) -> Plan:
    scheduler = scheduler_for(params)
    units = control_units(params.alwayson_scripts, max_controls)
    mask: Image | None = None
    context = result = None
    if task == "txt2img":
        _check_size(params.width, params.height, max_pixels)
        rgb = np.full((params.height, params.width, 3), NEUTRAL, np.uint8)
        init = None
        strength = 1.0
    else:
        if not params.init_images:
            raise FieldError(("init_images",), "expected at least one base64 image")
        init = images.flatten_rgb(images.decode(params.init_images[0], ("init_images", 0), max_pixels))
        given = params.denoising_strength  # never null in img2img (the field's default applies)
        strength = given if given is not None else float(IMG2IMG["denoising_strength"].default)
        cover = None
        if params.mask is not None:
            cover = images.mask_coverage(images.decode(params.mask, ("mask",), max_pixels), params.mask_round)
            if cover.shape != init.shape[:2]:
                cover = images.resize(cover, init.shape[1], init.shape[0], 0)
            if params.inpainting_mask_invert:
                cover = 255 - cover
            cover = images.blur_mask(cover, params.mask_blur_x, params.mask_blur_y)
        if cover is not None and params.inpaint_full_res:
            rgb = init
        else:
            _check_size(params.width, params.height, max_pixels)
            rgb = images.resize(init, params.width, params.height, params.resize_mode)
            if cover is not None:
                cover = images.resize(cover, params.width, params.height, params.resize_mode)
        if cover is not None:
            box = images.bounds(cover)
            if box is None:
                what = "after inverting, it covers nothing" if params.inpainting_mask_invert else "it covers nothing"
                raise FieldError(("mask",), f"the mask is empty: {what} (white = repaint)")
            h, w = cover.shape
            x0, y0, x1, y1 = box
            result = Rect(x=x0, y=y0, w=x1 - x0, h=y1 - y0)
            if params.inpaint_full_res:
                pad = params.inpaint_full_res_padding
                cx0, cy0, cx1, cy1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
                context = Rect(x=cx0, y=cy0, w=cx1 - cx0, h=cy1 - cy0)
            else:
                context = Rect(x=0, y=0, w=w, h=h)
            mask = Image(width=w, height=h, format=PixelFormat.GRAY8, data=cover.tobytes())
    height, width = rgb.shape[:2]
    image = Image(width=width, height=height, format=PixelFormat.RGBA8, data=_rgba(rgb).tobytes())
    controls = tuple(
        _control(u, init, width, height, model, controlnets, adapters, max_pixels) for u in units if not u.adapter
    )
    references = tuple(_reference(u, init, adapters, max_pixels) for u in units if u.adapter)
    seed = params.seed if params.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
    submits = []
    for k in range(params.n_iter):
        try:
            submits.append(
                Submit(
                    job_id=f"{job_prefix}-{k}",
                    task="inpaint" if mask is not None else "img2img",
                    model=model.id,
                    image=image,
                    mask=mask,
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt,
                    strength=strength,
                    steps=params.steps,
                    guidance=params.cfg_scale,
                    seed=(seed + k * params.batch_size) % (MAX_SEED + 1),
                    scheduler=scheduler,
                    batch_size=params.batch_size,
                    context=context,
                    result=result,
                    controls=controls,
                    references=references,
                    preview=PREVIEW,
                    inpaint=InpaintOptions(grow=0, feather=0, blend=0, fill=FILL[params.inpainting_fill]),
                )
            )
        except ProtocolError as exc:
            raise as_field_error(exc) from None
    count = params.n_iter * params.batch_size
    return Plan(
        task=task,
        params=params,
        model=model,
        submits=submits,
        base=rgb,
        seeds=[(seed + i) % (MAX_SEED + 1) for i in range(count)],
        sampler=params.sampler_name or params.sampler_index,
        timestamp=time.strftime("%Y%m%d%H%M%S"),
    )


def as_field_error(exc: ProtocolError) -> FieldError:
    """A refusal of the protocol or engine, named by the A1111 field it is about."""
    parts = exc.field.split(".")
    name = parts[1].split("[")[0] if len(parts) > 1 and parts[0] == "submit" else ""
    field = A1111_NAMES.get(name, "")
    return FieldError((field,) if field else (), exc.message)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FieldError(
            ("width",),
            f"expected width × height of at most {max_pixels} pixels (the server's max_pixels), got {width}×{height}",
        )


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)


def _control(
    unit: ControlUnit,
    init: np.ndarray | None,
    width: int,
    height: int,
    model: ModelInfo,
    controlnets: list[ModelInfo],
    adapters: tuple[ModelInfo, ...],
    max_pixels: int,
) -> Control:
    loc = ("alwayson_scripts", "controlnet", "args", unit.index)
    source = _unit_image(unit, init, loc, max_pixels)
    cn = None
    if unit.model is not None:
        cn = find_model(unit.model, controlnets, "controlnet")
        if cn is None and find_model(unit.model, list(adapters), "ipadapter") is not None:
            raise FieldError((*loc, "module"), f"{unit.model!r} is an IP-Adapter: use the module ip-adapter-auto")
        if cn is None:
            names = ", ".join(m.id for m in controlnets) or "none installed"
            raise FieldError((*loc, "model"), f"unknown ControlNet model {unit.model!r}; available: {names}")
    control_type = unit.type or (cn.control_type if cn is not None else None)
    if control_type is None:
        raise FieldError((*loc, "module"), f"cannot tell what {unit.model!r} controls: name its preprocessor (module)")
    pixels = _rgba(images.resize(source, width, height, unit.resize_mode))
    try:
        return Control(
            type=control_type,
            image=Image(width=width, height=height, format=PixelFormat.RGBA8, data=pixels.tobytes()),
            preprocess=unit.preprocess,
            model=cn.id if cn is not None else None,
            strength=unit.weight,
            start=unit.start,
            end=unit.end,
        )
    except ProtocolError as exc:
        raise FieldError(loc, exc.message) from None


def _unit_image(unit: ControlUnit, init: np.ndarray | None, loc: tuple[Any, ...], max_pixels: int) -> np.ndarray:
    """A unit's own image, or the init image when it has none."""
    if unit.image is not None:
        return images.flatten_rgb(images.decode(unit.image, (*loc, "image"), max_pixels))
    if init is None:
        raise FieldError((*loc, "image"), "expected an image: txt2img has no init image to use instead")
    return init


def _reference(
    unit: ControlUnit, init: np.ndarray | None, adapters: tuple[ModelInfo, ...], max_pixels: int
) -> Reference:
    """An IP-Adapter unit as a reference: its image scaled so its shorter side is what the encoder sees."""
    loc = ("alwayson_scripts", "controlnet", "args", unit.index)
    source = _unit_image(unit, init, loc, max_pixels)
    adapter = None
    if unit.model is not None:
        adapter = find_model(unit.model, list(adapters), "ipadapter")
        if adapter is None:
            names = ", ".join(m.id for m in adapters) or "none installed"
            raise FieldError((*loc, "model"), f"unknown IP-Adapter {unit.model!r}; available: {names}")
    h, w = source.shape[:2]
    if (w, h) != reference_size(w, h):
        source = images.resize(source, *reference_size(w, h), 0)
        h, w = source.shape[:2]
    try:
        return Reference(
            image=Image(width=w, height=h, format=PixelFormat.RGBA8, data=_rgba(source).tobytes()),
            weight=unit.weight,
            mode="full",  # the extension's IP-Adapter carries look and content alike
            adapter=adapter.id if adapter is not None else None,
        )
    except ProtocolError as exc:
        raise FieldError(loc, exc.message) from None


# --------------------------------------------------------------------------- the answer


def answer(plan: Plan, results: list[Result], echo: dict[str, Any], interrupted: bool) -> dict[str, Any]:
    """A1111's response: ``images`` (base64 PNG), ``parameters`` (the request) and ``info`` (a JSON string)."""
    p = plan.params
    seeds: list[int] = []
    pictures: list[np.ndarray] = []
    for res in results:
        for img, seed in zip(res.images, res.seeds):
            layer = np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, 4)
            pictures.append(images.composite(plan.base, layer, res.rect.x, res.rect.y))
            seeds.append(seed)
    height, width = plan.base.shape[:2]
    texts = [_infotext(plan, seed, width, height) for seed in seeds]
    encoded = [images.encode_png(pic, text) for pic, text in zip(pictures, texts)] if p.send_images else []
    count = len(plan.seeds)
    info = {
        "prompt": p.prompt,
        "all_prompts": [p.prompt] * len(seeds),
        "negative_prompt": p.negative_prompt,
        "all_negative_prompts": [p.negative_prompt] * len(seeds),
        "seed": plan.seeds[0],
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(seeds),
        "subseed_strength": 0,
        "width": width,
        "height": height,
        "sampler_name": plan.sampler,
        "cfg_scale": p.cfg_scale,
        "steps": p.steps,
        "batch_size": p.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": plan.model.id,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": 1.0 if plan.task == "txt2img" else p.denoising_strength,
        "extra_generation_params": {"Mask blur": p.mask_blur_x} if p.mask is not None else {},
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": [],
        "job_timestamp": plan.timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": plan.model.arch.endswith("inpaint"),
        "version": VERSION,
        "interrupted": interrupted,  # Sfumato's: fewer than n_iter × batch_size images came back
        "images_requested": count,
    }
    return {"images": encoded, "parameters": echo, "info": json.dumps(info)}


def _infotext(plan: Plan, seed: int, width: int, height: int) -> str:
    """A1111's generation parameters line (clients parse ``Seed:`` and friends out of it)."""
    p = plan.params
    lines = [p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    items = {
        "Steps": p.steps,
        "Sampler": plan.sampler,
        "Schedule type": p.scheduler or "Automatic",
        "CFG scale": f"{p.cfg_scale:g}",
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": plan.model.id,
    }
    if plan.task == "img2img":
        items["Denoising strength"] = f"{p.denoising_strength:g}"
        if p.mask is not None:
            items["Mask blur"] = p.mask_blur_x
    items["Version"] = VERSION
    lines.append(", ".join(f"{k}: {v}" for k, v in items.items()))
    return "\n".join(lines)
