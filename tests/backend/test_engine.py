"""The diffusion engine on the CPU with the built-in tiny model (real diffusers pipelines, real loading)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import RecordingHooks, pattern_rgba, rect_mask

from sfumato.backend.engine import JobCancelled
from sfumato.backend.errors import JobFailure
from sfumato.protocol import SCHEDULERS, Control, Image, InpaintOptions, Rect, Submit


def req(task: str = "img2img", size: int = 64, **kw: Any) -> Submit:
    kw.setdefault("image", pattern_rgba(size, size))
    kw.setdefault("steps", 6)
    kw.setdefault("strength", 0.5)
    kw.setdefault("prompt", "a watercolour fox")
    return Submit(job_id="t", task=task, model="builtin:tiny", **kw)


def arr(img: Image) -> np.ndarray:
    channels = 1 if img.format == "gray8" else 4
    return np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, channels)


def composite(base: Image, layer: Image, rect: Rect) -> np.ndarray:
    """The editor's side: a normal-blend paste of the result layer at its rectangle."""
    from sfumato.cli.document import composite as paste

    return paste(arr(base).copy(), layer, rect)


# ---------------------------------------------------------------------------- img2img


def test_img2img_restyles_and_reports_steps(engine: Any) -> None:
    hooks = RecordingHooks()
    out = engine.run(req(strength=0.5, steps=10), seed=5, hooks=hooks)
    assert out.rect == Rect(x=0, y=0, w=64, h=64) and out.seeds == [5]
    steps, requested, w, h, seeds = hooks.started_args
    assert (steps, requested, w, h, seeds) == (5, 10, 64, 64, [5])  # int(10 × 0.5) run
    assert hooks.steps[-1] == (5, 5)
    got = arr(out.images[0])
    assert not np.array_equal(got, arr(pattern_rgba(64, 64)))
    assert hooks.previews and hooks.previews[0].format == "rgba8"
    assert max(hooks.previews[0].width, hooks.previews[0].height) <= 256


def test_strength_controls_how_far_the_picture_moves(engine: Any) -> None:
    src = arr(pattern_rgba(64, 64)).astype(int)
    dist = []
    for s in (0.2, 0.5, 1.0):
        got = arr(engine.run(req(strength=s, steps=10), seed=3).images[0]).astype(int)
        dist.append(np.abs(got - src)[..., :3].mean())
    assert dist[0] < dist[1] < dist[2], dist


def test_strength_zero_returns_the_input_unchanged(engine: Any) -> None:
    image = pattern_rgba(64, 64, alpha=None)
    out = engine.run(req(image=image, strength=0.0), seed=1)
    assert out.images[0].data == image.data


def test_transparency_of_the_layer_is_preserved(engine: Any) -> None:
    image = pattern_rgba(64, 64, alpha=None)  # alpha 0 / 128 / 255 bands
    got = arr(engine.run(req(image=image, strength=0.8), seed=2).images[0])
    src = arr(image)
    assert np.array_equal(got[..., 3], src[..., 3])
    clear = src[..., 3] == 0
    assert np.array_equal(got[clear], src[clear])  # invisible pixels are left exactly as they were
    opaque = src[..., 3] == 255
    assert not np.array_equal(got[opaque], src[opaque])


def test_same_request_and_seed_give_identical_bytes(engine: Any) -> None:
    """The promise that is bit-exact: the same request, seed and batch size on the same device."""
    a = engine.run(req(batch_size=2, seed=None), seed=11)
    b = engine.run(req(batch_size=2), seed=11)
    assert [i.data for i in a.images] == [i.data for i in b.images]
    assert a.seeds == [11, 12]
    assert a.images[0].data != a.images[1].data
    assert engine.run(req(), seed=12).images[0].data == engine.run(req(), seed=12).images[0].data


# SPEC.md "Seeds": a batch runs differently shaped tensors, which kernels (AVX-512/AMX CPUs, GPUs) may
# round differently, so image i of a batch is the same *picture* as seed + i alone, within this tolerance.
BATCH_MEAN_TOLERANCE, BATCH_MAX_TOLERANCE = 0.5, 16


def test_batch_image_is_the_same_picture_as_its_seed_alone(engine: Any) -> None:
    batch = engine.run(req(batch_size=3), seed=11)
    alone = [engine.run(req(), seed=11 + i).images[0] for i in range(3)]
    for i in range(3):
        diff = np.abs(arr(batch.images[i]).astype(int) - arr(alone[i]).astype(int))
        assert diff.mean() < BATCH_MEAN_TOLERANCE and diff.max() <= BATCH_MAX_TOLERANCE, (i, diff.mean(), diff.max())
    other_seed = np.abs(arr(alone[0]).astype(int) - arr(alone[1]).astype(int))
    assert other_seed.mean() > 4 * BATCH_MEAN_TOLERANCE, "the tolerance must tell different seeds apart"


def test_output_equals_a_plain_diffusers_call(engine: Any, model_cache: Path) -> None:
    """For a request that needs no resizing, the engine adds nothing to diffusers' pixels."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionImg2ImgPipeline
    from PIL import Image as PILImage

    from sfumato.backend.models.builtin import ensure_builtin

    folder, _ = ensure_builtin(model_cache)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = pattern_rgba(64, 64)
    rgb = PILImage.frombytes("RGBA", (64, 64), image.data).convert("RGB")
    plain = pipe(
        prompt="a watercolour fox",
        negative_prompt="",
        image=rgb,
        strength=0.5,
        num_inference_steps=6,
        guidance_scale=7.0,
        generator=[torch.Generator("cpu").manual_seed(77)],
        output_type="np",
    ).images[0]
    expected = np.clip(np.rint(plain * 255), 0, 255).astype(np.uint8)
    got = arr(engine.run(req(image=image, scheduler="euler_a"), seed=77).images[0])
    assert np.array_equal(got[..., :3], expected)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_runs_as_the_diffusers_scheduler_it_names(
    engine: Any, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sfumato.backend.models.schedulers import SCHEDULERS as TABLE
    from sfumato.backend.tasks import passes

    made: list[Any] = []
    real = passes.make_scheduler
    monkeypatch.setattr(passes, "make_scheduler", lambda *a: made.append(real(*a)) or made[-1])
    out = engine.run(req(scheduler=scheduler, steps=4, strength=0.5), seed=1)
    cls_name, extra = TABLE[scheduler]
    assert [type(m).__name__ for m in made] == [cls_name]
    assert all(made[0].config[k] == v for k, v in extra.items()), made[0].config
    assert not np.array_equal(arr(out.images[0]), arr(pattern_rgba(64, 64)))


def test_schedulers_give_different_pictures(engine: Any) -> None:
    pictures = {s: engine.run(req(scheduler=s, steps=6, strength=1.0), seed=1).images[0].data for s in SCHEDULERS}
    assert len(set(pictures.values())) == len(SCHEDULERS), "each scheduler denoises its own way"


# ---------------------------------------------------------------------------- inpainting


def test_inpaint_leaves_unselected_pixels_bit_identical(engine: Any) -> None:
    image = pattern_rgba(96, 96, seed=4)
    mask = rect_mask(96, 96, 30, 24, 66, 60)
    out = engine.run(req("inpaint", image=image, mask=mask, strength=1.0, steps=6), seed=8)
    assert out.rect == Rect(x=30, y=24, w=36, h=36)  # the selection bounds
    result = composite(image, out.images[0], out.rect)
    src, cov = arr(image), arr(mask)[..., 0]
    assert np.array_equal(result[cov == 0], src[cov == 0])
    assert (np.abs(result[cov == 255].astype(int) - src[cov == 255]).sum(axis=-1) > 0).mean() > 0.5


def test_soft_selection_is_honoured(engine: Any) -> None:
    image = pattern_rgba(64, 64, seed=1)
    cov = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    d = np.hypot(xx - 32, yy - 32)
    cov[:] = np.clip((24 - d) / 12 * 255, 0, 255).astype(np.uint8)  # full inside r=12, fading to 0 at r=24
    mask = Image(width=64, height=64, format="gray8", data=cov.tobytes())
    out = engine.run(req("inpaint", image=image, mask=mask, strength=1.0), seed=2)
    layer = np.zeros((64, 64), np.uint8)
    r = out.rect
    layer[r.y : r.bottom, r.x : r.right] = arr(out.images[0])[..., 3]
    assert np.all(layer[cov == 0] == 0)
    assert np.all(layer <= cov)  # never more opaque than the painter's selection
    assert layer[32, 32] == 255  # the centre is fully repainted
    partial = (cov > 40) & (cov < 200)
    assert 0 < layer[partial].mean() < 255


def test_inpaint_cost_follows_the_selection_via_context(engine: Any) -> None:
    """A small selection on a large image: the model only sees the context around it."""
    image = pattern_rgba(256, 256, seed=2)
    mask = rect_mask(256, 256, 100, 120, 124, 140)
    hooks = RecordingHooks()
    out = engine.run(req("inpaint", image=image, mask=mask, strength=1.0, steps=4), seed=3, hooks=hooks)
    _, _, w, h, _ = hooks.started_args
    assert w * h <= 96 * 96  # generated near the tiny model's native size, not at 256²
    assert out.rect == Rect(x=100, y=120, w=24, h=20)
    result = composite(image, out.images[0], out.rect)
    cov = arr(mask)[..., 0]
    assert np.array_equal(result[cov == 0], arr(image)[cov == 0])


def test_huge_region_gets_a_refine_pass(engine: Any) -> None:
    hooks = RecordingHooks()
    engine.run(req(size=160, strength=0.8, steps=5), seed=1, hooks=hooks)
    steps, _requested, w, h, _ = hooks.started_args
    assert (w, h) == (64, 64)  # first pass at the native size
    assert steps == 4 + 1  # int(5 × 0.8) + int(5 × 0.35) refine steps at full size
    batch = engine.run(req(size=160, strength=0.8, steps=5, batch_size=2), seed=1)
    assert len(batch.images) == 2 and batch.images[0].data != batch.images[1].data
    assert batch.rect == Rect(x=0, y=0, w=160, h=160)


def test_mask_options_and_fill_modes(engine: Any) -> None:
    image = pattern_rgba(64, 64)
    mask = rect_mask(64, 64, 16, 16, 48, 48)
    pictures = {}
    for fill in ("neutral", "blur", "original", "none"):
        out = engine.run(
            req(
                "inpaint",
                image=image,
                mask=mask,
                strength=0.7,  # below 1 the filled pixels are what denoising starts from
                inpaint=InpaintOptions(grow=2, feather=2, blend=0, fill=fill),
            ),
            seed=1,
        )
        alpha = arr(out.images[0])[..., 3]
        assert alpha.min() == 255  # blend 0: a hard selection is pasted whole
        pictures[fill] = out.images[0].data
    assert pictures["none"] == pictures["original"], "none leaves the pixels as they are, like original"
    assert len({pictures["neutral"], pictures["blur"], pictures["original"]}) == 3, "each fill starts elsewhere"


def test_fill_modes_put_what_they_name_into_the_masked_area() -> None:
    from sfumato.backend.imaging.masks import fill

    rgb = np.zeros((32, 32, 3), np.float32)
    rgb[..., 0] = 0.8  # red surroundings
    rgb[12:20, 12:20] = (0.0, 0.0, 1.0)  # a blue square under the mask
    mask = np.zeros((32, 32), np.float32)
    mask[12:20, 12:20] = 1.0
    inside = (slice(12, 20), slice(12, 20))
    assert np.array_equal(fill(rgb, mask, "original"), rgb)
    assert np.allclose(fill(rgb, mask, "neutral")[inside], 0.5)
    assert np.allclose(fill(rgb, mask, "blur")[inside], (0.8, 0.0, 0.0), atol=1e-3), "the surroundings' colour"
    for mode in ("neutral", "blur"):
        outside = fill(rgb, mask, mode)[mask == 0]
        assert np.array_equal(outside, rgb[mask == 0]), f"{mode} changes nothing outside the mask"


# ---------------------------------------------------------------------------- ControlNet


def test_controlnet_with_img2img_and_inpaint_and_several_controls(engine: Any) -> None:
    image = pattern_rgba(64, 64, seed=9)
    canny = Control(type="canny", image=image, strength=1.0, start=0.0, end=0.8)
    ready_map = Control(type="scribble", image=pattern_rgba(64, 64, seed=3), preprocess=False, strength=0.5)
    plain = engine.run(req(image=image, strength=0.7), seed=4).images[0].data
    one = engine.run(req(image=image, strength=0.7, controls=(canny,)), seed=4).images[0].data
    two = engine.run(req(image=image, strength=0.7, controls=(canny, ready_map)), seed=4).images[0].data
    assert len({plain, one, two}) == 3  # each control changes the picture
    mask = rect_mask(64, 64, 8, 8, 40, 40)
    out = engine.run(req("inpaint", image=image, mask=mask, strength=1.0, controls=(canny,)), seed=4)
    cov = arr(mask)[..., 0]
    assert np.array_equal(composite(image, out.images[0], out.rect)[cov == 0], arr(image)[cov == 0])


def test_canny_finds_the_edges_of_a_square() -> None:
    from sfumato.backend.imaging.control import canny

    img = np.zeros((40, 40), np.float32)
    img[10:30, 10:30] = 1.0
    edges = canny(img)
    assert edges[10:30, 9:11].any() and edges[10:30, 29:31].any()
    assert not edges[15:25, 15:25].any() and not edges[:5, :5].any()


def test_canny_keeps_weak_edges_only_where_they_continue_strong_ones() -> None:
    from sfumato.backend.imaging.control import canny

    weak = 30 / 255  # a step of 30 levels: a Sobel gradient (120) between the thresholds, even at corners
    img = np.zeros((64, 64), np.float32)
    img[32:, :32] = 1.0  # a strong edge along row 32, left half ...
    img[32:, 32:] = weak  # ... continued by a weak one, right half (hysteresis keeps it)
    img[5:15, 40:55] = weak  # a weak square on its own (dropped)
    edges = canny(img)
    assert edges[30:35, 40:60].any(axis=0).all()  # the whole weak continuation
    assert not edges[2:18, 37:58].any()


def test_missing_preprocessor_weights_are_named(engine: Any) -> None:
    depth = Control(type="depth", image=pattern_rgba(64, 64))
    with pytest.raises(JobFailure) as err:
        engine.run(req(controls=(depth,)), seed=1)
    assert err.value.code == "missing_weights" and "depth" in err.value.message
    assert "preprocess off" in err.value.message


# ---------------------------------------------------------------------------- cancel and errors


def test_cancel_stops_within_a_step_and_skips_the_decode(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    cache_pipe = engine.cache.pipeline(engine.catalogue.get("builtin:tiny"), "img2img", [])
    original = cache_pipe.vae.decode
    monkeypatch.setattr(cache_pipe.vae, "decode", lambda *a, **k: decoded.append(1) or original(*a, **k))
    hooks = RecordingHooks(cancel_after=2)
    with pytest.raises(JobCancelled):
        engine.run(req(steps=20, strength=1.0), seed=1, hooks=hooks)
    assert len(hooks.steps) == 2
    assert decoded == []


@pytest.mark.parametrize(
    ("kwargs", "code", "field", "words"),
    [
        ({"model": "no-such-model"}, "unknown_model", "submit.model", "unknown model"),
        ({"model": "builtin:tiny-controlnet"}, "unknown_model", "submit.model", "controlnet"),
        ({"scheduler": "lms9"}, "invalid_request", "submit.scheduler", "unknown scheduler"),
        ({"steps": 3, "strength": 0.2}, "invalid_request", "submit.steps", "steps × strength"),
    ],
)
def test_engine_errors_are_clear(engine: Any, kwargs: dict[str, Any], code: str, field: str, words: str) -> None:
    model = kwargs.pop("model", "builtin:tiny")
    base = req(**kwargs)
    bad = Submit(
        **{**{f: getattr(base, f) for f in base.__dataclass_fields__ if f not in ("PATH", "TYPE")}, "model": model}
    )
    with pytest.raises(JobFailure) as err:
        engine.check(bad)
    assert (err.value.code, err.value.field) == (code, field)
    assert words in err.value.message


def test_protocol_level_errors_are_clear() -> None:
    from sfumato.protocol import InvalidMessage

    image = pattern_rgba(64, 64)
    with pytest.raises(InvalidMessage, match=r"mask to match the image size 64×64, got 32×32"):
        req("inpaint", image=image, mask=rect_mask(32, 32, 0, 0, 8, 8))
    with pytest.raises(InvalidMessage, match=r"strength: expected a number in 0.0..1.0, got 1.5"):
        req(strength=1.5)


def test_empty_selection_is_refused(engine: Any) -> None:
    with pytest.raises(JobFailure, match="selection is empty"):
        engine.check(req("inpaint", mask=rect_mask(64, 64, 0, 0, 0, 0)))


def test_linear_light_images_are_seen_and_returned_as_the_painter_sees_them(engine: Any) -> None:
    """A linear float layer is sRGB-encoded for the model and its result decoded back to linear light."""
    from sfumato.backend.imaging.pixels import srgb_decode

    levels = np.random.default_rng(3).integers(0, 256, (64, 64, 4)).astype(np.float32) / 255  # exact 8-bit levels
    levels[..., 3] = 1.0
    linear = levels.copy()
    linear[..., :3] = srgb_decode(levels[..., :3])
    encoded = engine.run(req(image=Image(width=64, height=64, format="rgbaf32", data=levels.tobytes())), seed=5)
    as_linear = engine.run(
        req(image=Image(width=64, height=64, format="rgbaf32", data=linear.astype(np.float32).tobytes(), linear=True)),
        seed=5,
    )

    def floats(img: Image) -> np.ndarray:
        return np.frombuffer(img.data, np.float32).reshape(64, 64, 4)

    assert as_linear.images[0].linear and not encoded.images[0].linear
    want = srgb_decode(floats(encoded.images[0])[..., :3])  # the same picture, in linear light
    assert np.allclose(floats(as_linear.images[0])[..., :3], want, atol=1e-4)
    assert not np.allclose(floats(as_linear.images[0])[..., :3], floats(encoded.images[0])[..., :3], atol=1e-2)
