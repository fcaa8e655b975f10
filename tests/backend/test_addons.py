"""LoRAs, textual-inversion embeddings and standalone VAEs, in an A1111 folder layout, on the built-in tiny model.

The files are written here in the layouts painters download (tests/addon_files.py) for the tiny
model's shapes; each test asserts pixels, or the exact state of the model after a job.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from addon_files import a1111_embedding, diffusers_lora, kohya_lora, kohya_lora_keys, original_vae
from helpers import aio, backend_process, recv_message, submit
from websockets.asyncio.client import connect

from sfumato.backend.engine import Engine
from sfumato.backend.errors import JobFailure
from sfumato.backend.models import loras, vaes
from sfumato.backend.models.builtin import ensure_builtin
from sfumato.backend.models.catalogue import Catalogue, ModelEntry
from sfumato.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Hello,
    JobError,
    LoraWeight,
    Result,
    Submit,
    Welcome,
    encode,
)


class RunsCode:
    """Unpickled by an unrestricted reader, this touches a file: what a malicious .pt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def webui(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """An A1111 install: models/Lora, models/VAE and embeddings/ beside models/; returns its models folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tiny, _ = ensure_builtin(model_cache)
    unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
    text = CLIPTextModel.from_pretrained(tiny / "text_encoder")
    vae = AutoencoderKL.from_pretrained(tiny / "vae")
    root = tmp_path_factory.mktemp("a1111") / "stable-diffusion-webui"
    models = root / "models"
    kohya_lora(models / "Lora" / "detail.safetensors", unet, text)
    diffusers_lora(models / "Lora" / "peft-style.safetensors", unet, text)
    # an SDXL LoRA (kohya names SDXL's blocks as the original checkpoints do; a second text encoder)
    kohya_lora_keys(
        models / "Lora" / "xl-style.safetensors",
        {
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 640),
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280),
        },
    )
    # a real-width SD1.5 LoRA: the same family as the tiny model, other shapes
    kohya_lora_keys(
        models / "Lora" / "sd15-wide.safetensors",
        {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (768, 64)},
    )
    a1111_embedding(root / "embeddings" / "EasyNegative.safetensors", width=32, vectors=3, scale=2.0)
    (root / "embeddings" / "old-style.pt").write_bytes(b"\x80\x02}q\x00.")  # a pickle: listed, never loaded
    # the same vectors saved by A1111's trainer (torch.save, .pt) and as safetensors
    a1111_embedding(root / "embeddings" / "BadHandsST.safetensors", width=32, vectors=3, seed=5, scale=2.0)
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(5)) * 2.0
    a1111_pt = {"string_to_param": {"*": vectors}, "name": "BadHands", "step": 500, "sd_checkpoint": None}
    torch.save(a1111_pt, root / "embeddings" / "BadHands.pt")
    torch.save(RunsCode(root / "ran"), root / "embeddings" / "evil.pt")  # an embedding's name, a payload's pickle
    original_vae(models / "VAE" / "painter-vae.safetensors", vae)
    return models


@pytest.fixture(scope="module")
def painter(webui: Path, model_cache: Path) -> Engine:
    return Engine(Catalogue.scan([webui], model_cache), device="cpu")


def pixels(engine: Engine, req: Submit) -> np.ndarray:
    out = engine.run(req, req.seed or 0)
    return np.frombuffer(out.images[0].data, np.uint8).reshape(64, 64, 4).astype(np.int16)


def job(**kw: Any) -> Submit:
    return submit("j", steps=4, strength=0.6, guidance=5.0, **kw)


def test_the_catalogue_lists_loras_embeddings_and_vaes_with_what_they_fit(webui: Path, painter: Engine) -> None:
    entries = {e.id: e for e in painter.catalogue.all()}
    expect = {
        "Lora/detail": ("lora", "sd15-custom"),  # the tiny model's text width (32): SD 1.x-shaped
        "Lora/peft-style": ("lora", "sd15-custom"),
        "Lora/xl-style": ("lora", "sdxl"),
        "Lora/sd15-wide": ("lora", "sd15"),
        "embeddings/EasyNegative": ("embedding", "sd15-custom"),
        "VAE/painter-vae": ("vae", "sd"),
    }
    for eid, (kind, arch) in expect.items():
        e = entries[eid]
        assert (e.kind, e.arch, e.usable) == (kind, arch, True), e
        assert e.size_bytes == e.path.stat().st_size > 0
    pt = entries["embeddings/BadHands"]
    assert (pt.kind, pt.arch, pt.format, pt.usable) == ("embedding", "sd15-custom", "pickled_embedding", True)
    evil = entries["embeddings/evil"]
    assert evil.kind == "unusable" and "weights-only" in evil.problem
    assert not (webui.parent / "ran").exists(), "scanning a pickled file ran no code"
    old = entries["embeddings/old-style"]
    assert old.kind == "unusable" and "pickled" in old.problem and old.size_bytes == 6
    infos = {m.id: m for m in painter.models()}
    assert infos["Lora/detail"].kind == "lora" and infos["Lora/detail"].size_bytes == entries["Lora/detail"].size_bytes
    assert infos["embeddings/old-style"].problem == old.problem  # unusable entries go to 1.3 editors, with why


def test_a_lora_changes_the_picture_for_its_job_only(painter: Engine, engine: Engine) -> None:
    fresh = pixels(engine, job())  # an engine that never saw a LoRA
    before = pixels(painter, job())
    assert np.array_equal(before, fresh)
    with_lora = pixels(painter, job(loras=(LoraWeight(id="Lora/detail", weight=1.0),)))
    assert np.abs(with_lora - fresh).mean() > 2.0
    assert np.array_equal(pixels(painter, job()), fresh)  # right after: bit-identical to never having seen it
    # A1111's prompt syntax is the same request
    tagged = pixels(painter, job(prompt="a test <lora:detail:1.0>"))
    assert np.array_equal(tagged, with_lora)
    half = pixels(painter, job(prompt="<lora:detail:0.5> a test"))
    assert 0 < np.abs(half - fresh).mean() < np.abs(with_lora - fresh).mean()
    zero = pixels(painter, job(loras=(LoraWeight(id="Lora/detail", weight=0.0),)))
    assert np.abs(zero - fresh).max() <= 1
    peft_style = pixels(painter, job(loras=(LoraWeight(id="Lora/peft-style"),)))  # the diffusers layout
    assert np.abs(peft_style - fresh).mean() > 2.0 and not np.array_equal(peft_style, with_lora)
    assert np.array_equal(pixels(painter, job()), fresh)


def test_a_lora_is_read_from_disk_once(painter: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    pixels(painter, job(loras=(LoraWeight(id="Lora/detail"),)))
    pipe = painter.cache.pipeline(painter.catalogue.get("builtin:tiny"), "img2img", [])
    name = loras.adapter_name(painter.catalogue.get("Lora/detail", "lora"))
    assert name in pipe.get_list_adapters()["unet"]  # kept, disabled
    reads: list[object] = []
    original = type(pipe).load_lora_weights
    monkeypatch.setattr(
        type(pipe), "load_lora_weights", lambda self, *a, **k: reads.append(a) or original(self, *a, **k)
    )
    pixels(painter, job(loras=(LoraWeight(id="Lora/detail"),)))
    painter.run(job(task="inpaint", mask=_mask(), loras=(LoraWeight(id="Lora/detail"),)), 1)  # another pipeline
    assert reads == []


def _mask() -> Any:
    from helpers import rect_mask

    return rect_mask(64, 64, 16, 16, 48, 48)


def test_loras_that_do_not_fit_are_typed_errors_and_leave_nothing_behind(painter: Engine, engine: Engine) -> None:
    with pytest.raises(JobFailure) as caught:
        painter.check(job(loras=(LoraWeight(id="Lora/xl-style"),)))
    assert caught.value.code == ErrorCode.INVALID_REQUEST and "for sdxl models" in caught.value.message
    with pytest.raises(JobFailure) as caught:
        painter.check(job(prompt="a test <lora:no-such-lora:1>"))
    assert caught.value.code == ErrorCode.UNKNOWN_MODEL and caught.value.field == "submit.prompt"
    with pytest.raises(JobFailure) as caught:
        painter.check(job(loras=(LoraWeight(id="VAE/painter-vae"),)))
    assert caught.value.code == ErrorCode.UNKNOWN_MODEL and "is a vae" in caught.value.message
    with pytest.raises(JobFailure) as caught:  # same family, other shapes: found out when loading
        painter.run(job(loras=(LoraWeight(id="Lora/sd15-wide"),)), 1)
    assert caught.value.code == ErrorCode.INVALID_REQUEST and "does not fit" in caught.value.message
    assert np.array_equal(pixels(painter, job()), pixels(engine, job()))


def test_prompt_tags_are_parsed_once_by_one_rule() -> None:
    assert loras.split_prompt("a cat <lora:detail:0.8>, <lora:ink> in snow") == (
        "a cat , in snow",
        [("detail", 0.8), ("ink", 1.0)],
    )
    assert loras.split_prompt("plain") == ("plain", [])
    for bad in ("<lora:x:abc>", "<lora:x:0.5:0.7>"):
        with pytest.raises(JobFailure):
            loras.split_prompt(bad)


def test_an_embedding_by_name_changes_the_picture_and_is_gone_after(painter: Engine, engine: Engine) -> None:
    pipe = painter.cache.pipeline(painter.catalogue.get("builtin:tiny"), "img2img", [])
    pixels(painter, job())
    vocab, matrix = dict(pipe.tokenizer.get_vocab()), pipe.text_encoder.get_input_embeddings().weight.clone()
    ids = pipe.tokenizer("a test easynegative").input_ids
    request = job(negative_prompt="easynegative, blurry")
    with_embedding = pixels(painter, request)
    without = pixels(engine, request)  # the same words where no such embedding exists
    assert np.abs(with_embedding - without).mean() > 1.0
    assert np.array_equal(pixels(painter, job(negative_prompt="EasyNegative, blurry")), with_embedding)  # any case
    assert dict(pipe.tokenizer.get_vocab()) == vocab and len(pipe.tokenizer) == len(vocab)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, matrix)
    assert pipe.tokenizer("a test easynegative").input_ids == ids
    assert np.array_equal(pixels(painter, job()), pixels(engine, job()))


def test_a_pickled_a1111_embedding_paints_as_its_safetensors_twin(painter: Engine, engine: Engine) -> None:
    pt = pixels(painter, job(negative_prompt="badhands, blurry"))
    assert np.abs(pt - pixels(engine, job(negative_prompt="badhands, blurry"))).mean() > 1.0  # it was used
    assert np.array_equal(pt, pixels(painter, job(negative_prompt="badhandsst, blurry")))  # the same vectors


def test_a_standalone_vae_changes_the_decode_for_its_job_only(painter: Engine, engine: Engine) -> None:
    fresh = pixels(engine, job())
    chosen = pixels(painter, job(vae="VAE/painter-vae"))
    assert np.abs(chosen - fresh).mean() > 1.0
    pipe = painter.cache.pipeline(painter.catalogue.get("builtin:tiny"), "img2img", [])
    assert np.array_equal(pixels(painter, job()), fresh) and pipe.vae is painter.cache._models["builtin:tiny"].base.vae
    with pytest.raises(JobFailure) as caught:
        painter.check(job(vae="Lora/detail"))
    assert caught.value.code == ErrorCode.UNKNOWN_MODEL


def test_sdxl_in_fp16_decodes_with_an_fp16_safe_vae_when_there_is_one(tmp_path: Path) -> None:
    def entry(eid: str, kind: str, arch: str) -> ModelEntry:
        return ModelEntry(eid, kind, arch, tmp_path / eid, "single_file")

    xl, sd = entry("xl", "checkpoint", "sdxl"), entry("sd", "checkpoint", "sd15")
    fixed, other = entry("VAE/sdxl-vae-fp16-fix", "vae", "sd"), entry("VAE/other", "vae", "sd")
    catalogue = Catalogue([xl, sd, fixed, other])
    plain = job(model="xl")
    assert vaes.resolve(plain, catalogue, xl, fp16=True) == fixed
    assert vaes.resolve(plain, catalogue, xl, fp16=False) is None  # fp32 / bf16 do not overflow
    assert vaes.resolve(plain, catalogue, sd, fp16=True) is None
    assert vaes.resolve(dataclasses.replace(plain, vae="VAE/other"), catalogue, xl, fp16=True) == other
    # without one, the checkpoint's own VAE keeps force_upcast: diffusers decodes SDXL in fp32
    assert vaes.resolve(plain, Catalogue([xl, other]), xl, fp16=True) is None


async def _generate(ws: Any, req: Submit) -> np.ndarray:
    await ws.send(encode(req))
    while not isinstance(answer := await recv_message(ws), (Result, JobError)):
        pass
    assert isinstance(answer, Result), answer
    return np.frombuffer(answer.images[0].data, np.uint8).reshape(64, 64, 4).astype(np.int16)


@aio
async def test_a_lora_and_an_embedding_in_an_a1111_layout_generate_through_the_server_offline(
    webui: Path, model_cache: Path, painter: Engine, tmp_path: Path
) -> None:
    hub = tmp_path / "empty-hf-home"
    hub.mkdir()
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hub),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    with backend_process(model_cache, "--models", str(webui), env=env) as (url, _):
        async with connect(url, max_size=None, compression=None) as ws:
            await ws.send(encode(Hello(version=PROTOCOL_VERSION, client="painter", kind="test")))
            welcome = await recv_message(ws)
            assert isinstance(welcome, Welcome)
            kinds = {m.id: m.kind for m in welcome.models}
            assert kinds["Lora/detail"] == "lora" and kinds["embeddings/EasyNegative"] == "embedding"
            plain = await _generate(ws, job())
            styled = job(prompt="a test <lora:detail:0.8>", negative_prompt="easynegative")
            painted = await _generate(ws, styled)
            again = await _generate(ws, job())
    assert np.abs(painted - plain).mean() > 2.0
    assert np.array_equal(again, plain)
    assert np.array_equal(painted, pixels(painter, styled))  # the server runs the same engine code
    assert not any(hub.rglob("*"))
