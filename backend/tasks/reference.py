"""Reference images (IP-Adapter), added to img2img or inpaint: each reference's adapter and image encoder,
its embedding, and the adapters in the UNet for the pass.

Steps, in order: 1. :func:`check` (before queueing); 2. :func:`inputs` and 3. :func:`applied`, for
each pass (passes.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sfumato.protocol import ErrorCode, Reference, arch_family

from ..errors import JobFailure
from ..imaging import pixels
from ..models import ipadapters
from ..models.cache import PipelineCache
from ..models.catalogue import Catalogue, ModelEntry
from ..models.image_encoders import digest
from .common import model_rgb
from .job import ChosenReference, Job


def check(catalogue: Catalogue, references: tuple[Reference, ...], entry: ModelEntry) -> list[ChosenReference]:
    """1. each reference's IP-Adapter (the one named, or one for the checkpoint's family) and the image encoder
    it reads; it must fit the checkpoint. A reference of weight 0 is dropped here, before anything is loaded,
    so the job is exactly the job without it."""
    chosen = []
    for i, ref in enumerate(references):
        if ref.weight == 0:
            continue
        field = f"submit.references[{i}].adapter"
        adapter = (
            catalogue.get(ref.adapter, "ipadapter", field)
            if ref.adapter
            else catalogue.ipadapter_for(entry.arch, field)
        )
        if arch_family(adapter.arch) != arch_family(entry.arch):
            raise JobFailure(
                f"IP-Adapter {adapter.id!r} is for {arch_family(adapter.arch)} models; {entry.id!r} is "
                f"{arch_family(entry.arch)}: choose an IP-Adapter made for it",
                field,
                ErrorCode.INVALID_REQUEST,
            )
        chosen.append(ChosenReference(i, ref, adapter, catalogue.clip_vision_for(adapter, field)))
    return chosen


def inputs(cache: PipelineCache, job: Job, pipe: Any, prompts: int) -> dict[str, Any]:
    """2. each reference's embedding (encoded once per image and encoder), shaped as the pipeline takes
    precomputed ones: one per prompt of the call, after the embeddings without it when guidance is on."""
    import torch

    chosen = job.models.references
    if not chosen:
        return {}
    guided = job.req.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None  # the pipeline's own rule
    embeds = []
    for c in chosen:
        image = c.reference.image
        made = cache.encoders.embedding(
            digest(image),
            model_rgb(pixels.to_float(image)),
            c.encoder,
            c.adapter.features[0],
            cache.configs,
            f"submit.references[{c.index}].adapter",
        )
        cond = torch.cat([made.cond[None]] * prompts)  # (prompts, 1 image, …)
        embeds.append(torch.cat([torch.cat([made.uncond[None]] * prompts), cond]) if guided else cond)
    return {"ip_adapter_image_embeds": embeds}


def applied(cache: PipelineCache, job: Job, pipe: Any) -> AbstractContextManager[None]:
    """3. one adapter per reference in the UNet while the job runs (all its passes), heard where its mode says."""
    chosen = job.models.references
    if not chosen:
        return nullcontext()
    if cache.placements.get(job.models.entry.id) and cache.placements[job.models.entry.id].mode == "low":
        raise JobFailure(
            "reference images need the high or medium memory mode; this model runs layer by layer (low)",
            "submit.references",
            ErrorCode.INVALID_REQUEST,
        )
    adapters = [(c.adapter, cache.adapters.state(c.adapter)) for c in chosen]
    scales = [ipadapters.mode_scale(pipe.unet.config, c.reference.mode, c.reference.weight) for c in chosen]
    return ipadapters.applied(pipe, adapters, scales)
