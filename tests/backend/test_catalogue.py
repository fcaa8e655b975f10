"""Model discovery: architecture from tensors (not names), A1111/ComfyUI folders, pickles refused, roots enforced."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from sfumato.backend.errors import JobFailure
from sfumato.backend.models.catalogue import Catalogue


def fake(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors file with the given tensor names and shapes (the detector reads only the header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(s, np.float16) for k, s in shapes.items()}, str(path))
    return path


SD15 = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
}
SD15_INPAINT = {**SD15, "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}
SD2 = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "cond_stage_model.model.ln_final.weight": (1024,),
}
SDXL = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
    "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
    "conditioner.embedders.1.model.ln_final.weight": (1280,),
}
CONTROL_SD15 = {"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}
LORA = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}  # no key tells the family
LORA_SD15 = {**LORA, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768)}
LORA_SD2 = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 1024)}
LORA_SDXL = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)}
LORA_SDXL_DIFFUSERS = {"text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": (4, 1280)}


def scan(*roots: Path, builtin: bool = False, cache: Path | None = None) -> dict[str, Any]:
    cat = Catalogue.scan(list(roots), cache or roots[0] / ".cache", builtin=builtin)
    return {e.id: e for e in cat.all()}


def test_a1111_folder_is_classified_by_tensors(tmp_path: Path) -> None:
    root = tmp_path / "stable-diffusion-webui" / "models"
    fake(root / "Stable-diffusion" / "dreamy.safetensors", SD15)
    fake(root / "Stable-diffusion" / "sdxl_looks_like_sd15_by_name.safetensors", SDXL)  # the name lies
    fake(root / "Stable-diffusion" / "fill.safetensors", SD15_INPAINT)
    fake(root / "Stable-diffusion" / "v2.safetensors", SD2)
    fake(root / "ControlNet" / "control_v11p_sd15_canny.safetensors", CONTROL_SD15)
    fake(root / "ControlNet" / "mystery.safetensors", CONTROL_SD15)
    fake(root / "Lora" / "style.safetensors", LORA)
    fake(root / "Lora" / "ink.safetensors", LORA_SD15)
    fake(root / "Lora" / "v2ink.safetensors", LORA_SD2)
    fake(root / "Lora" / "xlink.safetensors", LORA_SDXL)
    fake(root / "Lora" / "xlpeft.safetensors", LORA_SDXL_DIFFUSERS)
    (root / "Stable-diffusion" / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")  # a pickle: never opened
    found = scan(root)
    assert found["Stable-diffusion/dreamy"].arch == "sd15" and found["Stable-diffusion/dreamy"].native_size == 512
    assert found["Stable-diffusion/sdxl_looks_like_sd15_by_name"].arch == "sdxl"
    assert found["Stable-diffusion/fill"].arch == "sd15-inpaint"
    assert found["Stable-diffusion/v2"].arch == "sd2"
    canny = found["ControlNet/control_v11p_sd15_canny"]
    assert (canny.kind, canny.arch, canny.control_type, canny.usable) == ("controlnet", "sd15", "canny", True)
    assert "type unknown" in found["ControlNet/mystery"].problem
    assert found["Lora/style"].kind == "lora" and "unknown layout" in found["Lora/style"].problem
    for name, arch in (("ink", "sd15"), ("v2ink", "sd2"), ("xlink", "sdxl"), ("xlpeft", "sdxl")):
        assert (found[f"Lora/{name}"].kind, found[f"Lora/{name}"].arch, found[f"Lora/{name}"].usable) == (
            "lora",
            arch,
            True,
        )
    old = found["Stable-diffusion/old"]
    assert not old.usable and "never unpickles" in old.problem and ".safetensors" in old.problem


def test_comfyui_layout_and_diffusers_folders_load_and_run(tmp_path: Path, engine: Any, model_cache: Path) -> None:
    """A user's diffusers folder is found, classified, loaded by the real code and generates."""
    from sfumato.backend.engine import Engine
    from sfumato.backend.models.builtin import ensure_builtin

    root = tmp_path / "ComfyUI" / "models"
    tiny, tiny_cn = ensure_builtin(model_cache)
    shutil.copytree(tiny, root / "diffusers" / "my-tiny")
    shutil.copytree(tiny_cn, root / "controlnet" / "tiny-canny")
    fake(root / "checkpoints" / "base.safetensors", SD15)
    found = scan(root)
    mine = found["diffusers/my-tiny"]
    assert (mine.kind, mine.format, mine.native_size) == ("checkpoint", "diffusers", 64)
    assert found["controlnet/tiny-canny"].control_type == "canny"
    assert found["checkpoints/base"].arch == "sd15"

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import submit

    user_engine = Engine(Catalogue.scan([root], model_cache, builtin=False), device="cpu")
    out = user_engine.run(submit("u", model="diffusers/my-tiny"), seed=1)
    assert len(out.images[0].data) == 64 * 64 * 4
    assert user_engine.loaded_models() == ["diffusers/my-tiny"]


def test_ids_resolve_inside_the_roots_only(tmp_path: Path) -> None:
    root, outside = tmp_path / "models", tmp_path / "elsewhere"
    fake(outside / "secret.safetensors", SD15)
    fake(root / "ok.safetensors", SD15)
    os.symlink(outside / "secret.safetensors", root / "link.safetensors")
    cat = Catalogue.scan([root], tmp_path / "cache", builtin=False)
    assert cat.get("ok").usable
    for bad in ("../elsewhere/secret", str(outside / "secret.safetensors"), "link"):
        with pytest.raises(JobFailure) as err:
            cat.get(bad)
        assert err.value.code == "unknown_model"
    assert "outside the model folder" in {e.id: e for e in cat.all()}["link"].problem


def test_unreadable_and_garbage_files_are_reported_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "truncated.safetensors").write_bytes(b"\x10\x00")
    (root / "garbage.safetensors").write_bytes(b"\xff" * 8 + b"not json")
    found = scan(root)
    assert "too short" in found["truncated"].problem
    assert not found["garbage"].usable


def test_builtin_is_written_as_a_diffusers_folder_and_labelled_test(model_cache: Path) -> None:
    cat = Catalogue.scan([], model_cache)
    tiny = cat.get("builtin:tiny")
    assert tiny.test and "test model" in tiny.label
    assert (tiny.path / "model_index.json").is_file()
    assert (tiny.path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tiny.path.rglob("*.bin"))  # safetensors only


def test_taesd_is_used_for_previews_when_installed(tmp_path: Path, model_cache: Path) -> None:
    import sys

    from diffusers import AutoencoderTiny

    from sfumato.backend.engine import Engine, NoHooks

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import submit

    root = tmp_path / "models"
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(
        root / "vae_approx" / "taesd"
    )
    cat = Catalogue.scan([root], model_cache)
    assert cat.preview_decoder_for("sd15-tiny") is not None
    engine = Engine(cat, device="cpu")
    assert all(m.kind in ("checkpoint", "controlnet") for m in engine.models())  # not offered as a model

    class Previews(NoHooks):
        def __init__(self) -> None:
            self.images: list[Any] = []

        def wants_preview(self) -> bool:
            return True

        def preview(self, image: Any) -> None:
            self.images.append(image)

    hooks = Previews()
    engine.run(submit("t", steps=4, strength=1.0), 1, hooks)
    assert hooks.images and all(p.format == "rgba8" for p in hooks.images)
    (previewer,) = engine._previewers.values()
    assert previewer.tiny_vae is not None


def test_incomplete_single_file_fails_fast_and_clearly_without_a_network(tmp_path: Path, model_cache: Path) -> None:
    """Configs never come from the hub now (tests/backend/test_single_file.py loads whole files);
    a file that lacks a part fails at once with words, not a download attempt."""
    import sys
    import time

    from sfumato.backend.engine import Engine

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import submit

    fake(tmp_path / "models" / "dreamy.safetensors", SD15)
    engine = Engine(Catalogue.scan([tmp_path / "models"], model_cache, builtin=False), device="cpu")
    t = time.monotonic()
    with pytest.raises(JobFailure) as err:
        engine.run(submit("s", model="dreamy"), 1)
    assert time.monotonic() - t < 30  # no hang waiting for a network that is not there
    assert err.value.code == "missing_weights" and "no VAE inside" in err.value.message


def test_hugging_face_ids_need_downloads_allowed(tmp_path: Path, model_cache: Path) -> None:
    offline = Catalogue.scan([], model_cache, builtin=False)
    with pytest.raises(JobFailure) as err:
        offline.get("hf:someone/some-sdxl-model")
    assert err.value.code == "missing_weights" and "downloads are off" in err.value.message
    online = Catalogue.scan([], model_cache, builtin=False, allow_hub=True)
    entry = online.get("hf:someone/some-sdxl-model")
    assert (entry.arch, entry.format, entry.native_size) == ("sdxl", "hub", 1024)
    for path_like in ("hf:../../etc", "hf:../x", "hf:./x", "hf:x/..", "hf:-x/y", "hf:a/b..c"):
        with pytest.raises(JobFailure, match="not a Hugging Face repository id"):
            online.get(path_like)  # never a folder outside the model folders


def test_pipeline_cache_evicts_least_recently_used(tmp_path: Path, model_cache: Path) -> None:
    from sfumato.backend.models.builtin import ensure_builtin
    from sfumato.backend.models.cache import PipelineCache

    tiny, _ = ensure_builtin(model_cache)
    shutil.copytree(tiny, tmp_path / "models" / "second")
    cat = Catalogue.scan([tmp_path / "models"], model_cache)
    cache = PipelineCache("cpu", __import__("torch").float32, budget_bytes=1)
    first = cache.pipeline(cat.get("builtin:tiny"), "img2img", [])
    again = cache.pipeline(cat.get("builtin:tiny"), "inpaint", [])
    assert first.unet is again.unet  # derived pipelines share one set of weights
    assert cache.loaded == ["builtin:tiny"]
    cache.pipeline(cat.get("second"), "img2img", [])
    assert cache.loaded == ["second"]  # over budget: the least recently used model went
