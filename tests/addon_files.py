"""Write LoRAs, embeddings and VAEs in the file layouts painters download, for any (tiny) pipeline's shapes.

Keys follow the published layouts: kohya/A1111 LoRAs (``lora_unet_…``/``lora_te_…`` with
``lora_down``/``lora_up``/``alpha``, convolutions as LoCon), diffusers/peft LoRAs
(``unet.….lora_A.weight``), A1111 embeddings (``emb_params``), SDXL embeddings (``clip_l``/``clip_g``)
and VAEs in the original layout. Random values, from a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from original_layout import save, vae_to_original

_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _targets(unet: Any, text_encoder: Any, convolutions: bool) -> list[tuple[str, str, Any]]:
    """(component, module name, module) of every layer a LoRA trainer targets."""
    import torch

    found = []
    for name, module in unet.named_modules():
        linear = isinstance(module, torch.nn.Linear) and "attentions" in name and name.endswith(_UNET_TARGETS)
        conv = isinstance(module, torch.nn.Conv2d) and "resnets" in name and name.endswith("conv1")
        if linear or (convolutions and conv):
            found.append(("unet", name, module))
    for name, module in text_encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(_TEXT_TARGETS):
            found.append(("text_encoder", name, module))
    return found


def _pair(module: Any, rank: int, gen: Any, scale: float) -> tuple[Any, Any]:
    import torch

    if isinstance(module, torch.nn.Conv2d):
        down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=gen) * scale
        return down, torch.randn(module.out_channels, rank, 1, 1, generator=gen) * scale
    return torch.randn(rank, module.in_features, generator=gen) * scale, torch.randn(
        module.out_features, rank, generator=gen
    ) * scale


def kohya_lora(
    path: Path, unet: Any, text_encoder: Any, rank: int = 4, seed: int = 0, scale: float = 0.5, alpha: float = 2.0
) -> Path:
    """A kohya/A1111 LoRA (LoCon: attention, feed-forward, text encoder and resnet convolutions)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for component, name, module in _targets(unet, text_encoder, convolutions=True):
        key = ("lora_unet_" if component == "unet" else "lora_te_") + name.replace(".", "_")
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = _pair(module, rank, gen, scale)
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return save(state, path)


def diffusers_lora(path: Path, unet: Any, text_encoder: Any, rank: int = 4, seed: int = 1, scale: float = 0.5) -> Path:
    """A LoRA as diffusers saves it (peft names under ``unet.`` and ``text_encoder.``)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for component, name, module in _targets(unet, text_encoder, convolutions=False):
        state[f"{component}.{name}.lora_A.weight"], state[f"{component}.{name}.lora_B.weight"] = _pair(
            module, rank, gen, scale
        )
    return save(state, path)


def kohya_lora_keys(path: Path, shapes: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    """A kohya LoRA of given module names and (in, out) widths: other architectures' LoRAs, in miniature."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, (fan_in, fan_out) in shapes.items():
        state[f"{key}.lora_down.weight"] = torch.randn(2, fan_in, generator=gen)
        state[f"{key}.lora_up.weight"] = torch.randn(fan_out, 2, generator=gen)
        state[f"{key}.alpha"] = torch.tensor(2.0)
    return save(state, path)


def a1111_embedding(path: Path, width: int, vectors: int = 2, seed: int = 0, scale: float = 1.0) -> Path:
    """A textual-inversion embedding as A1111 saves it in safetensors (``emb_params``: vectors × width)."""
    import torch

    return save(
        {"emb_params": torch.randn(vectors, width, generator=torch.Generator().manual_seed(seed)) * scale}, path
    )


def sdxl_embedding(path: Path, width_l: int, width_g: int, vectors: int = 2, seed: int = 0) -> Path:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return save(
        {
            "clip_l": torch.randn(vectors, width_l, generator=gen),
            "clip_g": torch.randn(vectors, width_g, generator=gen),
        },
        path,
    )


def original_vae(path: Path, vae: Any, seed: int = 0, noise: float = 0.05) -> Path:
    """``vae``'s weights, perturbed, in the original layout of standalone VAE files (``encoder.down.0…``)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {k: v + noise * torch.randn(v.shape, generator=gen) for k, v in vae.state_dict().items()}
    return save(vae_to_original(state, dict(vae.config)), path)


def clip_vision(path: Path, seed: int = 0, width: int = 32, projection: int = 16, layers: int = 2) -> Path:
    """A CLIP vision encoder as ComfyUI's ``models/clip_vision`` keeps one (transformers' names, one file), tiny:
    224² pictures in 32-px patches, one head (the 64-wide-head convention the loader assumes for odd sizes)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        projection_dim=projection,
        image_size=224,
        patch_size=32,
    )
    return save(dict(CLIPVisionModelWithProjection(config).state_dict()), path)


def ip_adapter(
    path: Path, unet: Any, image_dim: int, seed: int = 0, scale: float = 0.5, cross: int | None = None
) -> Path:
    """An IP-Adapter in the published layout (``ip-adapter_sd15.safetensors``): ``image_proj.proj`` maps the
    encoder's image embedding to 4 tokens of the text width, ``image_proj.norm``; ``ip_adapter.N.to_k_ip`` and
    ``to_v_ip`` for each cross-attention, N its index among the UNet's attention processors. ``cross`` other
    than the UNet's text width makes an adapter of another family or size (its to_k_ip/to_v_ip read that width)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    width = cross or unet.config.cross_attention_dim
    state = {
        "image_proj.proj.weight": torch.randn(4 * width, image_dim, generator=gen) * scale,
        "image_proj.proj.bias": torch.randn(4 * width, generator=gen) * scale,
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    for i, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            state[f"ip_adapter.{i}.to_k_ip.weight"] = torch.randn(hidden, width, generator=gen) * scale
            state[f"ip_adapter.{i}.to_v_ip.weight"] = torch.randn(hidden, width, generator=gen) * scale
    return save(state, path)
