"""GPU benchmark: full-size SD1.5 and SDXL architectures with random weights, through Sfumato's engine.

Random weights cost exactly the compute of the real models; the shapes are the committed
architecture configs (``backend/models/configs``), the same files the single-file loader uses.
Measures, per architecture and task (img2img at strength 1.0 and 0.6, inpaint, img2img +
ControlNet): seconds per image, the steps that really ran and end-to-end steps per second, peak
VRAM; the same img2img in the medium and low memory modes (offloaded: seconds per image, peak
VRAM); the UNet alone (evaluations per second at the generation size, batch 2); the engine's cost
over the bare diffusers call; and preview cost (latent→RGB fit vs a TAESD-sized decoder vs the
full VAE). Writes everything to one JSON file (``--out``) and prints a table.

    python bench/gpu.py --out gpu.json            # on a CUDA machine, unattended, < 8 minutes
    python bench/gpu.py --tiny --out tiny.json    # the same code path on the CPU, tiny models (CI-sized)

The models are built in memory and placed in the engine's pipeline cache (writing 7 GB of random
SDXL weights to disk first would only measure the disk); everything after loading is the real path.
Separately (``--single-file sdxl``, the default on a GPU), a full-size checkpoint is written as a
painter has it — one ``.safetensors`` in the original A1111 key layout, fp16 — and loaded through the
catalogue and the engine with the hub switched off, timing the load and one img2img.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sfumato.backend.engine import NoHooks


def tiny_configs(arch: str) -> dict[str, Any]:
    """Shapes for ``--tiny`` (the script checked on a CPU); full size comes from the committed configs."""
    from sfumato.backend.models.builtin import TINY_TEXT, TINY_UNET, TINY_VAE

    if arch == "sd15":
        return {"unet": TINY_UNET, "vae": TINY_VAE, "text": TINY_TEXT, "size": 64}
    return {
        "unet": dict(
            sample_size=32,
            block_out_channels=(32, 64),
            layers_per_block=1,
            cross_attention_dim=64,
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,
            use_linear_projection=True,
        ),
        "vae": TINY_VAE,
        "text": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
        "text2": dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
        ),
        "size": 64,
    }


def full_configs(arch: str) -> dict[str, Any]:
    """The released architectures' shapes: the same config files the single-file loader uses."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    from sfumato.backend.models.single_file import CONFIGS

    folder = CONFIGS / arch
    text = CLIPTextConfig.from_pretrained(folder / "text_encoder").to_dict()
    cfg: dict[str, Any] = {
        "unet": dict(UNet2DConditionModel.load_config(folder / "unet")),
        "vae": dict(AutoencoderKL.load_config(folder / "vae")),
        "text": {k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")},
        "size": 1024 if arch == "sdxl" else 512,
    }
    if (folder / "text_encoder_2").is_dir():
        text2 = CLIPTextConfig.from_pretrained(folder / "text_encoder_2").to_dict()
        keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "projection_dim")
        cfg["text2"] = {k: text2[k] for k in keys}
    return cfg


def build(arch: str, tiny: bool, device: str, dtype: Any, tokenizer: Any) -> tuple[Any, Any, int]:
    """A base pipeline and a ControlNet with random weights, created directly on the device."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = tiny_configs(arch) if tiny else full_configs(arch)
    common = dict(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    sched = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(cfg["unet"]).to(dtype)
        vae = AutoencoderKL.from_config(cfg["vae"]).to(dtype)
        text = CLIPTextModel(CLIPTextConfig(**cfg["text"], **common)).to(dtype)
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=(16, 32) if tiny else (16, 32, 96, 256)
        ).to(dtype)
        if arch == "sdxl":
            text2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text2"], **common)).to(dtype)
            pipe = StableDiffusionXLPipeline(
                vae=vae,
                text_encoder=text,
                text_encoder_2=text2,
                tokenizer=tokenizer,
                tokenizer_2=tokenizer,
                unet=unet,
                scheduler=sched,
            )
        else:
            pipe = StableDiffusionPipeline(
                unet=unet,
                vae=vae,
                text_encoder=text,
                tokenizer=tokenizer,
                scheduler=sched,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
    pipe.set_progress_bar_config(disable=True)
    return pipe, controlnet, cfg["size"]


def _timed(fn: Any, device: str, n: int = 10) -> float:
    import torch

    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def preview_cost(pipe: Any, latent_side: int, device: str, dtype: Any) -> dict[str, float]:
    """Milliseconds per preview: fitted latent→RGB map, a TAESD-sized decoder, the full VAE."""
    import torch
    from diffusers import AutoencoderTiny

    from sfumato.backend.imaging.preview import LatentPreviewer

    lat = torch.randn(1, 4, latent_side, latent_side, device=device, dtype=dtype)
    linear = LatentPreviewer()
    linear.rgb(lat, pipe.vae)  # fit once
    with torch.device(device):
        taesd = LatentPreviewer(tiny_vae=AutoencoderTiny().to(dtype))
    vae = pipe.vae
    with torch.no_grad():
        return {
            "latent_rgb_ms": _timed(lambda: linear.rgb(lat, vae), device) * 1000,
            "taesd_ms": _timed(lambda: taesd.rgb(lat, vae), device) * 1000,
            "full_vae_ms": _timed(
                lambda: vae.decode((lat / vae.config.scaling_factor).to(vae.dtype)).sample.cpu(), device
            )
            * 1000,
        }


def single_file_check(
    arch: str, work: Path, device: str, precision: str, configs: Path | None = None, native: int | None = None
) -> dict[str, Any]:
    """Write a full-size ``arch`` checkpoint in the original layout (random fp16 weights), then load it
    as a painter's file (catalogue → engine, configs and tokenizer from the project, no hub) and run
    one img2img. ``configs``/``native`` let the tests run the same code with tiny configs on a CPU."""
    import torch
    from helpers import pattern_rgba
    from original_layout import random_checkpoint, save

    from sfumato.backend.engine import Engine
    from sfumato.backend.models.catalogue import Catalogue
    from sfumato.backend.models.single_file import CONFIGS
    from sfumato.protocol import Submit

    configs = configs or CONFIGS
    path = work / "models" / "Stable-diffusion" / f"{arch}-random.safetensors"
    t = time.perf_counter()
    save(random_checkpoint(configs / arch, torch.float16), path)
    write_s = time.perf_counter() - t
    catalogue = Catalogue.scan([work / "models"], work / "cache", builtin=False)
    entry = catalogue.get(f"Stable-diffusion/{path.stem}")
    detected = entry.arch
    if native is not None:
        import dataclasses

        entry = dataclasses.replace(entry, native_size=native)
        catalogue = Catalogue([entry])
    engine = Engine(catalogue, device=device, precision=precision)
    engine.cache.configs = configs
    t = time.perf_counter()
    engine.cache.pipeline(entry, "img2img", [])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t
    size = entry.native_size
    image = pattern_rgba(size, size, seed=5)
    req = Submit(job_id="sf", task="img2img", model=entry.id, image=image, prompt="a painting", steps=20)
    t = time.perf_counter()
    out = engine.run(req, 1, NoHooks())
    run_s = time.perf_counter() - t
    file_gib = path.stat().st_size / 2**30
    path.unlink()  # gigabytes of random weights are not worth keeping
    return {
        "arch": arch,
        "task": "single-file",
        "detected": detected,
        "file_gib": round(file_gib, 2),
        "write_s": round(write_s, 1),
        "load_s": round(load_s, 1),
        "img2img_s": round(run_s, 2),
        "size": f"{out.rect.w}x{out.rect.h}",
    }


class _Recorder(NoHooks):
    """Engine hooks that remember the steps that really ran and the size the resolution autopilot chose."""

    size = (0, 0)
    steps = 0

    def started(self, steps: int, steps_requested: int, width: int, height: int, seeds: list[int]) -> None:
        self.size, self.steps = (width, height), steps


def unet_rate(unet: Any, width: int, height: int, device: str, dtype: Any, n: int) -> float:
    """UNet evaluations per second at a generation size, batch 2 (classifier-free guidance), nothing else timed."""
    import torch

    cfg = unet.config
    with torch.device(device):
        latents = torch.randn(2, cfg.in_channels, height // 8, width // 8, dtype=dtype)
        context = torch.randn(2, 77, cfg.cross_attention_dim, dtype=dtype)
        extra = {}
        if cfg.addition_embed_type == "text_time":  # SDXL: pooled text embedding and the six size/crop ids
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            extra = {"text_embeds": torch.randn(2, pooled, dtype=dtype), "time_ids": torch.randn(2, 6, dtype=dtype)}
        t = torch.tensor([500], dtype=torch.long)
    with torch.no_grad():
        return 1.0 / _timed(
            lambda: unet(latents, t, encoder_hidden_states=context, added_cond_kwargs=extra or None), device, n
        )


def memory_mode_run(
    arch: str, mode: str, args: argparse.Namespace, device: str, dtype: Any, tokenizer: Any, cache_dir: Path
) -> dict[str, Any]:
    """One img2img (strength 1.0) with the weights placed as memory mode ``mode`` puts them: s/image, peak VRAM."""
    import torch
    from helpers import pattern_rgba

    from sfumato.backend.engine import Engine
    from sfumato.backend.models.cache import LoadedModel
    from sfumato.backend.models.catalogue import Catalogue, ModelEntry
    from sfumato.backend.models.placement import Placement, place
    from sfumato.protocol import Submit

    pipe, _, size = build(arch, args.tiny, "cpu", dtype, tokenizer)  # built in RAM: offloading starts there
    pipe = place(pipe, Placement(mode, "bench"), device)
    model = ModelEntry(f"bench:{arch}", "checkpoint", arch, cache_dir, "diffusers", size)
    engine = Engine(Catalogue([model]), device=device, precision="fp32" if args.tiny else "fp16")
    engine.cache._models[model.id] = LoadedModel(model, pipe)
    engine.cache.placements[model.id] = Placement(mode, "bench")
    req = Submit(
        job_id="m", model=model.id, image=pattern_rgba(size, size, seed=3), prompt="a painting",
        steps=args.steps, strength=1.0, seed=1, task="img2img",
    )  # fmt: skip
    engine.run(req, 1, NoHooks())  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        engine.run(req, 1, NoHooks())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None
    del engine, pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "arch": arch,
        "task": f"img2img memory={mode}",
        "seconds_per_image": round(statistics.median(times), 4),
        "peak_vram_gib": peak,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu-bench.json"))
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU: checks the script itself")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--archs", default="sd15,sdxl")
    p.add_argument(
        "--single-file",
        default=None,
        help="architectures to write and load as original-layout single files (default: sdxl; none with --tiny)",
    )
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers loads the hub library: nothing here may download

    import tempfile

    import torch
    from helpers import pattern_rgba, rect_mask

    from sfumato.backend.engine import Engine
    from sfumato.backend.models.builtin import ensure_builtin
    from sfumato.backend.models.cache import LoadedModel
    from sfumato.backend.models.catalogue import Catalogue, ModelEntry
    from sfumato.protocol import Control, Submit

    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.float16
    cache_dir = Path(tempfile.mkdtemp(prefix="sfumato-gpu-bench-"))
    tiny_dir, _ = ensure_builtin(cache_dir)  # only for its tokenizer
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_dir / "tokenizer")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "steps": args.steps,
        "results": [],
    }
    archs = args.archs.split(",")
    t_start = time.perf_counter()
    for arch in archs:
        pipe, controlnet, size = build(arch, args.tiny, device, dtype, tokenizer)
        native = size
        model = ModelEntry(f"bench:{arch}", "checkpoint", arch, cache_dir, "diffusers", native)
        cn = ModelEntry(f"bench:{arch}-canny", "controlnet", arch, cache_dir, "diffusers", control_type="canny")
        engine = Engine(Catalogue([model, cn]), device=device, precision="fp32" if args.tiny else "fp16")
        engine.cache._models[model.id] = LoadedModel(model, pipe)
        engine.cache._controlnets[cn.id] = controlnet
        image = pattern_rgba(size, size, seed=3)
        mask = rect_mask(size, size, size // 4, size // 4, 3 * size // 4, 3 * size // 4)
        jobs = {
            "img2img": dict(task="img2img", strength=1.0),
            "img2img@0.6": dict(task="img2img", strength=0.6),
            "inpaint": dict(task="inpaint", strength=1.0, mask=mask, context=None),
            "img2img+canny": dict(task="img2img", strength=1.0, controls=(Control(type="canny", image=image),)),
        }
        for name, kw in jobs.items():
            kw = {k: v for k, v in kw.items() if v is not None}
            req = Submit(
                job_id="b",
                model=model.id,
                image=image,
                prompt="a painting",
                steps=args.steps,
                seed=1,
                scheduler="euler_a",
                **kw,
            )
            engine.run(req, 1, NoHooks())  # warm-up (kernels, allocator, latent fit)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times, hooks = [], _Recorder()
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = engine.run(req, 1, hooks)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            sec = statistics.median(times)
            row = {
                "arch": arch,
                "task": name,
                "size": f"{out.rect.w}x{out.rect.h}",
                "gen": f"{hooks.size[0]}x{hooks.size[1]}",
                "steps_run": hooks.steps,  # strength < 1 runs fewer than the requested steps
                "seconds_per_image": round(sec, 4),
                # end to end (text encoding, VAE, previews, copies included) per step that ran
                "e2e_steps_per_s": round(hooks.steps / sec, 2),
                "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            }
            report["results"].append(row)
            print(json.dumps(row), flush=True)
        gen_w, gen_h = hooks.size
        row = {
            "arch": arch,
            "task": "unet",
            "gen": f"{gen_w}x{gen_h}",
            "unet_it_per_s": round(unet_rate(pipe.unet, gen_w, gen_h, device, dtype, 3 if args.tiny else 20), 2),
        }
        report["results"].append(row)
        print(json.dumps(row), flush=True)
        # engine overhead: the same img2img through the engine vs a bare pipeline call
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

        bare = (StableDiffusionXLImg2ImgPipeline if arch == "sdxl" else StableDiffusionImg2ImgPipeline).from_pipe(pipe)
        bare.set_progress_bar_config(disable=True)
        from PIL import Image as PILImage

        pil = PILImage.frombytes("RGBA", (size, size), image.data).convert("RGB")
        req = Submit(
            job_id="b",
            model=model.id,
            image=image,
            prompt="a painting",
            steps=args.steps,
            strength=1.0,
            seed=1,
            task="img2img",
        )
        pairs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            bare(
                prompt="a painting",
                image=pil,
                strength=1.0,
                num_inference_steps=args.steps,
                output_type="np",
                generator=torch.Generator("cpu").manual_seed(1),
            )
            if device == "cuda":
                torch.cuda.synchronize()
            t_bare = time.perf_counter() - t
            t = time.perf_counter()
            engine.run(req, 1, NoHooks())
            if device == "cuda":
                torch.cuda.synchronize()
            pairs.append((time.perf_counter() - t, t_bare))
        eng_t, bare_t = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        report["results"].append(
            {
                "arch": arch,
                "task": "engine-vs-bare",
                "engine_s": round(eng_t, 4),
                "bare_s": round(bare_t, 4),
                "ratio": round(eng_t / bare_t, 3),
            }
        )
        print(json.dumps(report["results"][-1]), flush=True)
        # preview cost per step
        cost = preview_cost(pipe, size // 2 if args.tiny else size // 8, device, dtype)
        row = {"arch": arch, "task": "preview-cost", **{k: round(v, 3) for k, v in cost.items()}}
        report["results"].append(row)
        print(json.dumps(row), flush=True)
        del engine, pipe, controlnet, bare
        if device == "cuda":
            torch.cuda.empty_cache()
        for mode in ("medium", "low"):  # "high" is every row above
            row = memory_mode_run(arch, mode, args, device, dtype, tokenizer, cache_dir)
            report["results"].append(row)
            print(json.dumps(row), flush=True)
    single = args.single_file if args.single_file is not None else ("" if args.tiny else "sdxl")
    for arch in filter(None, single.split(",")):
        row = single_file_check(arch, cache_dir / "single-file", device, "fp32" if args.tiny else "fp16")
        report["results"].append(row)
        print(json.dumps(row), flush=True)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({report['wall_s']} s)")
    _ = np  # numpy is imported for the engine's sake; keep the import explicit
    return 0


if __name__ == "__main__":
    sys.exit(main())
