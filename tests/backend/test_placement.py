"""Memory modes: the choice from (simulated) free VRAM, and the placements themselves on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sfumato.backend.models.placement import GIB, choose, place

SDXL_FP16, SDXL_UNET = int(6.9 * GIB), int(4.8 * GIB)
SD15_FP16, SD15_UNET = int(2.0 * GIB), int(1.7 * GIB)


@pytest.mark.parametrize(
    ("free_gib", "model", "unet", "mode"),
    [
        (80.0, SDXL_FP16, SDXL_UNET, "high"),  # an H100
        (22.0, SDXL_FP16, SDXL_UNET, "high"),  # a 24 GB card with the desktop on it
        (8.0, SDXL_FP16, SDXL_UNET, "medium"),  # 8 GB: the UNet fits, the whole model does not
        (6.5, SDXL_FP16, SDXL_UNET, "low"),  # 6 GB laptop
        (6.5, SD15_FP16, SD15_UNET, "high"),  # ... where SD1.5 still fits whole
        (4.0, SD15_FP16, SD15_UNET, "low"),
    ],
)
def test_auto_picks_the_fastest_mode_the_free_memory_allows(free_gib: float, model: int, unet: int, mode: str) -> None:
    placement = choose("auto", "cuda:0", int(free_gib * GIB), model, unet)
    assert placement.mode == mode
    assert placement.reason.startswith(mode) and "GiB free" in placement.reason  # the status says why


def test_a_requested_mode_is_kept_and_other_devices_run_everything_in_place() -> None:
    assert choose("low", "cuda", 80 * GIB, SD15_FP16, SD15_UNET).mode == "low"
    assert choose("high", "cuda", 1 * GIB, SDXL_FP16, SDXL_UNET).mode == "high"  # the painter's call
    for device in ("cpu", "mps"):
        placement = choose("low", device, None, SDXL_FP16, SDXL_UNET)
        assert placement.mode == "high" and device in placement.reason
    assert choose("auto", "cuda", None, SD15_FP16, SD15_UNET).mode == "high"
    with pytest.raises(ValueError, match="auto, high, medium, low"):
        choose("tiny", "cuda", None, 0, 0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sfumato.backend.models.builtin import ensure_builtin

    return ensure_builtin(tmp_path_factory.mktemp("cache"))[0]


def _hooked(module: Any) -> bool:
    """accelerate's offload hook, or diffusers' hook registry (group offloading)."""
    return hasattr(module, "_hf_hook") or hasattr(module, "_diffusers_hook")


def _generate(pipe: Any) -> np.ndarray:
    import torch

    out = pipe("a fox", num_inference_steps=3, height=64, width=64, output_type="np", generator=torch.manual_seed(5))
    return np.asarray(out.images[0])


def test_offloaded_placements_install_hooks_tile_the_vae_and_paint_the_same_picture(tiny_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline

    def fresh() -> Any:
        pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    high = place(fresh(), choose("high", "cuda", None, 0, 0), "cpu")
    assert not any(_hooked(m) for m in high.unet.modules())
    assert not high.vae.use_tiling
    reference = _generate(high)
    for mode in ("medium", "low"):
        pipe = place(fresh(), choose(mode, "cuda", None, 0, 0), "cpu")
        hooked = any(_hooked(m) for m in pipe.unet.modules())
        assert hooked, f"{mode}: hooks move the weights to the device for each call"
        assert pipe.vae.use_tiling, f"{mode}: large images decode in tiles"
        # the same weights and the same arithmetic on this device: the same picture
        assert np.abs(_generate(pipe) - reference).max() < 1e-5, mode
