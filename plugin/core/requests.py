"""From what the painter set in the docker plus a document snapshot to a protocol ``submit``.

No selection → restyle the active layer (img2img of the whole canvas). A selection → inpaint it:
only the *context* around the selection is read and sent, so cost follows the selection.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from sfumato.protocol import (
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    Control,
    Image,
    InpaintOptions,
    LoraWeight,
    Point,
    PreviewSettings,
    Rect,
    Submit,
    context_rect,
)

from .editor import DocumentLike
from .pixels import to_rgba8
from .references import ReferenceSpec, reference_for

_COUNTER = itertools.count(1)


@dataclass(frozen=True)
class ControlSpec:
    type: str  # canny, depth, lineart, pose, scribble, ...
    layer: str | None = None  # source layer name; None = the active layer
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocess: bool = True  # False: the layer already is a map
    model: str | None = None


def unique_loras(choices: Iterable[LoraWeight | None]) -> tuple[LoraWeight, ...]:
    """The picker rows' LoRAs, each once: a LoRA chosen twice keeps its first place and its last weight."""
    return tuple({c.id: c for c in choices if c is not None}.values())


@dataclass(frozen=True)
class GenerationParams:
    model: str = DEFAULT_MODEL
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = DEFAULT_STRENGTH
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int | None = None  # None = random
    scheduler: str = DEFAULT_SCHEDULER
    batch_size: int = 1
    controls: tuple[ControlSpec, ...] = ()
    preview: PreviewSettings = field(default_factory=PreviewSettings)
    inpaint: InpaintOptions = field(default_factory=InpaintOptions)
    loras: tuple[LoraWeight, ...] = ()  # the LoRA picker's choice; <lora:name:w> in the prompt works too
    vae: str | None = None  # None = the checkpoint's own
    references: tuple[ReferenceSpec, ...] = ()  # reference layers (IP-Adapter), sent scaled down


def new_job_id(prefix: str = "job") -> str:
    return f"{prefix}-{os.getpid()}-{next(_COUNTER)}"


def build_submit(doc: DocumentLike, params: GenerationParams, job_id: str | None = None) -> Submit:
    """Snapshot the document and build the request (on the GUI thread: reads pixels)."""
    canvas = doc.canvas()
    selection = doc.selection_bounds()
    if selection is not None:
        selection = selection.intersect(canvas)
    if selection is None:
        return submit_for(doc, params, job_id or new_job_id(), "img2img", canvas, None, None)
    region = context_rect(selection, canvas)
    return submit_for(doc, params, job_id or new_job_id(), "inpaint", region, selection, doc.read_selection(region))


def submit_for(
    doc: DocumentLike,
    params: GenerationParams,
    job_id: str,
    task: str,
    region: Rect,
    result: Rect | None,
    mask: Image | None,
) -> Submit:
    """The request for ``task`` on ``region`` of the active layer (inpaint: ``region`` is the context)."""
    image = doc.read_layer(region)
    controls = tuple(
        Control(
            type=c.type,
            image=to_rgba8(doc.read_layer(region, c.layer)),
            preprocess=c.preprocess,
            model=c.model,
            strength=c.strength,
            start=c.start,
            end=c.end,
        )
        for c in params.controls
    )
    return Submit(
        job_id=job_id,
        task=task,
        model=params.model,
        image=image,
        origin=Point(x=region.x, y=region.y),
        mask=mask,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        strength=params.strength,
        steps=params.steps,
        guidance=params.guidance,
        seed=params.seed,
        scheduler=params.scheduler,
        batch_size=params.batch_size,
        context=region if task == "inpaint" else None,
        result=result,
        controls=controls,
        preview=params.preview,
        inpaint=params.inpaint,
        loras=params.loras,
        vae=params.vae,
        references=tuple(reference_for(doc, r, doc.canvas()) for r in params.references),
    )
