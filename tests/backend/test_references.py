"""Reference images through IP-Adapters, on the built-in tiny model.

A tiny CLIP vision encoder and tiny IP-Adapters are written here in the file layouts painters have
(``models/clip_vision/*.safetensors`` in transformers' names, ``models/ipadapter/ip-adapter_sd15.safetensors``
in the published ``image_proj.*``/``ip_adapter.*`` layout; tests/addon_files.py) and loaded by the same
code as a user's. Each test asserts pixels, counts of encoder calls, or the exact state of the UNet.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from addon_files import clip_vision, ip_adapter
from helpers import aio, backend_process, pattern_rgba, rect_mask, recv_message, submit
from original_layout import save
from websockets.asyncio.client import connect

from sfumato.backend.engine import Engine
from sfumato.backend.errors import JobFailure
from sfumato.backend.imaging.resolution import plan
from sfumato.backend.models import image_encoders, ipadapters
from sfumato.backend.models.builtin import TINY_NATIVE_SIZE, ensure_builtin
from sfumato.backend.models.catalogue import Catalogue
from sfumato.backend.models.single_file import CONFIGS
from sfumato.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    JobError,
    Reference,
    Result,
    Submit,
    Welcome,
    encode,
)

LOOK = pattern_rgba(40, 30, seed=5)  # a reference picture (any size: the encoder sees 224²)
OTHER = pattern_rgba(24, 24, seed=9)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """A ComfyUI models folder: clip_vision/ and ipadapter/, with adapters that fit and ones that do not."""
    from diffusers import UNet2DConditionModel

    tiny, _ = ensure_builtin(model_cache)
    unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
    models = tmp_path_factory.mktemp("comfyui") / "models"
    clip_vision(models / "clip_vision" / "tiny-vit.safetensors")  # gives 16-wide embeddings
    ip_adapter(models / "ipadapter" / "ip-adapter_sd15.safetensors", unet, image_dim=16)
    # an SDXL-shaped adapter (it reads SDXL's 2048-wide text features), in miniature: one layer is enough to tell
    xl = {
        "image_proj.proj.weight": torch.zeros(4 * 2048, 16),
        "image_proj.norm.weight": torch.ones(2048),
        "ip_adapter.1.to_k_ip.weight": torch.zeros(8, 2048),
        "ip_adapter.1.to_v_ip.weight": torch.zeros(8, 2048),
    }
    save(xl, models / "ipadapter" / "ip-adapter_sdxl.safetensors")
    # SD 1.5's real width (768) with the tiny encoder's embeddings: the family fits, the shapes do not
    ip_adapter(models / "ipadapter" / "sd15-wide.safetensors", unet, image_dim=16, cross=768)
    # SD 1.5's own adapter reads ViT-H's 1024-wide embeddings: no such encoder here
    ip_adapter(models / "ipadapter" / "sd15-vit-h.safetensors", unet, image_dim=1024)
    return models


@pytest.fixture(scope="module")
def painter(comfy: Path, model_cache: Path) -> Engine:
    return Engine(Catalogue.scan([comfy], model_cache), device="cpu")


def pixels(engine: Engine, req: Submit) -> np.ndarray:
    out = engine.run(req, req.seed or 0)
    img = out.images[0]
    return np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, 4).astype(np.int16)


def job(*references: Reference, **kw: Any) -> Submit:
    kw = {"guidance": 5.0, "steps": 4, "strength": 0.6, **kw}
    return submit("j", references=references, **kw)


def ref(image: Any = LOOK, **kw: Any) -> Reference:
    return Reference(image=image, **{"adapter": "ipadapter/ip-adapter_sd15", **kw})


def refused(engine: Engine, req: Submit) -> JobFailure:
    with pytest.raises(JobFailure) as info:
        engine.run(req, 0)
    return info.value


# ---------------------------------------------------------------------------- the catalogue


def test_adapters_and_encoders_are_catalogued_from_their_tensors(painter: Engine, tmp_path: Path) -> None:
    entries = {e.id: e for e in painter.catalogue.all()}
    expect = {
        "clip_vision/tiny-vit": ("clip_vision", "vit-32x2", ("embeds:16", "hidden:32")),
        "ipadapter/ip-adapter_sd15": ("ipadapter", "sd15-custom", ("embeds:16",)),  # the tiny text width: SD 1.x
        "ipadapter/ip-adapter_sdxl": ("ipadapter", "sdxl", ("embeds:16",)),
        "ipadapter/sd15-wide": ("ipadapter", "sd15", ("embeds:16",)),
        "ipadapter/sd15-vit-h": ("ipadapter", "sd15-custom", ("embeds:1024",)),
    }
    for eid, (kind, arch, features) in expect.items():
        e = entries[eid]
        assert (e.kind, e.arch, e.features, e.usable) == (kind, arch, features, True), e
    infos = {m.id: m for m in painter.models()}
    assert infos["ipadapter/ip-adapter_sdxl"].kind == "ipadapter" and infos["ipadapter/ip-adapter_sdxl"].arch == "sdxl"
    assert infos["clip_vision/tiny-vit"].kind == "clip_vision"


def test_plus_full_face_and_faceid_layouts_are_told_apart(tmp_path: Path, model_cache: Path) -> None:
    """Only the headers are read: each file has the keys and shapes of its published layout, in miniature."""
    z = torch.zeros
    k = {"ip_adapter.1.to_k_ip.weight": z(8, 768), "ip_adapter.1.to_v_ip.weight": z(8, 768)}
    plus = {"image_proj.latents": z(1, 16, 8), "image_proj.proj_in.weight": z(8, 1280), **k}
    full = {"image_proj.proj.0.weight": z(1280, 1280), "image_proj.proj.3.weight": z(768), **k}
    faceid = {"image_proj.proj.0.weight": z(1024, 512), "image_proj.norm.weight": z(768), **k}
    vit_h = {
        "vision_model.embeddings.patch_embedding.weight": z(1280, 3, 14, 14),
        **{f"vision_model.encoder.layers.{i}.layer_norm1.weight": z(1) for i in range(32)},
        "visual_projection.weight": z(1024, 1280),
    }
    for name, state in {"plus": plus, "full": full, "faceid": faceid, "vit-h": vit_h}.items():
        save(state, tmp_path / "models" / f"{name}.safetensors")
    entries = {e.id: e for e in Catalogue.scan([tmp_path / "models"], model_cache, builtin=False).all()}
    assert (entries["plus"].kind, entries["plus"].features) == ("ipadapter", ("hidden:1280",))
    assert (entries["full"].kind, entries["full"].features) == ("ipadapter", ("hidden:1280",))
    assert entries["faceid"].kind == "unusable" and "FaceID" in entries["faceid"].problem
    assert (entries["vit-h"].kind, entries["vit-h"].arch) == ("clip_vision", "vit-h")
    assert entries["vit-h"].features == ("embeds:1024", "hidden:1280")
    assert json.loads((CONFIGS / "clip-vision-vit-h" / "config.json").read_text())["projection_dim"] == 1024


# ---------------------------------------------------------------------------- pictures


def test_a_reference_changes_the_picture_for_its_job_only(painter: Engine, engine: Engine) -> None:
    fresh = pixels(engine, job())  # an engine that never saw an adapter
    assert np.array_equal(pixels(painter, job()), fresh)
    full = pixels(painter, job(ref(mode="full")))
    assert np.abs(full - fresh).mean() > 2.0
    assert np.array_equal(pixels(painter, job()), fresh)  # right after: bit-identical to never having seen it
    assert np.array_equal(pixels(painter, job(ref(mode="full"))), full)  # and the same reference, the same picture
    half = pixels(painter, job(ref(mode="full", weight=0.5)))
    assert np.abs(half - fresh).mean() > 0 and not np.array_equal(half, full)


def test_weight_0_is_the_job_without_the_reference_bit_for_bit(painter: Engine, engine: Engine) -> None:
    fresh = pixels(engine, job())
    assert np.array_equal(pixels(painter, job(ref(weight=0.0))), fresh)
    with_one = pixels(painter, job(ref(mode="full")))
    assert np.array_equal(pixels(painter, job(ref(mode="full"), ref(OTHER, weight=0.0))), with_one)


def test_style_composition_and_full_differ_and_hear_the_reference_where_they_say(painter: Engine) -> None:
    plain = pixels(painter, job())
    by_mode = {m: pixels(painter, job(ref(mode=m))) for m in ("style", "composition", "full")}
    for m, picture in by_mode.items():
        assert np.abs(picture - plain).mean() > 0.5, m
    assert not np.array_equal(by_mode["style"], by_mode["composition"])
    assert not np.array_equal(by_mode["style"], by_mode["full"])
    # the tiny UNet has attention in down block 1 (one) and up block 0 (two): style is the second of up block 0,
    # composition the one of down block 1; every other processor hears nothing
    pipe = painter.cache.pipeline(painter.catalogue.get("builtin:tiny"), "img2img", [])
    entry = painter.catalogue.get("ipadapter/ip-adapter_sd15", "ipadapter")
    state = painter.cache.adapters.state(entry)
    for mode, heard in {
        "style": {"up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor"},
        "composition": {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"},
    }.items():
        with ipadapters.applied(pipe, [(entry, state)], [ipadapters.mode_scale(pipe.unet.config, mode, 0.7)]):
            scales = {n: p.scale for n, p in pipe.unet.attn_processors.items() if hasattr(p, "scale")}
        assert {n for n, s in scales.items() if s != [0.0]} == heard and all(scales[n] == [0.7] for n in heard)
    assert not any(hasattr(p, "scale") for p in pipe.unet.attn_processors.values())  # taken out again


@pytest.mark.parametrize(("arch", "style", "composition"), [("sd15", 1, 2), ("sdxl", 0, 2)])
def test_the_style_and_composition_blocks_of_sd15_and_sdxl(arch: str, style: int, composition: int) -> None:
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(CONFIGS / arch / "unet")
    cfg = type("Config", (), config)
    assert ipadapters.mode_scale(cfg, "style", 0.8) == {"up": {f"block_{style}": [0.0, 0.8, 0.0]}}
    assert ipadapters.mode_scale(cfg, "composition", 0.8) == {"down": {f"block_{composition}": [0.0, 0.8]}}
    assert ipadapters.mode_scale(cfg, "full", 0.8) == 0.8


def test_two_references_combine(painter: Engine) -> None:
    plain = pixels(painter, job())
    one, other = pixels(painter, job(ref(mode="full"))), pixels(painter, job(ref(OTHER, mode="style")))
    both = pixels(painter, job(ref(mode="full"), ref(OTHER, mode="style")))
    for alone in (plain, one, other):
        assert np.abs(both - alone).mean() > 0.5
    assert np.array_equal(pixels(painter, job()), plain)


def test_an_inpaint_hears_the_reference(painter: Engine) -> None:
    mask = rect_mask(64, 64, 16, 16, 48, 48)
    plain = pixels(painter, job(task="inpaint", mask=mask, strength=1.0))
    styled = pixels(painter, job(ref(mode="full"), task="inpaint", mask=mask, strength=1.0))
    assert styled.shape == (32, 32, 4)  # the selection's bounds, as without a reference
    assert np.abs(styled - plain).mean() > 0.5


def test_a_huge_region_hears_the_reference_in_both_passes(painter: Engine) -> None:
    big = dict(image=pattern_rgba(160, 160, seed=3), strength=0.6)
    assert plan(160, 160, TINY_NATIVE_SIZE).refine  # a second pass, on one prompt per picture
    plain = pixels(painter, job(**big))
    styled = pixels(painter, job(ref(mode="full"), **big))
    assert styled.shape == (160, 160, 4) and np.abs(styled - plain).mean() > 0.5


# ---------------------------------------------------------------------------- the embedding cache


def test_a_second_job_with_the_same_reference_does_not_encode_it_again(
    comfy: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    load = image_encoders.load_encoder

    def counted(*args: Any, **kw: Any) -> Any:
        model = load(*args, **kw)
        model.register_forward_hook(lambda *_: calls.append(1))
        return model

    monkeypatch.setattr(image_encoders, "load_encoder", counted)
    engine = Engine(Catalogue.scan([comfy], model_cache), device="cpu")
    first = pixels(engine, job(ref(mode="full")))
    assert len(calls) == 1  # a plain IP-Adapter reads the projected embedding: one encoder call
    held = engine.cache.held_bytes()
    pixels(engine, job(ref(mode="style"), seed=2))
    assert len(calls) == 1  # the same pixels: no call, whatever the job around them
    pixels(engine, job(ref(OTHER)))
    assert len(calls) == 2  # other pixels are encoded
    assert engine.cache.held_bytes() > held  # the embeddings count in the pipeline cache's budget
    engine.cache.clear()
    assert np.array_equal(pixels(engine, job(ref(mode="full"))), first)
    assert len(calls) == 3  # the cache was the reason


def test_the_embedding_cache_is_bounded(comfy: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_encoders, "MAX_EMBEDDINGS", 2)
    engine = Engine(Catalogue.scan([comfy], model_cache), device="cpu")
    encoder = engine.catalogue.get("clip_vision/tiny-vit", "clip_vision")
    seen = []
    for seed in range(3):
        rgb = np.full((8, 8, 3), seed / 3, np.float32)
        engine.cache.encoders.embedding(f"pic{seed}", rgb, encoder, "embeds:16", CONFIGS, "f")
        seen.append(engine.cache.encoders.held_bytes())
    assert seen[2] == seen[1] > seen[0]  # the third pushed the first out


# ---------------------------------------------------------------------------- refusals


def test_adapters_and_encoders_that_do_not_fit_are_typed_errors_naming_what_to_put_where(
    painter: Engine, engine: Engine
) -> None:
    fresh = pixels(engine, job())
    xl = refused(painter, job(ref(adapter="ipadapter/ip-adapter_sdxl")))
    assert (xl.code, xl.field) == (ErrorCode.INVALID_REQUEST, "submit.references[0].adapter")
    assert "is for sdxl models" in xl.message
    vit_h = refused(painter, job(ref(OTHER, weight=0.0), ref(adapter="ipadapter/sd15-vit-h")))
    assert (vit_h.code, vit_h.field) == (ErrorCode.MISSING_WEIGHTS, "submit.references[1].adapter")
    assert "1024-wide image embeddings" in vit_h.message and "CLIP-ViT-H-14-laion2B-s32B-b79K" in vit_h.message
    assert "models/clip_vision" in vit_h.message
    wide = refused(painter, job(ref(adapter="ipadapter/sd15-wide")))
    assert (wide.code, wide.field) == (ErrorCode.INVALID_REQUEST, "submit.references")
    assert "does not fit" in wide.message
    assert np.array_equal(pixels(painter, job()), fresh)  # a failed load leaves the UNet as it was
    none = refused(engine, job(Reference(image=LOOK)))  # a backend without adapters
    assert none.code == ErrorCode.MISSING_WEIGHTS and "models/ipadapter" in none.message
    unknown = refused(painter, job(ref(adapter="ipadapter/nope")))
    assert unknown.code == ErrorCode.UNKNOWN_MODEL
    encoder_as_adapter = refused(painter, job(ref(adapter="clip_vision/tiny-vit")))
    assert encoder_as_adapter.code == ErrorCode.UNKNOWN_MODEL and "expected a ipadapter" in encoder_as_adapter.message


def test_an_adapter_is_picked_for_the_checkpoint_when_none_is_named(painter: Engine) -> None:
    chosen = painter.check(job(Reference(image=LOOK))).references
    assert [c.adapter.id for c in chosen] == ["ipadapter/ip-adapter_sd15"]  # the sd15 one whose encoder is here
    assert chosen[0].encoder.id == "clip_vision/tiny-vit"


# ---------------------------------------------------------------------------- through the server


async def _generate(ws: Any, req: Submit) -> np.ndarray | JobError:
    await ws.send(encode(req))
    while not isinstance(answer := await recv_message(ws), (Result, JobError)):
        pass
    if isinstance(answer, JobError):
        return answer
    return np.frombuffer(answer.images[0].data, np.uint8).reshape(64, 64, 4).astype(np.int16)


@aio
async def test_references_through_the_server(comfy: Path, model_cache: Path, painter: Engine) -> None:
    with backend_process(model_cache, "--models", str(comfy)) as (url, _):
        async with connect(url, max_size=None, compression=None) as ws:
            await ws.send(encode(Hello(version=PROTOCOL_VERSION, client="painter", kind="test")))
            welcome = await recv_message(ws)
            assert isinstance(welcome, Welcome)
            kinds = {m.id: (m.kind, m.arch) for m in welcome.models}
            assert kinds["ipadapter/ip-adapter_sdxl"] == ("ipadapter", "sdxl")
            assert kinds["clip_vision/tiny-vit"] == ("clip_vision", "vit-32x2")
            plain = await _generate(ws, job())
            styled = await _generate(ws, dataclasses.replace(job(ref(mode="style")), job_id="s"))
            zero = await _generate(ws, dataclasses.replace(job(ref(weight=0.0)), job_id="z"))
            mismatched = await _generate(
                ws, dataclasses.replace(job(ref(adapter="ipadapter/ip-adapter_sdxl")), job_id="x")
            )
            again = await _generate(ws, dataclasses.replace(job(), job_id="a"))
    assert isinstance(plain, np.ndarray) and isinstance(styled, np.ndarray)
    assert np.abs(styled - plain).mean() > 0.5
    assert np.array_equal(styled, pixels(painter, job(ref(mode="style"))))  # the server runs the same engine code
    assert isinstance(zero, np.ndarray) and np.array_equal(zero, plain)
    assert isinstance(again, np.ndarray) and np.array_equal(again, plain)
    assert isinstance(mismatched, JobError) and mismatched.code == ErrorCode.INVALID_REQUEST
    assert mismatched.field == "submit.references[0].adapter" and "sdxl" in mismatched.message


# ---------------------------------------------------------------------------- through the AUTOMATIC1111 API


@aio
async def test_an_ip_adapter_unit_of_the_a1111_api_is_a_reference(painter: Engine) -> None:
    import aiohttp

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_a1111 import a1111_server, b64png, img2img, pattern, post, unpng

    init, look = pattern(64, 64, seed=3), pattern(300, 200, seed=8)  # the look is scaled to 224 on its shorter side
    unit = {
        "module": "ip-adapter_clip_sd15",
        "model": "ip-adapter_sd15 [6a3f6166]",
        "weight": 1.0,
        "image": b64png(look),
    }

    async def picture(http: aiohttp.ClientSession, url: str, *units: dict[str, Any]) -> np.ndarray:
        body = img2img(
            init, denoising_strength=0.6, cfg_scale=5.0, alwayson_scripts={"controlnet": {"args": list(units)}}
        )
        status, out = await post(http, f"{url}/sdapi/v1/img2img", body)
        assert status == 200, out
        return unpng(out["images"][0]).astype(np.int16)

    async with a1111_server(painter) as (_, url), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/controlnet/model_list") as resp:
            assert "ipadapter/ip-adapter_sd15" in (await resp.json())["model_list"]  # listed like the extension does
        plain = await picture(http, url)
        styled = await picture(http, url, unit)
        assert np.abs(styled - plain).mean() > 1.0  # the reference changes the picture
        assert np.array_equal(await picture(http, url, {**unit, "weight": 0.0}), plain)  # weight 0: as without it
        auto = await picture(http, url, {**unit, "module": "ip-adapter-auto", "model": "None"})  # picks one that fits
        assert np.array_equal(auto, styled)
        for bad, field in (
            ({**unit, "model": "ip-adapter_sdxl_vit-h"}, "model"),  # no such adapter
            ({**unit, "module": "ip-adapter_face_id_plus"}, "module"),  # FaceID: not supported
            ({**unit, "module": "none"}, "module"),  # an IP-Adapter named as a ControlNet's map: say which module
            ({**unit, "guidance_start": 0.3}, "guidance_start"),  # a reference runs over the whole schedule
        ):
            body = img2img(init, alwayson_scripts={"controlnet": {"args": [bad]}})
            status, out = await post(http, f"{url}/sdapi/v1/img2img", body)
            assert status == 422 and out["detail"][0]["loc"][-1] == field, out
