"""Write diffusers models as single files in the original (CompVis/A1111/ComfyUI) key layout.

Tests and ``bench/gpu.py`` use it to make checkpoints as painters have them, with random weights,
without a network. It is the inverse of what diffusers reads; ``test_single_file.py`` checks the
round trip (written here, read back by diffusers' own converters, equal tensor for tensor).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET[head]}.{tail}"


def _unet_key(key: str, per_block: int, with_attention: set[int]) -> str | None:
    """One diffusers UNet/ControlNet key in the original layout; None for keys only ControlNets have."""
    for new, old in _UNET_TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    step = per_block + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * step + j + 1
        return f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * step}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * step + j
        return f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        slot = 2 if block in with_attention else 1  # the upsampler follows the attention when there is one
        return f"output_blocks.{block * step + per_block}.{slot}.conv.{m[2]}"
    return None


def unet_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    per_block = int(config["layers_per_block"])
    with_attention = {i for i, t in enumerate(config.get("up_block_types", ())) if "CrossAttn" in t}
    out = {}
    for key, value in state.items():
        new = _unet_key(key, per_block, with_attention)
        if new is None:
            raise KeyError(f"no original name for UNet key {key}")
        out[new] = value
    return out


def controlnet_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    per_block = int(config["layers_per_block"])
    n_blocks = len(config["conditioning_embedding_out_channels"]) * 2 - 2
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_mid_block\.(.+)", key):
            new = f"middle_block_out.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
            new = f"input_hint_block.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            new = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"  # SiLUs sit between the convolutions
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
            new = f"input_hint_block.{2 * (n_blocks + 1)}.{m[1]}"
        else:
            found = _unet_key(key, per_block, set())
            if found is None:
                raise KeyError(f"no original name for ControlNet key {key}")
            new = found
        out["control_model." + new] = value
    return out


def vae_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    n_up = len(config["up_block_types"])
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", new):
            new = f"{m[1]}.mid.attn_1.{attention[m[2]]}.{m[3]}"
            if value.ndim == 2:
                value = value[:, :, None, None]  # the original attention uses 1×1 convolutions
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", new):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", new):
            new = f"encoder.down.{m[1]}.block.{m[2]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", new):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", new):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}"  # the original counts up blocks upwards
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", new):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.{m[2]}"
        out[new] = value
    return out


def clip_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIPTextModel as the original checkpoints hold it (``transformer.text_model.*``)."""
    return {"text_model." + k.removeprefix("text_model."): v for k, v in state.items() if "position_ids" not in k}


def openclip_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """A transformers CLIP text model in OpenCLIP's own names (SD2's and SDXL's second text encoder)."""
    import torch

    flat = {k.removeprefix("text_model."): v for k, v in state.items() if "position_ids" not in k}
    out: dict[str, Any] = {
        "token_embedding.weight": flat.pop("embeddings.token_embedding.weight"),
        "positional_embedding": flat.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": flat.pop("final_layer_norm.weight"),
        "ln_final.bias": flat.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in flat:
        out["text_projection"] = flat.pop("text_projection.weight").T.contiguous()  # OpenCLIP multiplies x @ P
    layers = sorted({int(k.split(".")[2]) for k in flat if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):  # q, k and v are one fused projection in OpenCLIP
            qkv = [flat.pop(f"{src}self_attn.{p}_proj.{part}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{part}"] = torch.cat(qkv)
        for new, old in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            for part in ("weight", "bias"):
                out[f"{dst}{new}.{part}"] = flat.pop(f"{src}{old}.{part}")
    if flat:
        raise KeyError(f"no OpenCLIP name for {sorted(flat)[:3]}")
    return out


def checkpoint_to_original(pipe: Any, state_of: Callable[[Any, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """A whole SD1.x/SD2.x/SDXL pipeline as one original-layout state dict (prefixes as A1111 saves them).

    ``state_of(module, index)`` gives each component's tensors (default: its own weights)."""
    state = state_of or (lambda module, _: module.state_dict())
    out = {
        **_prefixed("model.diffusion_model.", unet_to_original(state(pipe.unet, 0), dict(pipe.unet.config))),
        **_prefixed("first_stage_model.", vae_to_original(state(pipe.vae, 1), dict(pipe.vae.config))),
    }
    text = state(pipe.text_encoder, 2)
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL
        out.update(_prefixed("conditioner.embedders.0.transformer.", clip_to_original(text)))
        out.update(_prefixed("conditioner.embedders.1.model.", openclip_to_original(state(pipe.text_encoder_2, 3))))
    elif pipe.text_encoder.config.hidden_act == "gelu":  # SD2: OpenCLIP ViT-H
        out.update(_prefixed("cond_stage_model.model.", openclip_to_original(text)))
    else:
        out.update(_prefixed("cond_stage_model.transformer.", clip_to_original(text)))
    return out


def _prefixed(prefix: str, state: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in state.items()}


def save(state: dict[str, Any], path: Path, dtype: Any = None) -> Path:
    """Write ``state`` as safetensors (contiguous, optionally cast: fp16/bf16/fp32 files as painters have them)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    cast: Callable[[Any], Any] = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    save_file({k: cast(v).contiguous() for k, v in state.items()}, str(path))
    return path


def random_state(module: Any, dtype: Any, seed: int = 0) -> dict[str, Any]:
    """Random weights for every parameter of ``module`` (built on the meta device: only the result is
    allocated, straight in ``dtype``). Matrices are uniform with a 1/√fan-in spread, norms 1 and biases
    0, so activations stay finite through a full-size network."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, meta in module.state_dict().items():
        if meta.ndim >= 2:
            bound = (3 / max(1, meta[0].numel())) ** 0.5
            out[key] = torch.empty(meta.shape, dtype=dtype).uniform_(-bound, bound, generator=gen)
        elif key.endswith("weight"):
            out[key] = torch.ones(meta.shape, dtype=dtype)
        else:
            out[key] = torch.zeros(meta.shape, dtype=dtype)
    return out


def random_checkpoint(folder: Path, dtype: Any, seed: int = 0) -> dict[str, Any]:
    """A full checkpoint in the original layout with random weights, for the architecture whose config
    folder is ``folder`` (e.g. ``backend/models/configs/sdxl``). Models are laid out on the meta
    device, so the only memory used is the result's (about 2 GB for SD1.5 and 7 GB for SDXL in fp16)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with init_empty_weights():
        parts = SimpleNamespace(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
            if (folder / "text_encoder_2").is_dir()
            else None,
        )
    return checkpoint_to_original(parts, lambda module, i: random_state(module, dtype, seed + i))
