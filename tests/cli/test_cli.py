"""The headless `sfumato` CLI: same client core as the Krita plugin, embedded or remote backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from sfumato.cli.main import main


@pytest.fixture()
def files(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SFUMATO_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("SFUMATO_DEVICE", "cpu")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user config.toml
    rng = np.random.default_rng(0)
    img = np.zeros((80, 96, 4), np.uint8)
    img[..., :3] = rng.integers(0, 255, (80, 96, 3))
    img[..., 3] = 255
    PILImage.fromarray(img).save(tmp_path / "in.png")
    mask = np.zeros((80, 96), np.uint8)
    mask[20:50, 30:70] = 255
    PILImage.fromarray(mask).save(tmp_path / "mask.png")
    PILImage.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small-mask.png")
    return tmp_path


def load(path: Path) -> np.ndarray:
    return np.asarray(PILImage.open(path).convert("RGBA"))


def test_restyle_writes_the_input_with_the_result(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "img2img",
            str(files / "in.png"),
            "-o",
            str(files / "out.png"),
            "--prompt",
            "oil paint",
            "--strength",
            "0.5",
            "--steps",
            "6",
            "--seed",
            "4",
        ]
    )
    assert rc == 0
    out, src = load(files / "out.png"), load(files / "in.png")
    assert out.shape == src.shape and not np.array_equal(out, src)
    assert "seed 4" in capsys.readouterr().out


def test_inpaint_with_mask_keeps_everything_else(files: Path) -> None:
    rc = main(
        [
            "img2img",
            str(files / "in.png"),
            "-o",
            str(files / "out.png"),
            "--mask",
            str(files / "mask.png"),
            "--steps",
            "4",
            "--seed",
            "1",
            "--control",
            "canny",
            "--quiet",
        ]
    )
    assert rc == 0
    out, src = load(files / "out.png"), load(files / "in.png")
    mask = np.asarray(PILImage.open(files / "mask.png"))
    assert np.array_equal(out[mask == 0], src[mask == 0])
    assert not np.array_equal(out[mask == 255], src[mask == 255])
    rc = main(
        [
            "img2img",
            str(files / "in.png"),
            "-o",
            str(files / "layer.png"),
            "--mask",
            str(files / "mask.png"),
            "--steps",
            "4",
            "--seed",
            "1",
            "--layer-only",
            "--quiet",
        ]
    )
    layer = load(files / "layer.png")
    assert rc == 0 and np.all(layer[mask == 0][..., 3] == 0) and layer[35, 50, 3] == 255


def test_batch_writes_numbered_files(files: Path) -> None:
    rc = main(
        [
            "img2img",
            str(files / "in.png"),
            "-o",
            str(files / "b.png"),
            "--batch",
            "2",
            "--steps",
            "4",
            "--quiet",
            "--seed",
            "9",
        ]
    )
    assert rc == 0 and (files / "b-1.png").exists() and (files / "b-2.png").exists()
    assert not np.array_equal(load(files / "b-1.png"), load(files / "b-2.png"))


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--model", "nope"], 1, "unknown model 'nope'"),
        (["--mask", "small-mask.png"], 2, "the mask is 10×10 but the input is 96×80"),
        (["--strength", "3"], 2, "strength: expected a number in 0.0..1.0, got 3.0"),
        (["--server", "ws://127.0.0.1:9"], 3, "cannot reach the backend"),
    ],
)
def test_errors_exit_non_zero_with_a_clear_message(
    files: Path, capsys: pytest.CaptureFixture[str], extra: list[str], code: int, words: str
) -> None:
    extra = [str(files / e) if e.endswith(".png") else e for e in extra]
    rc = main(["img2img", str(files / "in.png"), "-o", str(files / "x.png"), "--quiet", *extra])
    assert rc == code
    assert words in capsys.readouterr().err
    assert not (files / "x.png").exists()


def test_console_script_against_a_running_backend(files: Path, backend_url: str) -> None:
    exe = Path(sys.executable).with_name("sfumato")
    res = subprocess.run(
        [
            str(exe),
            "img2img",
            str(files / "in.png"),
            "-o",
            str(files / "r.png"),
            "--server",
            backend_url,
            "--steps",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "step 2/2" in res.stderr  # the progress bar
    assert load(files / "r.png").shape == (80, 96, 4)
    res = subprocess.run([str(exe), "models", "--server", backend_url], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "builtin:tiny" in res.stdout


def test_models_lists_usable_and_unusable(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (files / "models").mkdir()
    (files / "models" / "old.ckpt").write_bytes(b"pickle")
    assert main(["models", "--models", str(files / "models")]) == 0
    out = capsys.readouterr().out
    assert "builtin:tiny" in out and "test model" in out
    assert "unusable:" in out and "old" in out and "never unpickles" in out
