"""Memory modes: where a pipeline's weights live, chosen from the card's free memory and the model's size.

    high    every component on the GPU (fastest)
    medium  each component moves to the GPU while it runs (diffusers' model CPU offload): the UNet
            alone must fit; costs a copy per component per job
    low     layer by layer (diffusers' leaf-level group offloading, with a copy stream on CUDA so
            the next layer's weights travel while one computes): fits nearly any card, slower.
            accelerate's sequential CPU offload is not used: with transformers 5 it fails on the
            text encoder's embedding once weights come back from its meta device
    auto    the fastest mode the free memory allows, decided per model when it is loaded

VAE tiling is switched on in medium and low, so a large image decodes in tiles instead of one
allocation the size of the picture. Devices other than CUDA have no separate memory to offload
from: they always run ``high``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEMORY_MODES = ("auto", "high", "medium", "low")
GIB = 1 << 30
# Room the activations of one job need beside the weights: SDXL at 1024² with guidance peaks near
# 3 GiB over its fp16 weights; SD1.5 at 512² near 1 GiB. Taken for both, so auto errs towards fitting.
ACTIVATIONS_BYTES = 3 * GIB


@dataclass(frozen=True)
class Placement:
    mode: str  # high | medium | low
    reason: str  # what the status line shows: the mode and why

    @property
    def vae_tiling(self) -> bool:
        return self.mode != "high"


def choose(
    requested: str, device: str, free_bytes: int | None, model_bytes: int, largest_component_bytes: int
) -> Placement:
    """The placement for one model. ``free_bytes`` is the card's free memory (None when unknown)."""
    if requested not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {requested!r}")
    if not device.startswith("cuda"):
        return Placement("high", f"high ({device} has no separate memory to offload from)")
    if requested != "auto":
        return Placement(requested, f"{requested} (set by --memory)")
    if free_bytes is None:
        return Placement("high", "high (free GPU memory unknown)")
    free = f"{free_bytes / GIB:.1f} GiB free"
    if free_bytes >= model_bytes + ACTIVATIONS_BYTES:
        return Placement("high", f"high (auto: {free}, the model needs {model_bytes / GIB:.1f} GiB)")
    if free_bytes >= largest_component_bytes + ACTIVATIONS_BYTES:
        return Placement("medium", f"medium (auto: {free}; the whole model needs {model_bytes / GIB:.1f} GiB)")
    return Placement("low", f"low (auto: {free}; its largest part alone needs {largest_component_bytes / GIB:.1f} GiB)")


def free_memory(device: str) -> int | None:
    """Free bytes on a CUDA device, None elsewhere."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def component_bytes(pipe: Any) -> list[int]:
    """Bytes of each weight-holding component of a pipeline."""
    sizes = []
    for module in pipe.components.values():
        if hasattr(module, "parameters"):
            sizes.append(sum(p.numel() * p.element_size() for p in module.parameters()))
    return sizes


def place(pipe: Any, placement: Placement, device: str) -> Any:
    """Put ``pipe`` where ``placement`` says; returns it."""
    if placement.mode == "high":
        pipe = pipe.to(device)
    elif placement.mode == "medium":
        pipe.enable_model_cpu_offload(device=device)
    else:
        import torch
        from diffusers.hooks import apply_group_offloading

        onload = torch.device(device)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                apply_group_offloading(
                    module,
                    onload_device=onload,
                    offload_device=torch.device("cpu"),
                    offload_type="leaf_level",
                    use_stream=onload.type == "cuda",
                )
    if placement.vae_tiling and hasattr(pipe, "vae"):
        pipe.vae.enable_tiling()
    return pipe
