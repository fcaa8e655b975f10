"""ControlNet conditioning, added to img2img or inpaint: control maps of the context, and their pipeline arguments."""

from __future__ import annotations

from typing import Any

import numpy as np

from sfumato.protocol import Control, ErrorCode, arch_family

from ..errors import JobFailure
from ..imaging import pixels
from ..imaging.control import control_map
from ..models.catalogue import Catalogue, ModelEntry
from .common import Crop
from .job import Job


def check(catalogue: Catalogue, controls: tuple[Control, ...], entry: ModelEntry) -> list[tuple[Control, ModelEntry]]:
    """Each control's ControlNet: the one named, or the catalogue's for its type; it must fit the checkpoint."""
    out = []
    for i, c in enumerate(controls):
        path = f"submit.controls[{i}]"
        cn = (
            catalogue.get(c.model, "controlnet", f"{path}.model")
            if c.model
            else catalogue.controlnet_for(c.type, entry.arch, f"{path}.model")
        )
        if arch_family(cn.arch) != arch_family(entry.arch):
            raise JobFailure(
                f"ControlNet {cn.id!r} ({cn.arch}) does not fit {entry.id!r} ({entry.arch})",
                f"{path}.model",
                ErrorCode.INVALID_REQUEST,
            )
        out.append((c, cn))
    return out


def maps(controls: list[tuple[Control, ModelEntry]], crop: Crop) -> list[np.ndarray]:
    """1. each control image cropped to the context, taken as a map or extracted (edges, depth, …)."""
    return [
        control_map(c.type, pixels.to_float(c.image)[crop], c.preprocess, f"submit.controls[{i}].image")
        for i, (c, _) in enumerate(controls)
    ]


def inputs(job: Job, width: int, height: int) -> dict[str, Any]:
    """2. the maps at the pass's resolution, with each control's strength and start/end; one control
    is passed as itself, several as lists (diffusers' MultiControlNet)."""
    controls = job.models.controls
    if not controls:
        return {}
    images = [pixels.to_pil_rgb(pixels.resize(m, width, height)) for m in job.control_maps]
    if len(images) == 1:
        (c, _), image = controls[0], images[0]
        return {
            "control_image": image,
            "controlnet_conditioning_scale": c.strength,
            "control_guidance_start": c.start,
            "control_guidance_end": c.end,
        }
    return {
        "control_image": images,
        "controlnet_conditioning_scale": [c.strength for c, _ in controls],
        "control_guidance_start": [c.start for c, _ in controls],
        "control_guidance_end": [c.end for c, _ in controls],
    }
