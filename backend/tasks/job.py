"""What a job is to the engine: the hooks it reports through, everything prepared for the pipeline, its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sfumato.protocol import Control, Image, Rect, Reference, Submit

from ..imaging.resolution import Plan
from ..models import addons
from ..models.catalogue import ModelEntry


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


@dataclass(frozen=True)
class ChosenReference:
    """A reference of the request (weight above 0) with the IP-Adapter and image encoder it runs through."""

    index: int  # in submit.references
    reference: Reference
    adapter: ModelEntry
    encoder: ModelEntry


@dataclass(frozen=True)
class Models:
    """The models a checked request runs with: checkpoint, ControlNets, add-ons, references' adapters."""

    entry: ModelEntry
    controls: list[tuple[Control, ModelEntry]]
    addons: addons.Addons
    references: list[ChosenReference] = field(default_factory=list)


@dataclass
class Job:
    """Everything prepared for the pipeline, in context coordinates."""

    req: Submit
    models: Models
    context: Rect
    result: Rect
    rgb: np.ndarray  # (h, w, 3) model input, context-sized
    alpha: np.ndarray  # (h, w) compositing alpha, context-sized
    denoise: np.ndarray | None  # (h, w) inpaint mask, context-sized
    control_maps: list[np.ndarray]
    original: np.ndarray  # native pixels of the result rectangle
    seeds: list[int]
    plan: Plan
    covers_mask_only: bool  # the result layer is transparent wherever alpha is 0 (inpaint)


def steps_run(steps: int, strength: float) -> int:
    """How many denoising steps diffusers actually runs for img2img/inpaint."""
    return min(int(steps * strength), steps)
