"""Tell what a model file or folder is from its tensors and configs, never from its name.

Only the safetensors JSON header is read (names, dtypes, shapes): no tensor data, no pickle.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20


class NotAModel(Exception):
    """The file is not something Sfumato can use; the message says why in plain words."""


@dataclass(frozen=True)
class Detected:
    kind: str  # "checkpoint" | "controlnet" | "preview_decoder" | "lora" | "embedding" | "vae" | "upscaler" | ...
    arch: str  # "sd15" | "sd15-inpaint" | "sd2" | "sd2-inpaint" | "sdxl" | "sdxl-inpaint" | "sd15-tiny" ...
    native_size: int
    format: str  # "single_file" | "diffusers"
    # image features an IP-Adapter reads (one) or a CLIP vision encoder gives: "embeds:W", "hidden:W"
    features: tuple[str, ...] = ()


# SD2.x inpainting was trained at 512², the other SD2.x checkpoints painters use at 768² (v-prediction)
NATIVE = {"sd15": 512, "sd15-inpaint": 512, "sd2": 768, "sd2-inpaint": 512, "sdxl": 1024, "sdxl-inpaint": 1024}


def read_safetensors_header(path: Path) -> dict[str, dict[str, object]]:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise NotAModel("file is too short to be safetensors")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES:
            raise NotAModel("safetensors header is implausibly large")
        header = f.read(n)
    try:
        parsed = json.loads(header)
    except ValueError:
        raise NotAModel("safetensors header is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise NotAModel("safetensors header is not a map")
    parsed.pop("__metadata__", None)
    return parsed


def _shape(header: dict[str, dict[str, object]], key: str) -> list[int] | None:
    entry = header.get(key)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return list(shape) if isinstance(shape, list) else None


def detect_single_file(path: Path) -> Detected:
    """Classify a ``.safetensors`` file by its tensor names and shapes."""
    header = read_safetensors_header(path)
    keys = header.keys()

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("model.diffusion_model."):
        conv_in = _shape(header, "model.diffusion_model.input_blocks.0.0.weight")
        inpaint = bool(conv_in and len(conv_in) == 4 and conv_in[1] == 9)
        if has("conditioner.embedders.1.") or has("model.diffusion_model.label_emb."):
            if not has("conditioner.embedders.0.transformer."):
                raise NotAModel("SDXL refiner checkpoints are not supported; use an SDXL base model")
            arch = "sdxl-inpaint" if inpaint else "sdxl"
        elif has("cond_stage_model.model."):
            arch = "sd2-inpaint" if inpaint else "sd2"
        elif has("cond_stage_model.transformer."):
            arch = "sd15-inpaint" if inpaint else "sd15"
        else:
            raise NotAModel("has a diffusion UNet but no text encoder: not a full checkpoint")
        return Detected("checkpoint", arch, NATIVE[arch], "single_file")
    if has("control_model."):
        dim = _shape(header, "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
        if dim is None:  # SDXL controlnets have no attention in the first level
            dim = _shape(header, "control_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")
        return Detected("controlnet", _arch_from_cross_dim(dim[1] if dim else 0), 0, "single_file")
    if has("controlnet_cond_embedding."):
        dim = next((_shape(header, k) for k in keys if k.endswith("attn2.to_k.weight")), None)
        return Detected("controlnet", _arch_from_cross_dim(dim[1] if dim else 0), 0, "single_file")
    if has("image_proj.") and has("ip_adapter."):
        return ipadapter(header)
    if "vision_model.embeddings.patch_embedding.weight" in keys:
        return clip_vision(header)
    if has("lora_unet_") or has("lora_te") or any(".lora_" in k or "lora_A" in k or ".lora." in k for k in keys):
        return Detected("lora", lora_arch(header), 0, "single_file")
    embedding = embedding_arch(header)
    if embedding:
        return Detected("embedding", embedding, 0, "single_file")
    if has("encoder.") and (has("decoder.up.") or has("decoder.up_blocks.")) and has("quant_conv."):
        return Detected("vae", VAE_ARCH, 0, "single_file")  # latents of every SD family have the same shape
    if has("down_blocks.") and has("conv_in."):
        raise NotAModel("a lone diffusers UNet, not a full checkpoint; use the whole diffusers folder")
    upscaler = upscaler_arch(header)
    if upscaler:
        return Detected("upscaler", upscaler, 0, "single_file")
    raise NotAModel("unrecognised tensors: not an SD1.5/SD2/SDXL checkpoint or ControlNet")


def upscaler_arch(header: dict[str, dict[str, object]]) -> str:
    """The family of an image upscaler by its keys (the common ones; spandrel knows more and decides on load):
    ESRGAN in the old (``model.N``) and new (``conv_first``) layouts, Real-ESRGAN Compact, SwinIR; else ""."""
    keys = header.keys()
    if ("model.0.weight" in keys and any(".RDB1." in k for k in keys)) or (
        "conv_first.weight" in keys and any(k.startswith(("body.0.rdb1.", "RRDB_trunk.")) for k in keys)
    ):
        return "esrgan"
    if {"body.0.weight", "body.1.weight"} <= keys and all(k.startswith("body.") for k in keys):
        return "compact"
    if "conv_first.weight" in keys and any(k.startswith("layers.0.residual_group.") for k in keys):
        return "swinir"
    return ""


def ipadapter(header: dict[str, dict[str, object]]) -> Detected:
    """An IP-Adapter in the published layout (``image_proj.*``, ``ip_adapter.N.to_k_ip/to_v_ip``): the family
    from the width its keys read (the text encoder's), the image features from its image projection —
    plain IP-Adapters project the encoder's image embedding, Plus (a resampler over ``latents``) and
    Full-face (an MLP, ``proj.3`` its norm) read the encoder's penultimate hidden states."""
    to_k = _shape(header, "ip_adapter.1.to_k_ip.weight")
    if to_k is None or len(to_k) != 2:
        raise NotAModel("an IP-Adapter without ip_adapter.1.to_k_ip: a layout Sfumato does not know")
    arch = "sdxl" if to_k[1] == 2048 else _family_from_width(to_k[1])
    proj, full, plus = (_shape(header, f"image_proj.{k}") for k in ("proj.weight", "proj.0.weight", "proj_in.weight"))
    if any(k.startswith("image_proj.perceiver_resampler.") for k in header) or (
        full and "image_proj.proj.3.weight" not in header
    ):
        raise NotAModel("an IP-Adapter FaceID: it needs InsightFace face embeddings, which Sfumato does not compute")
    if proj and len(proj) == 2:
        return Detected("ipadapter", arch, 0, "single_file", (f"embeds:{proj[1]}",))
    if full and len(full) == 2:
        return Detected("ipadapter", arch, 0, "single_file", (f"hidden:{full[0]}",))
    if plus and len(plus) == 2 and "image_proj.latents" in header:
        return Detected("ipadapter", arch, 0, "single_file", (f"hidden:{plus[1]}",))
    raise NotAModel("an IP-Adapter with an image projection Sfumato does not know")


# CLIP vision encoders as IP-Adapters use them, by (width, layers): their config folder is clip-vision-<arch>
CLIP_VISION = {(1280, 32): "vit-h", (1664, 48): "vit-g", (1024, 24): "vit-l"}


def clip_vision(header: dict[str, dict[str, object]]) -> Detected:
    """A CLIP vision encoder in transformers' layout (``vision_model.*``, ``visual_projection``), as ComfyUI's
    ``models/clip_vision`` and the IP-Adapter releases keep it; it gives its projected image embedding and its
    hidden states."""
    patch = _shape(header, "vision_model.embeddings.patch_embedding.weight") or [0]
    width = patch[0]
    layers = len({k.split(".")[3] for k in header if k.startswith("vision_model.encoder.layers.")})
    features = [f"hidden:{width}"]
    projection = _shape(header, "visual_projection.weight")
    if projection and len(projection) == 2:
        features.insert(0, f"embeds:{projection[0]}")
    return Detected(
        "clip_vision", CLIP_VISION.get((width, layers), f"vit-{width}x{layers}"), 0, "single_file", tuple(features)
    )


def _arch_from_cross_dim(dim: int) -> str:
    return {768: "sd15", 1024: "sd2", 2048: "sdxl"}.get(dim, "unknown")


VAE_ARCH = "sd"  # a standalone VAE fits SD 1.x, 2.x and SDXL alike; whether it loads is checked on use
# SDXL LoRAs in kohya's layout name the UNet blocks as the original checkpoints do, and train a second text encoder
_SDXL_LORA = ("lora_te2_", "lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")


def _family_from_width(width: int) -> str:
    """SD 1.x (CLIP-L, 768) or SD 2.x (OpenCLIP-H, 1024); other widths (test models) are SD 1.x-shaped."""
    return {768: "sd15", 1024: "sd2"}.get(width, "sd15-custom")


def lora_arch(header: dict[str, dict[str, object]]) -> str:
    """The family a LoRA fits, from its keys (SDXL's block names, a second text encoder) and the width of
    its cross-attention keys (the text encoder's width)."""
    keys = header.keys()
    if any(k.startswith(_SDXL_LORA) or k.startswith("text_encoder_2.") for k in keys):
        return "sdxl"
    for key in sorted(keys):  # the down projection of to_k reads the text encoder's output
        if "attn2" in key and "to_k" in key and ("lora_down" in key or "lora_A" in key or "lora.down" in key):
            shape = _shape(header, key)
            if shape and len(shape) == 2:
                return "sdxl" if shape[1] == 2048 else _family_from_width(shape[1])
    return "sd15-custom" if any(k.startswith(("lora_te_", "text_encoder.")) for k in keys) else "unknown"


def embedding_arch(header: dict[str, dict[str, object]]) -> str:
    """The family of a textual-inversion embedding, or "" when the tensors are not one. Layouts: A1111's
    ``emb_params`` (``string_to_param.*`` in older files), SDXL's ``clip_l``/``clip_g`` pair, and the
    diffusers trainer's single ``{token: vector}``."""
    keys = set(header)
    if keys == {"clip_l", "clip_g"}:
        return "sdxl"
    name = next(iter(keys)) if len(keys) == 1 else ""
    if name == "emb_params" or name.startswith("string_to_param.") or (name and "." not in name):
        shape = _shape(header, name)
        if shape and 1 <= len(shape) <= 2:
            return _family_from_width(shape[-1])
    return ""


def detect_diffusers_folder(folder: Path) -> Detected:
    """Classify a diffusers folder by its ``model_index.json`` or ``config.json``."""
    index = folder / "model_index.json"
    if index.is_file():
        meta = _read_json(index)
        cls = str(meta.get("_class_name", ""))
        unet_cfg = _read_json(folder / "unet" / "config.json") if (folder / "unet" / "config.json").is_file() else {}
        vae_cfg = _read_json(folder / "vae" / "config.json") if (folder / "vae" / "config.json").is_file() else {}
        blocks = vae_cfg.get("block_out_channels")
        scale = 2 ** (len(blocks) - 1) if isinstance(blocks, list) else 8
        sample = unet_cfg.get("sample_size", 64)
        native = (sample if isinstance(sample, int) else 64) * scale
        inpaint = unet_cfg.get("in_channels") == 9
        if "XL" in cls:
            arch = "sdxl-inpaint" if inpaint else "sdxl"
        elif cls.startswith("StableDiffusion"):
            cross = unet_cfg.get("cross_attention_dim")
            arch = {768: "sd15", 1024: "sd2"}.get(cross if isinstance(cross, int) else 0, "sd15-custom")
            if inpaint:
                arch += "-inpaint"
        else:
            raise NotAModel(f"diffusers pipeline {cls or '?'} is not a Stable Diffusion pipeline")
        return Detected("checkpoint", arch, native, "diffusers")
    config = folder / "config.json"
    if config.is_file():
        meta = _read_json(config)
        if meta.get("_class_name") == "AutoencoderTiny":  # TAESD: a cheap decoder for previews
            return Detected("preview_decoder", "sdxl" if "xl" in folder.name.lower() else "sd15", 0, "diffusers")
        if meta.get("_class_name") == "ControlNetModel":
            cross = meta.get("cross_attention_dim")
            return Detected("controlnet", _arch_from_cross_dim(cross if isinstance(cross, int) else 0), 0, "diffusers")
        raise NotAModel(f"diffusers {meta.get('_class_name', '?')} folder is not a checkpoint or ControlNet")
    raise NotAModel("no model_index.json or config.json")


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NotAModel(f"{path.name} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise NotAModel(f"{path.name} is not a JSON map")
    return data
