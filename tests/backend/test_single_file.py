"""Single-file checkpoints as painters have them, loaded with no network and no hub cache.

Tiny checkpoints are written in the original (A1111) key layout from tiny configs derived from the
committed ones; the committed configs themselves are checked against the published architectures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import aio, backend_process, pattern_rgba, rect_mask, recv_message, submit
from original_layout import checkpoint_to_original, controlnet_to_original, random_checkpoint, save

from sfumato.backend.engine import Engine
from sfumato.backend.errors import JobFailure
from sfumato.backend.models.catalogue import Catalogue, ModelEntry
from sfumato.backend.models.clip_tokenizer import clip_tokenizer, clip_vocab
from sfumato.backend.models.single_file import CONFIGS, load_checkpoint, load_controlnet, read_state
from sfumato.protocol import PROTOCOL_VERSION, Control, Hello, JobError, Result, Welcome, encode

TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
TEXT_2 = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=64)
SD_UNET = dict(
    sample_size=8,
    block_out_channels=[32, 64],
    layers_per_block=1,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    cross_attention_dim=32,
    attention_head_dim=8,
)
XL_UNET = dict(
    SD_UNET,
    cross_attention_dim=96,  # both text encoders' widths side by side, as in SDXL
    attention_head_dim=[2, 4],
    transformer_layers_per_block=[1, 2],
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 64,  # six size/crop numbers + the pooled bigG embedding
)
VAE = dict(  # four levels, as every SD VAE: ControlNets' hint encoders expect latents at 1/8 of the image
    block_out_channels=[32, 32, 32, 32],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=1,
    sample_size=64,
)
CONTROLNET = {k: v for k, v in SD_UNET.items() if k not in ("sample_size", "up_block_types")}


def _patch(path: Path, **values: Any) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed config folders with tiny shapes: same files, same loader, seconds to run."""
    root = tmp_path_factory.mktemp("configs") / "configs"
    shutil.copytree(CONFIGS, root)
    for arch in ("sd15", "sd15-inpaint", "sdxl", "sdxl-inpaint"):
        xl = arch.startswith("sdxl")
        _patch(
            root / arch / "unet" / "config.json",
            **(XL_UNET if xl else SD_UNET),
            in_channels=9 if "inpaint" in arch else 4,
        )
        _patch(root / arch / "vae" / "config.json", **VAE)
        _patch(root / arch / "text_encoder" / "config.json", **TEXT)
        if xl:
            _patch(root / arch / "text_encoder_2" / "config.json", **TEXT_2)
    _patch(root / "controlnet-sd15" / "controlnet" / "config.json", **CONTROLNET)
    return root


class Parts:
    """The components of a pipeline, as :func:`checkpoint_to_original` reads them."""

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any = None) -> None:
        self.unet, self.vae, self.text_encoder, self.text_encoder_2 = unet, vae, text_encoder, text_encoder_2


def tiny_parts(configs: Path, arch: str, seed: int = 0) -> Parts:
    """Random tiny components built from the tiny config folder of ``arch``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = configs / arch
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    text_2 = None
    if (folder / "text_encoder_2").is_dir():
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    return Parts(unet, vae, text, text_2)


def assert_same_weights(written: Any, loaded: Any, dtype: Any = torch.float32) -> None:
    """Every tensor of ``loaded`` is the written one, through the file's dtype."""
    a, b = written.state_dict(), loaded.state_dict()
    a = {k: v for k, v in a.items() if "position_ids" not in k}
    assert set(a) <= set(b), sorted(set(a) - set(b))[:5]
    for key, value in a.items():
        assert torch.equal(value.to(dtype).float(), b[key].float()), key


def a1111(tmp_path: Path, state: dict[str, Any], name: str = "painter", dtype: Any = torch.float16) -> Path:
    """``state`` saved where A1111 keeps checkpoints; returns the models root."""
    root = tmp_path / "stable-diffusion-webui" / "models"
    save(state, root / "Stable-diffusion" / f"{name}.safetensors", dtype)
    return root


def engine_for(root: Path, configs: Path, model_cache: Path) -> tuple[Engine, dict[str, ModelEntry]]:
    """An engine on the tiny configs, and the catalogue as scanned. Its entries generate at 64²: the
    resolution autopilot would otherwise run a tiny model at the real model's 384-1024² for nothing."""
    scanned = {e.id: e for e in Catalogue.scan([root], model_cache, builtin=False).all()}
    engine = Engine(Catalogue([dataclasses.replace(e, native_size=64) for e in scanned.values()]), device="cpu")
    engine.cache.configs = configs
    return engine, scanned


def assert_generated(out: Any, size: int = 64) -> None:
    image = out.images[0]
    assert (image.width, image.height) == (size, size)
    rgb = np.frombuffer(image.data, np.uint8).reshape(size, size, 4)[..., :3]
    assert rgb.std() > 0 and not np.array_equal(
        rgb, np.frombuffer(pattern_rgba(size, size).data, np.uint8).reshape(size, size, 4)[..., :3]
    )


# ---------------------------------------------------------------------------- tokenizer


def test_clip_tokenizer_from_package_data_gives_clips_own_ids() -> None:
    vocab, merges = clip_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (49406, 49407)
    tok = clip_tokenizer("clip-l")
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("hello world").input_ids == [49406, 3306, 1002, 49407]
    assert tok("masterpiece, A CAT!").input_ids == [49406, 12066, 267, 320, 2368, 256, 49407]  # lower-cased
    long = tok("cat " * 100, truncation=True, max_length=tok.model_max_length).input_ids
    assert len(long) == 77 and long[-1] == 49407
    # SDXL's two tokenizers: one vocabulary, padded differently (CLIP-L with the end token, bigG with "!")
    padded = tok("a cat", padding="max_length", max_length=8).input_ids
    assert padded == [49406, 320, 2368, 49407, 49407, 49407, 49407, 49407]
    assert clip_tokenizer("openclip")("a cat", padding="max_length", max_length=8).input_ids == [
        49406,
        320,
        2368,
        49407,
        0,
        0,
        0,
        0,
    ]


# ---------------------------------------------------------------------------- the committed configs


def test_committed_configs_are_the_published_architectures() -> None:
    """Built on the meta device (nothing allocated): parameter counts of the released models, and the
    original-layout keys and shapes that tell the architectures apart in painters' files."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(m: Any) -> int:
        return sum(p.numel() for p in m.parameters())

    expected = {  # UNet, VAE, text encoder(s)
        "sd15": (859_520_964, 83_653_863, 123_060_480),
        "sd15-inpaint": (859_535_364, 83_653_863, 123_060_480),
        "sd2": (865_910_724, 83_653_863, 340_387_840),
        "sd2-inpaint": (865_925_124, 83_653_863, 340_387_840),
        "sdxl": (2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
        "sdxl-inpaint": (2_567_478_084, 83_653_863, 123_060_480, 694_659_840),
    }
    for arch, counts in expected.items():
        folder = CONFIGS / arch
        with init_empty_weights():
            parts = Parts(
                UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
                AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
                CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
                CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
                if arch.startswith("sdxl")
                else None,
            )
        got = tuple(count(m) for m in (parts.unet, parts.vae, parts.text_encoder, parts.text_encoder_2) if m)
        assert got == counts, arch
        shapes = {k: tuple(v.shape) for k, v in checkpoint_to_original(parts).items()}
        assert shapes["model.diffusion_model.input_blocks.0.0.weight"][1] == (9 if "inpaint" in arch else 4)
        if arch.startswith("sd15"):
            assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in shapes
            assert shapes["cond_stage_model.transformer.text_model.final_layer_norm.weight"] == (768,)
        elif arch.startswith("sd2"):
            assert shapes["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] == (
                320,
                1024,
            )
            assert shapes["cond_stage_model.model.ln_final.weight"] == (1024,)
        else:
            assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
            assert "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_proj.bias" in shapes
            assert shapes["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    with init_empty_weights():
        for arch, cross in (("sd15", 768), ("sd2", 1024), ("sdxl", 2048)):
            net = ControlNetModel.from_config(
                ControlNetModel.load_config(CONFIGS / f"controlnet-{arch}" / "controlnet")
            )
            assert net.config.cross_attention_dim == cross
    assert count(net) == 1_251_014_160  # diffusers' full-size SDXL ControlNet


def test_a_missing_config_is_a_typed_error_that_says_what_to_do(tmp_path: Path, tiny_configs: Path) -> None:
    path = save(checkpoint_to_original(tiny_parts(tiny_configs, "sd15")), tmp_path / "x.safetensors")
    empty = tmp_path / "no-configs"
    empty.mkdir()
    with pytest.raises(JobFailure) as err:
        load_checkpoint(path, "sd15", torch.float32, empty)
    assert err.value.code == "missing_weights"
    assert "never downloads" in err.value.message and "reinstall" in err.value.message


# ---------------------------------------------------------------------------- checkpoints as painters have them


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "fp32"])
def test_sd15_single_file_of_any_dtype_loads_offline_and_generates(
    tmp_path: Path, tiny_configs: Path, model_cache: Path, dtype: Any
) -> None:
    parts = tiny_parts(tiny_configs, "sd15")
    root = a1111(tmp_path, checkpoint_to_original(parts), dtype=dtype)
    engine, scanned = engine_for(root, tiny_configs, model_cache)
    entry = engine.catalogue.get("Stable-diffusion/painter")
    assert (entry.arch, entry.format, scanned[entry.id].native_size) == ("sd15", "single_file", 512)
    out = engine.run(submit("s", model=entry.id, steps=2, strength=1.0), seed=1)
    assert_generated(out)
    pipe = engine.cache.pipeline(entry, "img2img", [])
    for written, loaded in ((parts.unet, pipe.unet), (parts.vae, pipe.vae), (parts.text_encoder, pipe.text_encoder)):
        assert_same_weights(written, loaded, dtype)
        assert next(loaded.parameters()).dtype == torch.float32  # the CPU runs in fp32 whatever the file holds
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_ema_copies_are_skipped_like_a1111(tmp_path: Path, tiny_configs: Path) -> None:
    parts = tiny_parts(tiny_configs, "sd15")
    state = checkpoint_to_original(parts)
    unet_keys = [k for k in state if k.startswith("model.diffusion_model.")]
    # the EMA copy of each UNet weight, under the flattened names the original training code gives it
    for key in unet_keys:
        state["model_ema." + key.removeprefix("model.").replace(".", "")] = torch.full_like(state[key], 7.0)
    state["model_ema.num_updates"] = torch.tensor(1000)
    path = save(state, tmp_path / "v1-5-pruned.safetensors")
    assert not [k for k in read_state(path) if k.startswith("model_ema")]  # never even read into memory
    pipe = load_checkpoint(path, "sd15", torch.float32, tiny_configs)
    assert_same_weights(parts.unet, pipe.unet)


def test_prefix_variants_of_painters_files_load(tmp_path: Path, tiny_configs: Path) -> None:
    parts = tiny_parts(tiny_configs, "sd15")
    state = checkpoint_to_original(parts)
    clip = "cond_stage_model.transformer.text_model."
    variants = {
        # CLIP saved by transformers < 4.31 (many SD1.5 merges): no "text_model." level
        "old-clip": {k.replace(clip, "cond_stage_model.transformer."): v for k, v in state.items()},
        # the whole checkpoint under the training wrapper's "state_dict." prefix
        "wrapped": {"state_dict." + k: v for k, v in state.items()},
        # the VAE under "vae." instead of "first_stage_model." (as some merge tools write it)
        "vae-prefix": {k.replace("first_stage_model.", "vae."): v for k, v in state.items()},
    }
    for name, variant in variants.items():
        pipe = load_checkpoint(save(variant, tmp_path / f"{name}.safetensors"), "sd15", torch.float32, tiny_configs)
        for written, loaded in (
            (parts.unet, pipe.unet),
            (parts.vae, pipe.vae),
            (parts.text_encoder, pipe.text_encoder),
        ):
            assert_same_weights(written, loaded)


def test_baked_in_vae_is_the_one_used(tmp_path: Path, tiny_configs: Path, model_cache: Path) -> None:
    """Two files that differ only in their VAE: each pipeline decodes with its own."""
    parts = tiny_parts(tiny_configs, "sd15", seed=0)
    other_vae = tiny_parts(tiny_configs, "sd15", seed=5).vae
    state = checkpoint_to_original(parts)
    swapped = checkpoint_to_original(Parts(parts.unet, other_vae, parts.text_encoder))
    root = a1111(tmp_path, state, "own-vae")
    save(swapped, root / "Stable-diffusion" / "other-vae.safetensors", torch.float16)
    engine, _ = engine_for(root, tiny_configs, model_cache)
    results = {}
    for name, vae in (("own-vae", parts.vae), ("other-vae", other_vae)):
        entry = engine.catalogue.get(f"Stable-diffusion/{name}")
        assert_same_weights(vae, engine.cache.pipeline(entry, "img2img", []).vae, torch.float16)
        results[name] = engine.run(submit("v", model=entry.id, steps=2, strength=1.0), seed=3).images[0].data
    assert results["own-vae"] != results["other-vae"]


def test_inpainting_variant_is_detected_and_inpaints(tmp_path: Path, tiny_configs: Path, model_cache: Path) -> None:
    parts = tiny_parts(tiny_configs, "sd15-inpaint")
    assert parts.unet.config.in_channels == 9
    root = a1111(tmp_path, checkpoint_to_original(parts), "fill")
    engine, _ = engine_for(root, tiny_configs, model_cache)
    entry = engine.catalogue.get("Stable-diffusion/fill")
    assert entry.arch == "sd15-inpaint"
    job = submit("i", model=entry.id, task="inpaint", mask=rect_mask(64, 64, 16, 16, 48, 48), steps=2, strength=1.0)
    out = engine.run(job, seed=1)
    assert out.images[0].width > 0
    pipe = engine.cache.pipeline(entry, "inpaint", [])
    assert pipe.unet.config.in_channels == 9
    assert_same_weights(parts.unet, pipe.unet, torch.float16)


@pytest.mark.parametrize("arch", ["sdxl", "sdxl-inpaint"])
def test_sdxl_single_file_loads_both_text_encoders_and_generates(
    tmp_path: Path, tiny_configs: Path, model_cache: Path, arch: str
) -> None:
    parts = tiny_parts(tiny_configs, arch)
    state = checkpoint_to_original(parts)
    assert any(k.startswith("conditioner.embedders.1.model.transformer.resblocks.") for k in state)
    root = a1111(tmp_path, state, "xl")
    engine, scanned = engine_for(root, tiny_configs, model_cache)
    entry = engine.catalogue.get("Stable-diffusion/xl")
    assert (entry.arch, scanned[entry.id].native_size) == (arch, 1024)
    pipe = engine.cache.pipeline(entry, "img2img", [])
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert_same_weights(parts.unet, pipe.unet, torch.float16)
    assert_same_weights(parts.text_encoder, pipe.text_encoder, torch.float16)
    assert_same_weights(parts.text_encoder_2, pipe.text_encoder_2, torch.float16)
    assert (pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    if arch == "sdxl":
        assert_generated(engine.run(submit("x", model=entry.id, steps=2, strength=1.0), seed=1))


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_controlnet_single_file_in_either_layout_loads_and_conditions(
    tmp_path: Path, tiny_configs: Path, model_cache: Path, layout: str
) -> None:
    from diffusers import ControlNetModel

    torch.manual_seed(4)
    net = ControlNetModel.from_config(ControlNetModel.load_config(tiny_configs / "controlnet-sd15" / "controlnet"))
    with torch.no_grad():  # trained ControlNets start from zero convolutions; random ones make the control visible
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            conv.weight.normal_(0.0, 0.05)
    state = net.state_dict()
    if layout == "original":
        state = controlnet_to_original(state, dict(net.config))
        assert "control_model.input_hint_block.14.weight" in state and "control_model.zero_convs.0.0.weight" in state
    path = save(state, tmp_path / "models" / "ControlNet" / "control_sd15_canny.safetensors", torch.float16)
    loaded = load_controlnet(path, "sd15", torch.float32, tiny_configs)
    assert_same_weights(net, loaded, torch.float16)

    parts = tiny_parts(tiny_configs, "sd15")
    ckpt = save(checkpoint_to_original(parts), tmp_path / "models" / "ckpt.safetensors", torch.float16)
    model = ModelEntry("ckpt", "checkpoint", "sd15", ckpt, "single_file", 64)
    control = ModelEntry("cn", "controlnet", "sd15", path, "single_file", control_type="canny")
    engine = Engine(Catalogue([model, control]), device="cpu")
    engine.cache.configs = tiny_configs
    image = pattern_rgba(64, 64, seed=2)
    plain = engine.run(submit("p", model="ckpt", image=image, steps=2, strength=1.0), seed=1)
    controlled = engine.run(
        submit("c", model="ckpt", image=image, steps=2, strength=1.0, controls=(Control(type="canny", image=image),)),
        seed=1,
    )
    assert plain.images[0].data != controlled.images[0].data


# ---------------------------------------------------------------------------- a full-size file, no network


@pytest.fixture(scope="session")
def full_size_sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An A1111 models folder holding a full-size SD1.5 checkpoint (original layout, fp16, random
    weights, 2.1 GB), written once per run; only its path stays in memory."""
    root = tmp_path_factory.mktemp("webui") / "models"
    save(random_checkpoint(CONFIGS / "sd15", torch.float16), root / "Stable-diffusion" / "sd15-random.safetensors")
    return root


@aio
async def test_full_size_sd15_single_file_generates_through_the_server_with_the_network_cut(
    full_size_sd15: Path, tmp_path: Path, model_cache: Path
) -> None:
    hub = tmp_path / "empty-hf-home"
    hub.mkdir()
    unreachable = "http://127.0.0.1:9"  # any request that slipped past the offline switch would fail here
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hub),
        "HF_HUB_CACHE": str(hub / "hub"),
        "HTTP_PROXY": unreachable,
        "HTTPS_PROXY": unreachable,
        "SFUMATO_BUILTIN_MODELS": "0",
    }
    image = pattern_rgba(64, 64, seed=7)
    with backend_process(model_cache, "--models", str(full_size_sd15), env=env) as (url, proc):
        # no keepalive pings: loading 2 GB holds the GIL in long stretches and, on a busy 2-core machine,
        # a 20 s ping could go unanswered (a separate matter from loading offline, which this test is about)
        ws = await connect(url, max_size=None, compression=None, ping_interval=None)
        await ws.send(encode(Hello(version=PROTOCOL_VERSION, client="painter", kind="test")))
        assert isinstance(await recv_message(ws), Welcome)
        # 64² is generated at SD1.5's minimum (384²); one denoising step without CFG keeps a 2-core CPU at ~1 min
        job = submit("full", model="Stable-diffusion/sd15-random", image=image, steps=2, strength=0.5, guidance=1.0)
        await ws.send(encode(job))
        while not isinstance(answer := await recv_message(ws), (Result, JobError)):
            pass
        await ws.close()
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        peak = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmHWM"))
    assert isinstance(answer, Result), answer
    print(f"\nfull-size SD1.5 single file: backend peak RSS {peak / 2**30:.1f} GiB, timings {answer.timings}")
    (out,) = answer.images
    assert (out.width, out.height, out.format) == (64, 64, "rgba8")
    rgb = np.frombuffer(out.data, np.uint8).reshape(64, 64, 4)[..., :3]
    assert not np.array_equal(rgb, np.frombuffer(image.data, np.uint8).reshape(64, 64, 4)[..., :3])
    assert rgb.std() > 0
    assert not any(hub.rglob("*")), "nothing was fetched into or cached in the hub folder"
    assert peak < 8 << 30, f"the backend peaked at {peak / 2**30:.1f} GiB"


def test_gpu_bench_single_file_path_runs_with_tiny_configs_on_the_cpu(tmp_path: Path, tiny_configs: Path) -> None:
    """bench/gpu.py's SDXL single-file check, the code a GPU runs at full size, on tiny configs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).resolve().parents[2] / "bench" / "gpu.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.single_file_check("sdxl", tmp_path, "cpu", "fp32", configs=tiny_configs, native=64)
    assert (row["task"], row["detected"], row["size"]) == ("single-file", "sdxl", "64x64")
    assert row["file_gib"] > 0 and row["load_s"] >= 0
    assert not list(tmp_path.rglob("*.safetensors"))  # the random weights are not left on disk
