"""Single-file checkpoints and ControlNets (original A1111/ComfyUI key layout) loaded with no network.

diffusers converts the original keys; what it would fetch from the hub — the architecture's
configs and the tokenizer — comes from the JSON folders under ``configs/`` (one per architecture,
in the layout ``from_single_file(config=FOLDER)`` reads) and from :mod:`.clip_tokenizer`.

Checkpoints are read tensor by tensor (``safe_open``), keeping only what the pipeline uses: EMA
copies (``model_ema.*``) are skipped as A1111 does (its configs set ``use_ema: False``), so a file
with both costs no more memory than a pruned one. Key spellings seen in painters' files are
normalised first (an outer ``state_dict.``/``module.`` wrapper, CLIP keys without ``text_model.``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sfumato.protocol import ErrorCode

from ..errors import JobFailure, is_out_of_memory
from .clip_tokenizer import clip_tokenizer

CONFIGS = Path(__file__).with_name("configs")
_WRAPPERS = ("state_dict.", "module.")
_CLIP_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")


def config_folder(arch: str, root: Path = CONFIGS, field: str = "submit.model") -> Path:
    """The config folder of ``arch`` (``sd15``, ``sdxl-inpaint``, ``controlnet-sd15`` ...), or a typed error."""
    folder = root / arch
    if not folder.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise JobFailure(
            f"no architecture configuration for {arch!r} in {root} (known: {', '.join(known) or 'none'}). "
            "Sfumato never downloads configurations: reinstall Sfumato (./install/start) to restore "
            "backend/models/configs, or convert the model to a diffusers folder",
            field,
            ErrorCode.MISSING_WEIGHTS,
        )
    return folder


def _keep(key: str) -> bool:
    return not key.startswith("model_ema.") and not key.endswith("position_ids")


def _rename(key: str, wrapper: str) -> str:
    key = key.removeprefix(wrapper)
    for prefix in _CLIP_PREFIXES:  # written by transformers < 4.31: CLIP keys without "text_model."
        if key.startswith(prefix) and not key.startswith(prefix + "text_model."):
            return prefix + "text_model." + key[len(prefix) :]
    return key


def read_state(path: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file that a pipeline uses, under the names diffusers expects."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = [k for k in f.keys() if _keep(k)]  # noqa: SIM118 - safe_open is not iterable
        wrapper = next((w for w in _WRAPPERS if keys and all(k.startswith(w) for k in keys)), "")
        return {_rename(k, wrapper): f.get_tensor(k) for k in keys}


def _part(what: str, path: Path, load: Any) -> Any:
    """Load one component; a file that lacks it or does not fit the architecture gets words, not a trace."""
    try:
        return load()
    except (ValueError, KeyError, RuntimeError) as exc:
        if is_out_of_memory(exc):
            raise
        raise JobFailure(
            f"{path.name}: its {what} does not match the architecture detected from its tensors ({exc}); "
            "the file may be damaged or a variant Sfumato does not know",
            "submit.model",
            ErrorCode.MISSING_WEIGHTS,
        ) from None


def load_checkpoint(path: Path, arch: str, dtype: Any, configs: Path = CONFIGS) -> Any:
    """An SD1.x/SD2.x/SDXL base pipeline (inpainting variants too) from an original-layout single file."""
    import diffusers

    folder = config_folder(arch, configs)
    parts = _components(path, read_state(path), folder, arch, dtype)  # the file's tensors are freed on return
    if arch.startswith("sdxl"):
        parts.update(tokenizer=clip_tokenizer("clip-l"), tokenizer_2=clip_tokenizer("openclip"))
    else:
        parts.update(
            tokenizer=clip_tokenizer("openclip" if arch.startswith("sd2") else "clip-l"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    index = json.loads((folder / "model_index.json").read_text())
    return getattr(diffusers, index["_class_name"])(**parts)


def _components(path: Path, state: dict[str, Any], folder: Path, arch: str, dtype: Any) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if not any(k.startswith(("first_stage_model.", "vae.")) for k in state):
        raise JobFailure(
            f"{path.name} has no VAE inside; checkpoints without a baked-in VAE are not supported yet",
            "submit.model",
            ErrorCode.MISSING_WEIGHTS,
        )
    common: dict[str, Any] = {"config": str(folder), "torch_dtype": dtype, "local_files_only": True}

    def text(cls: Any, subfolder: str) -> Any:
        return _part(
            subfolder.replace("_", " "),
            path,
            lambda: create_diffusers_clip_model_from_ldm(cls, state, subfolder=subfolder, **common),
        )

    parts: dict[str, Any] = {
        "unet": _part("UNet", path, lambda: UNet2DConditionModel.from_single_file(state, subfolder="unet", **common)),
        "vae": _part("VAE", path, lambda: AutoencoderKL.from_single_file(state, subfolder="vae", **common)),
        "text_encoder": text(CLIPTextModel, "text_encoder"),
        "scheduler": _scheduler(folder),
    }
    if arch.startswith("sdxl"):
        parts["text_encoder_2"] = text(CLIPTextModelWithProjection, "text_encoder_2")
    return parts


def _scheduler(folder: Path) -> Any:
    import diffusers

    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return getattr(diffusers, config["_class_name"]).from_config(config)


def load_controlnet(path: Path, arch: str, dtype: Any, configs: Path = CONFIGS) -> Any:
    """A ControlNet from one file, in the original (``control_model.*``) or the diffusers layout."""
    from diffusers import ControlNetModel

    folder = config_folder(f"controlnet-{arch.split('-')[0]}", configs, "submit.controls")
    state = read_state(path)
    try:
        return ControlNetModel.from_single_file(
            state, config=str(folder), subfolder="controlnet", torch_dtype=dtype, local_files_only=True
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise JobFailure(
            f"{path.name} does not match the {arch} ControlNet architecture ({exc}); smaller variants "
            "(SDXL mid/small) are not supported yet",
            "submit.controls",
            ErrorCode.MISSING_WEIGHTS,
        ) from None
