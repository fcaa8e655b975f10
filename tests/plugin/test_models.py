"""What the pickers show of the catalogue, and the LoRA choice reaching the request (plugin/core, no editor)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portable"))
from core_checks import ListDocument

from sfumato.plugin.core.models import checkpoints, describe, loras_for, size_text, vaes
from sfumato.plugin.core.requests import GenerationParams, build_submit, unique_loras
from sfumato.protocol import LoraWeight, ModelInfo

MODELS = (
    ModelInfo(id="sd/dream", kind="checkpoint", arch="sd15", label="dream", size_bytes=2_132_000_000),
    ModelInfo(id="sd/xl", kind="checkpoint", arch="sdxl-inpaint", label="xl", size_bytes=6_938_000_000),
    ModelInfo(id="Lora/ink", kind="lora", arch="sd15", label="ink", size_bytes=37_868_912),
    ModelInfo(id="Lora/xlink", kind="lora", arch="sdxl", label="xlink"),
    ModelInfo(id="Lora/odd", kind="lora", arch="unknown", label="odd", problem="unknown layout"),
    ModelInfo(id="sd/old", kind="unusable", arch="unknown", label="old", size_bytes=4_000, problem="a pickle"),
)


def test_picker_lines_say_architecture_kind_size_and_why_not() -> None:
    assert describe(MODELS[0]) == "dream (sd15, checkpoint, 2.0 GB)"
    assert describe(MODELS[5]) == "old (unusable, 3.9 KB) — unusable: a pickle"
    assert (size_text(0), size_text(512), size_text(37_868_912)) == ("", "512 B", "36.1 MB")
    assert [m.id for m in checkpoints(MODELS)] == ["sd/dream", "sd/xl", "Lora/odd", "sd/old"]


def test_loras_offered_are_those_that_fit_the_chosen_model() -> None:
    assert [m.id for m in loras_for(MODELS, "sd/dream")] == ["Lora/ink"]
    assert [m.id for m in loras_for(MODELS, "sd/xl")] == ["Lora/xlink"]  # sdxl-inpaint takes SDXL LoRAs
    assert [m.id for m in loras_for(MODELS, "")] == ["Lora/ink", "Lora/xlink"]


def test_the_lora_choice_and_vae_reach_the_submit() -> None:
    params = GenerationParams(loras=(LoraWeight(id="Lora/ink", weight=0.7),), vae="VAE/mse")
    req = build_submit(ListDocument(None), params, "j")
    assert req.loras == (LoraWeight(id="Lora/ink", weight=0.7),) and req.vae == "VAE/mse"


def test_a_lora_picked_in_two_rows_is_sent_once_with_the_last_weight() -> None:
    rows = [LoraWeight(id="a", weight=0.5), None, LoraWeight(id="b", weight=1.0), LoraWeight(id="a", weight=0.8)]
    assert unique_loras(rows) == (LoraWeight(id="a", weight=0.8), LoraWeight(id="b", weight=1.0))


def test_the_vae_picker_offers_the_usable_standalone_vaes() -> None:
    listed = (
        *MODELS,
        ModelInfo(id="VAE/kl-f8", kind="vae", arch="sd", label="kl-f8"),
        ModelInfo(id="VAE/broken", kind="vae", arch="sd", label="broken", problem="unreadable"),
    )
    assert [m.id for m in vaes(listed)] == ["VAE/kl-f8"]
