"""Upscale with tiled refine (backend/tasks/upscale.py, backend/imaging/tiles.py), on the CPU with the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import RecordingHooks, aio, connected_client, running_server

from sfumato.backend.errors import JobFailure
from sfumato.backend.imaging import pixels, tiles
from sfumato.backend.models.catalogue import Catalogue
from sfumato.backend.tasks import passes
from sfumato.backend.tasks.job import JobCancelled
from sfumato.protocol import Image, JobError, PreviewSettings, Result, Submit, UpscaleOptions

W, H = 80, 48  # ×2: 160×96, tiles of 64 px overlapping by 16 → 3×2 tiles in two batches (4 + 2)
TILE, OVERLAP = 64, 16


def gradient(w: int = W, h: int = H) -> Image:
    """A smooth picture: red grows left to right, green top to bottom, blue along the diagonal."""
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    rgba = np.stack([x, y, (x + y) / 2, np.ones_like(x)], axis=-1)
    return Image(width=w, height=h, format="rgba8", data=np.rint(rgba * 255).astype(np.uint8).tobytes())


def request(strength: float = 0.3, **options: Any) -> Submit:
    options.setdefault("factor", 2)
    options.setdefault("tile", TILE)
    options.setdefault("overlap", OVERLAP)
    return Submit(
        job_id="up",
        task="upscale",
        model="builtin:tiny",
        image=gradient(),
        prompt="a test",
        strength=strength,
        steps=10,
        seed=7,
        upscale=UpscaleOptions(**options),
        preview=PreviewSettings(max_per_second=30.0),
    )


def rgb(image: Image) -> np.ndarray:
    return pixels.native_array(image)[..., :3].astype(np.float64)


def seam(picture: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Mean colour step (0–255) across the lines where a tile starts or ends, and across every other line."""
    xs = {t.x for t in tiles.grid(width, height, TILE, OVERLAP)} | {
        t.x + t.w for t in tiles.grid(width, height, TILE, OVERLAP)
    }
    ys = {t.y for t in tiles.grid(width, height, TILE, OVERLAP)} | {
        t.y + t.h for t in tiles.grid(width, height, TILE, OVERLAP)
    }
    dx = np.abs(np.diff(picture, axis=1)).mean(axis=(0, 2))  # dx[i]: the step between columns i and i + 1
    dy = np.abs(np.diff(picture, axis=0)).mean(axis=(1, 2))
    border = [dx[x - 1] for x in xs if 0 < x < width] + [dy[y - 1] for y in ys if 0 < y < height]
    others = [d for i, d in enumerate(dx) if i + 1 not in xs] + [d for i, d in enumerate(dy) if i + 1 not in ys]
    return float(np.mean(border)), float(np.mean(others))


# ---------------------------------------------------------------------------- tiles


def test_tiles_cover_the_picture_and_blending_equal_tiles_gives_them_back() -> None:
    for w, h in ((160, 96), (64, 64), (50, 200), (257, 129)):
        grid = tiles.grid(w, h, TILE, OVERLAP)
        covered = np.zeros((h, w), int)
        for t in grid:
            covered[t.slices] += 1
            assert t.x + t.w <= w and t.y + t.h <= h
        assert covered.min() >= 1
        picture = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
        blend = tiles.Blender(w, h, 3, OVERLAP)
        for t in grid:
            blend.add(t, picture[t.slices])
        np.testing.assert_allclose(blend.result(), picture, atol=1e-6)


# ---------------------------------------------------------------------------- the seam


def test_the_add_ons_are_applied_once_for_every_tile_batch(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRAs, embeddings, VAE and references go onto the pipeline once per job, not once per batch of tiles."""
    from sfumato.backend.models import addons

    entered: list[str] = []
    passes_run: list[int] = []
    real_applied, real_pass = addons.applied, passes.run_pass

    def counting(pipe: Any, entry: Any, chosen: Any, cache: Any) -> Any:
        entered.append(entry.id)
        return real_applied(pipe, entry, chosen, cache)

    def counted_pass(*args: Any) -> Any:
        passes_run.append(1)
        return real_pass(*args)

    monkeypatch.setattr(addons, "applied", counting)
    monkeypatch.setattr(passes, "run_pass", counted_pass)
    engine.run(request(0.3), 7)
    assert len(passes_run) == 2 and entered == ["builtin:tiny"]  # two batches of tiles, the add-ons applied once


def test_no_seam_with_a_model_that_returns_its_input(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tile goes through the refine, unchanged: cut, placed and blended back, the gradient has no seam."""
    calls: list[int] = []

    def identity(rt: Any, job: Any, inputs: Any, sources: list[np.ndarray], *args: Any) -> list[np.ndarray]:
        calls.append(len(sources))
        return [s.copy() for s in sources]

    monkeypatch.setattr(passes, "run_pass", identity)
    out = engine.run(request(0.3), 7)
    assert calls == [4, 2]  # 6 tiles, batched
    picture = rgb(out.images[0])
    lanczos = np.rint(pixels.lanczos(pixels.to_float(gradient())[..., :3], 2 * W, 2 * H) * 255)
    assert np.abs(picture - lanczos).max() <= 1  # blending equal tiles gives the picture back
    border, others = seam(picture, 2 * W, 2 * H)
    print(f"identity refine: step across tile borders {border:.3f}, across other lines {others:.3f} (of 255)")
    assert border <= others


def test_strength_zero_is_the_lanczos_enlargement(engine: Any) -> None:
    out = engine.run(request(0.0), 7)
    assert out.images[0].size == (2 * W, 2 * H) and out.rect.w == 2 * W
    expected = pixels.from_float(pixels.lanczos(pixels.to_float(gradient()), 2 * W, 2 * H), "rgba8")
    assert np.array_equal(pixels.native_array(out.images[0]), expected)
    border, others = seam(rgb(out.images[0]), 2 * W, 2 * H)
    assert border <= others


def test_tiles_that_drift_apart_are_feathered_into_each_other(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refine that shifts each tile's colour by its own amount (how tiled refines fail): the blend spreads
    the difference over the overlap, so the step across a tile border is a fraction of a hard cut's."""
    shifts = iter(np.linspace(-0.1, 0.1, 12))

    def drifting(rt: Any, job: Any, inputs: Any, sources: list[np.ndarray], *args: Any) -> list[np.ndarray]:
        return [np.clip(s + next(shifts), 0, 1) for s in sources]

    monkeypatch.setattr(passes, "run_pass", drifting)
    border, _ = seam(rgb(engine.run(request(0.3), 7).images[0]), 2 * W, 2 * H)
    shifts = iter(np.linspace(-0.1, 0.1, 12))
    hard, _ = seam(rgb(engine.run(request(0.3, overlap=0), 7).images[0]), 2 * W, 2 * H)
    print(f"drifting tiles: step across borders {border:.2f} blended, {hard:.2f} cut without overlap (of 255)")
    assert border * 3 <= hard


def test_the_tiny_model_at_low_strength_leaves_no_seam_out_of_its_noise(engine: Any) -> None:
    """The tiny model paints noise (random weights) at any strength, so a seam cannot be told from its
    picture; what is asserted: the tile borders are no rougher than the roughest tenth of the other lines."""
    picture = rgb(engine.run(request(0.2), 7).images[0])
    border, others = seam(picture, 2 * W, 2 * H)
    lines = np.concatenate([np.abs(np.diff(picture, axis=a)).mean(axis=(1 - a, 2)) for a in (0, 1)])
    print(f"tiny model, strength 0.2: step across tile borders {border:.2f}, across other lines {others:.2f} (of 255)")
    assert border <= np.percentile(lines, 90)


# ---------------------------------------------------------------------------- progress, previews, cancel


def test_one_progress_over_all_tiles_with_previews_of_the_tile(engine: Any) -> None:
    hooks = RecordingHooks()
    engine.run(request(0.3), 7, hooks)
    assert hooks.started_total == 2 * 3  # int(10 × 0.3) steps per batch, two batches
    steps = [s for s, _ in hooks.steps]
    assert steps == sorted(steps) and steps[-1] == hooks.started_total
    assert {t for _, t in hooks.steps} == {hooks.started_total}
    assert hooks.previews and all(p.size == (TILE, TILE) for p in hooks.previews)  # one tile, not the picture


def test_cancel_between_tiles_stops_early(engine: Any) -> None:
    hooks = RecordingHooks(cancel_after=3)  # the first batch's last step
    with pytest.raises(JobCancelled):
        engine.run(request(0.3), 7, hooks)
    assert [s for s, _ in hooks.steps] == [1, 2, 3]


# ---------------------------------------------------------------------------- upscaler models


def tiny_upscaler(folder: Path, name: str = "tiny-compact-x2") -> Path:
    """A Real-ESRGAN Compact ×2 (the smallest architecture spandrel detects: 4 features, one inner conv)
    saved as A1111 keeps upscalers. Its convolutions are zero, so it returns its input enlarged by
    nearest-neighbour (Compact adds that to what it learned): a known answer to test against."""
    import torch
    from safetensors.torch import save_file

    feat, scale = 4, 2
    weights = {
        "body.0.weight": torch.zeros(feat, 3, 3, 3),
        "body.0.bias": torch.zeros(feat),
        "body.1.weight": torch.full((feat,), 0.25),  # PReLU
        "body.2.weight": torch.zeros(feat, feat, 3, 3),
        "body.2.bias": torch.zeros(feat),
        "body.3.weight": torch.full((feat,), 0.25),
        "body.4.weight": torch.zeros(3 * scale * scale, feat, 3, 3),
        "body.4.bias": torch.zeros(3 * scale * scale),
    }
    path = folder / "ESRGAN" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path))
    return path


def spandrel_importable() -> bool:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        return False
    return True


def test_an_upscaler_in_the_model_folders_is_found_for_1_5_editors(tmp_path: Path, model_cache: Path) -> None:
    tiny_upscaler(tmp_path / "models")
    (tmp_path / "models" / "upscale_models").mkdir()
    (tmp_path / "models" / "upscale_models" / "odd.safetensors").write_bytes(b"\x02\0\0\0\0\0\0\0{}")
    catalogue = Catalogue.scan([tmp_path / "models"], model_cache)
    found = {e.id: (e.kind, e.arch) for e in catalogue.all() if e.kind == "upscaler"}
    assert found == {"ESRGAN/tiny-compact-x2": ("upscaler", "compact"), "upscale_models/odd": ("upscaler", "unknown")}


@pytest.mark.skipif(not spandrel_importable(), reason="spandrel cannot be imported here (it needs torchvision)")
def test_a_spandrel_upscaler_is_loaded_and_upscales(tmp_path: Path, model_cache: Path) -> None:
    from sfumato.backend.engine import Engine

    tiny_upscaler(tmp_path / "models")
    engine = Engine(Catalogue.scan([tmp_path / "models"], model_cache), device="cpu")
    out = engine.run(request(0.0, upscaler="ESRGAN/tiny-compact-x2"), 7)
    nearest = pixels.native_array(gradient()).repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(pixels.native_array(out.images[0])[..., :3], nearest[..., :3])


@pytest.mark.skipif(spandrel_importable(), reason="spandrel imports here: the test above loads an upscaler")
def test_without_spandrel_an_upscaler_is_a_typed_refusal(tmp_path: Path, model_cache: Path) -> None:
    from sfumato.backend.engine import Engine

    tiny_upscaler(tmp_path / "models")
    engine = Engine(Catalogue.scan([tmp_path / "models"], model_cache), device="cpu")
    with pytest.raises(JobFailure, match="needs spandrel") as caught:
        engine.run(request(0.0, upscaler="ESRGAN/tiny-compact-x2"), 7)
    assert caught.value.field == "submit.upscale.upscaler"


def test_a_tile_controlnet_in_the_catalogue_holds_each_tile(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny ControlNet, catalogued as a tile ControlNet of the tiny model's family: every batch runs
    the ControlNet pipeline with one control image per tile, each that tile's own picture."""
    from sfumato.backend.engine import Engine
    from sfumato.backend.models.builtin import ensure_builtin
    from sfumato.backend.models.catalogue import ModelEntry
    from sfumato.backend.tasks import upscale

    _, tiny_cn = ensure_builtin(model_cache)
    tile_cn = ModelEntry("ControlNet/tiny-tile", "controlnet", "sd15-tiny", tiny_cn, "diffusers", control_type="tile")
    engine = Engine(Catalogue([*Catalogue.scan([], model_cache).all(), tile_cn]), device="cpu")
    seen: list[tuple[int, int]] = []
    real_inputs = upscale.inputs

    def watched(job: Any, width: int, height: int) -> dict[str, Any]:
        args = real_inputs(job, width, height)
        seen.append((len(args["control_image"]), len(job.control_maps)))
        assert np.array_equal(job.control_maps[0], job.rgb)  # the first tile's map is its own picture
        return args

    monkeypatch.setattr(upscale, "inputs", watched)
    out = engine.run(request(0.3), 7)
    assert seen == [(4, 4), (2, 2)] and out.images[0].size == (2 * W, 2 * H)
    # the refine ran on the ControlNet pipeline derived for the tile ControlNet (a plain img2img one
    # would take control_image too, and ignore it)
    assert ("img2img+control", ("ControlNet/tiny-tile",)) in engine.cache._models["builtin:tiny"].derived


# ---------------------------------------------------------------------------- refusals


def test_refusals_before_queueing(engine: Any) -> None:
    with pytest.raises(JobFailure, match="unknown model") as caught:
        engine.check(request(upscaler="ESRGAN/none"))
    assert caught.value.field == "submit.upscale.upscaler"
    with pytest.raises(JobFailure, match="batch_size"):
        engine.check(Submit(**{**request().__dict__, "batch_size": 2}))


@aio
async def test_through_the_server_an_upscale_returns_the_enlarged_image_and_a_too_large_one_is_refused(
    engine: Any,
) -> None:
    async with running_server(engine, max_pixels=4 * W * H) as server, connected_client(server.url) as (client, rec):
        await client.submit(request(0.3))
        result = await rec.wait_for(Result, "up", timeout=120)
        assert (result.rect.w, result.rect.h) == (2 * W, 2 * H) and result.images[0].size == (2 * W, 2 * H)
        too_large = Submit(**{**request(0.3).__dict__, "job_id": "up4", "upscale": UpscaleOptions(factor=4)})
        await client.submit(too_large)
        refused = await rec.wait_for(JobError, "up4")
        assert refused.field == "submit.upscale.factor" and "max_pixels" in refused.message
