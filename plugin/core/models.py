"""What the editors' pickers show of the backend's catalogue (``welcome.models``): one wording for every editor."""

from __future__ import annotations

from sfumato.protocol import ModelInfo, arch_family

LORA_WEIGHT_RANGE = (-2.0, 2.0)  # what the editors offer; negative weights push a LoRA's look away
DEFAULT_LORA_WEIGHT = 0.8


def size_text(n: int) -> str:
    """Bytes on disk in the unit painters read file sizes in."""
    if n <= 0:
        return ""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def describe(m: ModelInfo) -> str:
    """One picker line: name, architecture, kind, size, and why it cannot be used."""
    details = ", ".join(p for p in (m.arch if m.arch != "unknown" else "", m.kind, size_text(m.size_bytes)) if p)
    text = f"{m.label or m.id} ({details})"
    return f"{text} — unusable: {m.problem}" if m.problem else text


def checkpoints(models: tuple[ModelInfo, ...]) -> list[ModelInfo]:
    """The model picker's entries: usable checkpoints, then unusable entries (shown, not choosable)."""
    usable = [m for m in models if m.kind == "checkpoint" and not m.problem]
    return usable + [m for m in models if m.problem]


def loras_for(models: tuple[ModelInfo, ...], checkpoint: str) -> list[ModelInfo]:
    """The LoRAs that fit the chosen checkpoint's family (all of them while it is unknown)."""
    chosen = next((m for m in models if m.id == checkpoint), None)
    return [
        m
        for m in models
        if m.kind == "lora" and not m.problem and (chosen is None or arch_family(m.arch) == arch_family(chosen.arch))
    ]


def upscalers(models: tuple[ModelInfo, ...]) -> list[ModelInfo]:
    """The upscaler models a picker offers (the unusable ones are not offered)."""
    return [m for m in models if m.kind == "upscaler" and not m.problem]


def ipadapters_for(models: tuple[ModelInfo, ...], checkpoint: str) -> list[ModelInfo]:
    """The IP-Adapters that fit the chosen checkpoint's family (all of them while it is unknown)."""
    chosen = next((m for m in models if m.id == checkpoint), None)
    return [
        m
        for m in models
        if m.kind == "ipadapter"
        and not m.problem
        and (chosen is None or arch_family(m.arch) == arch_family(chosen.arch))
    ]


OWN_VAE = "The model's own VAE"  # the VAE picker's first entry: no standalone VAE


def vaes(models: tuple[ModelInfo, ...]) -> list[ModelInfo]:
    """The standalone VAEs a picker offers: any of them decodes every SD family's latents (the backend
    builds it with the checkpoint's own VAE configuration)."""
    return [m for m in models if m.kind == "vae" and not m.problem]
