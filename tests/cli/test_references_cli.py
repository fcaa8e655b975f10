"""`sfumato img2img --reference FILE[:WEIGHT[:MODE]]`: reference images through the CLI's embedded backend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from addon_files import clip_vision, ip_adapter

from sfumato.backend.models.builtin import ensure_builtin
from sfumato.cli.main import main, parse_reference


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    from diffusers import UNet2DConditionModel

    tiny, _ = ensure_builtin(model_cache)
    models = tmp_path_factory.mktemp("comfy") / "models"
    clip_vision(models / "clip_vision" / "tiny-vit.safetensors")
    ip_adapter(
        models / "ipadapter" / "ip-adapter_sd15.safetensors", UNet2DConditionModel.from_pretrained(tiny / "unet"), 16
    )
    return models


@pytest.fixture()
def files(tmp_path: Path, model_cache: Path, comfy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SFUMATO_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("SFUMATO_DEVICE", "cpu")
    monkeypatch.setenv("SFUMATO_MODEL_DIRS", str(comfy))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user config.toml
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    PILImage.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(tmp_path / "look.png")
    PILImage.fromarray(rng.integers(0, 255, (90, 90, 3), dtype=np.uint8)).save(tmp_path / "other.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    PILImage.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


def run(files: Path, out: str, *extra: str) -> np.ndarray:
    args = ["img2img", str(files / "in.png"), "-o", str(files / out), "--steps", "4", "--seed", "3", "--quiet"]
    assert main([*args, *extra]) == 0
    return np.asarray(PILImage.open(files / out).convert("RGBA")).astype(np.int16)


def test_parse_reference() -> None:
    assert parse_reference("a.png") == (Path("a.png"), 1.0, "style")
    assert parse_reference("a.png:0.4") == (Path("a.png"), 0.4, "style")
    assert parse_reference("a.png:0.4:composition") == (Path("a.png"), 0.4, "composition")
    assert parse_reference("c:/refs/a.png:full") == (Path("c:/refs/a.png"), 1.0, "full")
    assert parse_reference("x:y.png") == (Path("x:y.png"), 1.0, "style")


def test_a_reference_file_changes_the_restyle_and_weight_0_does_not(files: Path) -> None:
    plain = run(files, "plain.png")
    styled = run(files, "styled.png", "--reference", f"{files / 'look.png'}:1.0:full")
    assert np.abs(styled - plain).mean() > 0.5
    assert np.array_equal(run(files, "zero.png", "--reference", f"{files / 'look.png'}:0"), plain)
    both = run(
        files,
        "both.png",
        "--reference",
        f"{files / 'look.png'}:1.0:full",
        "--reference",
        f"{files / 'other.png'}:0.8:style",
        "--adapter",
        "ipadapter/ip-adapter_sd15",
    )
    assert not np.array_equal(both, styled) and not np.array_equal(both, plain)


def test_an_inpaint_takes_references_too(files: Path) -> None:
    plain = run(files, "plain.png", "--mask", str(files / "mask.png"))
    styled = run(files, "styled.png", "--mask", str(files / "mask.png"), "--reference", str(files / "look.png"))
    outside = np.asarray(PILImage.open(files / "mask.png")) == 0
    assert np.array_equal(styled[outside], plain[outside])  # the outside is the input, bit for bit
    assert np.abs(styled - plain)[~outside].mean() > 0.5


def test_bad_references_are_usage_errors(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["img2img", str(files / "in.png"), "-o", str(files / "o.png"), "--quiet"]
    assert main([*base, "--reference", str(files / "missing.png")]) == 2
    assert "cannot read reference image" in capsys.readouterr().err
    assert main([*base, "--reference", f"{files / 'look.png'}:3"]) == 2
    assert "weight" in capsys.readouterr().err
    assert main([*base, "--reference", str(files / "look.png"), "--adapter", "ipadapter/nope"]) == 1
    assert "unknown model 'ipadapter/nope'" in capsys.readouterr().err


def test_models_lists_adapters_and_encoders(files: Path, comfy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--models", str(comfy)]) == 0
    out = capsys.readouterr().out
    assert "ipadapter/ip-adapter_sd15" in out and "ipadapter" in out
    assert "clip_vision/tiny-vit" in out and "clip_vision" in out
