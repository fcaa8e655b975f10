"""The headless `sfumato` CLI: same client core as the Krita plugin, embedded or remote backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import backend_process

from sfumato.backend.config import Config
from sfumato.cli import main as cli_main
from sfumato.cli.main import main
from sfumato.protocol.limits import HARD_MAX_PIXELS


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


def test_expand_grows_the_canvas_and_keeps_the_picture_bit_identical(files: Path) -> None:
    args = ["expand", str(files / "in.png"), "-o", str(files / "out.png"), "--margin", "16", "--sides", "left,top"]
    assert main([*args, "--steps", "4", "--seed", "1", "--quiet"]) == 0
    out, src = load(files / "out.png"), load(files / "in.png")
    assert out.shape == (80 + 16, 96 + 16, 4)
    assert np.array_equal(out[16:, 16:], src)  # the picture, bit for bit, moved by the margins
    assert (out[..., 3] == 255).all()  # the new border is filled, opaque
    assert main([*args[:4], "--margin", "8", "--sides", "up"]) == 2  # a usage error, before any job


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
    old = next(line for line in out.splitlines() if "old " in line)
    assert old.split()[1:4] == ["unusable", "unknown", "6"] and " B " in old  # kind, architecture, size on disk
    tiny = next(line for line in out.splitlines() if line.split()[0] == "builtin:tiny")
    assert tiny.split()[1:3] == ["checkpoint", "sd15-tiny"] and ("KB" in tiny or "MB" in tiny)


def _no_backend(*args: object) -> NoReturn:
    raise AssertionError("the embedded backend was started")


@pytest.mark.parametrize(
    ("output", "extra", "words"),
    [
        ("missing/dir/out.png", [], "the output folder {files}/missing/dir does not exist"),
        ("in.png/out.png", [], "the output folder {files}/in.png is not a folder"),
        ("outdir", [], "the output {files}/outdir is a folder; name a file in it, e.g. {files}/outdir/out.png"),
        # checked before the backend is even reached (this one is not there: it would be exit code 3)
        ("missing/out.png", ["--server", "ws://127.0.0.1:9"], "the output folder {files}/missing does not exist"),
    ],
)
def test_an_impossible_output_is_refused_before_any_job(
    files: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    output: str,
    extra: list[str],
    words: str,
) -> None:
    monkeypatch.setattr(cli_main, "_embedded_backend", _no_backend)
    (files / "outdir").mkdir()
    argv = ["img2img", str(files / "in.png"), "-o", str(files / output), "--steps", "2", "--quiet", *extra]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"sfumato: {words.format(files=files)}\n"
    assert sorted(p.name for p in (files / "outdir").iterdir()) == []
    assert not (files / "missing").exists()


def test_a_read_only_output_folder_is_refused_before_any_job(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_main, "_embedded_backend", _no_backend)
    ro = files / "ro"
    ro.mkdir(mode=0o555)
    as_root = os.geteuid() == 0  # root ignores permission bits, but not the immutable flag
    if as_root:
        subprocess.run(["chattr", "+i", str(ro)], check=True)
    try:
        assert main(["img2img", str(files / "in.png"), "-o", str(ro / "out.png"), "--quiet"]) == 2
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
    assert capsys.readouterr().err == f"sfumato: the output folder {ro} is not writable\n"


def _image_args(files: Path, which: str, image: Path) -> tuple[list[str], str]:
    """img2img arguments with ``image`` as the input, the mask or a control map; and what the CLI calls it."""
    if which == "input":
        return [str(image)], "input image"
    if which == "mask":
        return [str(files / "in.png"), "--mask", str(image)], "mask"
    return [str(files / "in.png"), "--control", f"depth={image}"], "control image"


@pytest.mark.parametrize("which", ["input", "mask", "control"])
def test_a_decompression_bomb_is_a_one_line_error(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    # Pillow refuses images over twice MAX_IMAGE_PIXELS with DecompressionBombError (by default from
    # 179 M pixels); its limit is lowered here so that a 200×200 file is such a bomb.
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10_000)
    monkeypatch.setattr(cli_main, "_embedded_backend", _no_backend)
    PILImage.new("L", (200, 200)).save(files / "bomb.png")
    args, what = _image_args(files, which, files / "bomb.png")
    assert main(["img2img", *args, "-o", str(files / "x.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sfumato: {what} {files / 'bomb.png'} is too large to open: ")
    assert "(40000 pixels) exceeds limit of 20000 pixels" in err and err.count("\n") == 1
    assert not (files / "x.png").exists()


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 17 KB PNG of 12000×12000 pixels: 549 MiB once decoded as RGBA."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    PILImage.new("1", (12000, 12000)).save(path)
    assert path.stat().st_size < 64 << 10
    return path


# Runs a command and prints its peak resident memory (KiB on Linux). A fresh, small wrapper: a child's
# ru_maxrss starts from the RSS of the process that spawned it, which for pytest can be hundreds of MiB.
_PEAK_RSS = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("which", ["input", "mask", "control"])
def test_a_huge_image_is_refused_from_its_header_without_decoding(files: Path, huge_png: Path, which: str) -> None:
    args, what = _image_args(files, which, huge_png)
    exe = str(Path(sys.executable).with_name("sfumato"))
    res = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, exe, "img2img", *args, "-o", str(files / "x.png"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    peak_mib = int(res.stdout.split()[-1]) / 1024
    assert peak_mib < 256, f"peak memory {peak_mib:.0f} MiB: the image was decoded"  # decoded: ≥ 549 MiB
    # Without a mask the whole image is sent: the backend's max_pixels; with one, the canvas ceiling.
    limit, why = (
        (HARD_MAX_PIXELS, "the largest canvas the CLI inpaints")
        if which == "mask"
        else (Config().max_pixels, "the largest image the backend accepts")
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [  # one line: no traceback, no DecompressionBombWarning either
        f"sfumato: {what} {huge_png} is 12000×12000 = 144000000 pixels, over the limit of {limit} pixels ({why})"
    ]
    assert not (files / "x.png").exists()


def test_the_embedded_backends_configured_limit_is_checked_before_it_starts(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SFUMATO_MAX_PIXELS", "4000")  # the backend's own setting (config.toml or environment)
    monkeypatch.setattr(cli_main, "_embedded_backend", _no_backend)
    assert main(["img2img", str(files / "in.png"), "-o", str(files / "x.png"), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"sfumato: input image {files / 'in.png'} is 96×80 = 7680 pixels, over the limit of 4000 pixels"
        " (the largest image the backend accepts)\n"
    )


@pytest.fixture(scope="module")
def small_backend_url(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A backend in its own process that accepts images of at most 4000 pixels."""
    config = {"XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("config"))}
    with backend_process(model_cache, "--max-pixels", "4000", env=config) as (url, _):
        yield url


def test_a_remote_backends_announced_limit_is_checked(
    files: Path, capsys: pytest.CaptureFixture[str], small_backend_url: str
) -> None:
    argv = ["img2img", str(files / "in.png"), "-o", str(files / "x.png"), "--server", small_backend_url, "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"sfumato: input image {files / 'in.png'} is 96×80 = 7680 pixels, over the limit of 4000 pixels"
        f" (the largest image the backend at {small_backend_url} accepts)\n"
    )
    assert not (files / "x.png").exists()


def test_upscale_writes_the_enlarged_picture_to_a_new_file(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["upscale", str(files / "in.png"), "-o", str(files / "big.png"), "--factor", "2", "--tile", "64"]
    assert main([*args, "--strength", "0.3", "--steps", "6", "--seed", "3"]) == 0
    big = load(files / "big.png")
    assert big.shape == (160, 192, 4) and "160" in capsys.readouterr().out
    assert main([*args, "--strength", "0"]) == 0  # no refine: the Lanczos enlargement alone
    lanczos = PILImage.open(files / "in.png").convert("RGB").resize((192, 160), PILImage.Resampling.LANCZOS)
    diff = np.abs(load(files / "big.png")[..., :3].astype(int) - np.asarray(lanczos, dtype=int))
    assert diff.mean() < 1.0  # float resampling per channel vs Pillow's 8-bit one


def test_upscale_refuses_an_unknown_upscaler_and_a_result_over_the_limit(
    files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["upscale", str(files / "in.png"), "-o", str(files / "big.png"), "--upscaler", "ESRGAN/none"]) == 1
    assert "unknown model 'ESRGAN/none'" in capsys.readouterr().err
    monkeypatch.setenv("SFUMATO_MAX_PIXELS", str(96 * 80 * 4))  # ×2 fits exactly, ×4 does not
    assert main(["upscale", str(files / "in.png"), "-o", str(files / "big.png"), "--factor", "4"]) == 2
    assert "max_pixels" in capsys.readouterr().err and not (files / "big.png").exists()


def test_a_lora_and_a_vae_chosen_by_flag_change_the_picture(
    files: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from addon_files import kohya_lora, original_vae
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from sfumato.backend.models.builtin import ensure_builtin

    tiny, _ = ensure_builtin(model_cache)
    models = files / "models"
    kohya_lora(
        models / "Lora" / "detail.safetensors",
        UNet2DConditionModel.from_pretrained(tiny / "unet"),
        CLIPTextModel.from_pretrained(tiny / "text_encoder"),
    )
    original_vae(models / "VAE" / "painter-vae.safetensors", AutoencoderKL.from_pretrained(tiny / "vae"))
    monkeypatch.setenv("SFUMATO_MODEL_DIRS", str(models))
    base = ["img2img", str(files / "in.png"), "--strength", "0.6", "--steps", "4", "--seed", "2", "--quiet"]
    outputs = {}
    for name, extra in {
        "plain": [],
        "lora": ["--lora", "Lora/detail:1.0"],
        "vae": ["--vae", "VAE/painter-vae"],
        "lora twice": ["--lora", "Lora/detail:0.3", "--lora", "Lora/detail:1.0"],  # one LoRA, the last weight
    }.items():
        assert main([*base, "-o", str(files / f"{name}.png"), *extra]) == 0, name
        outputs[name] = load(files / f"{name}.png").astype(int)
    assert np.abs(outputs["lora"] - outputs["plain"]).mean() > 1.0
    assert np.abs(outputs["vae"] - outputs["plain"]).mean() > 1.0
    assert np.array_equal(outputs["lora twice"], outputs["lora"])
    capsys.readouterr()
    assert main([*base, "-o", str(files / "x.png"), "--lora", "Lora/nope"]) != 0
    assert "Lora/nope" in capsys.readouterr().err


# ---------------------------------------------------------------------------- live


def test_live_repaints_each_change_of_the_file_and_writes_the_newest_result(files: Path, model_cache: Path) -> None:
    """A painter saving the file again and again: each change sends a live job superseding the last;
    OUT ends as an ordinary restyle of the last version of the file (same seed, the fast preset)."""
    import queue
    import signal
    import threading

    from sfumato.plugin.core.live import fast_preset

    source, out = files / "in.png", files / "live.png"
    canvas = load(source).copy()
    with backend_process(model_cache) as (url, _):
        exe = str(Path(sys.executable).with_name("sfumato"))
        args = [exe, "live", str(source), "-o", str(out), "--server", url, "--seed", "7", "--strength", "0.75"]
        args += ["--debounce", "0.05", "--prompt", "live"]
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []

        def next_line(prefix: str) -> str:
            while not (line := lines.get(timeout=120)).startswith(prefix):
                pass
            return line

        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            reader = threading.Thread(target=lambda: [(lines.put(x), seen.append(x)) for x in proc.stdout or ()])
            reader.start()
            try:
                next_line("sent ")  # the file as it was at the start
                for i in range(5):  # five saves, each once the previous one was sent
                    canvas[10:40, 10:40, :3] = (40 * i, 200 - 30 * i, 90)
                    PILImage.fromarray(canvas).save(files / "next.png")
                    os.replace(files / "next.png", source)
                    job = next_line("sent ").split()[1]
                next_line(f"wrote {out} (job {job},")
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
                reader.join(30)
        summary = next_line("live: ")
        counts = re.fullmatch(
            r"live: (\d+) sent, (\d+) superseded, (\d+) stopped at a change, (\d+) finished\n?", summary
        )
        assert counts is not None, summary
        sent, superseded, stopped, finished = (int(n) for n in counts.groups())
        assert proc.returncode == 0, "".join(seen)
        assert sent == 6 and superseded + stopped + finished == 6 and finished >= 1
        preset = fast_preset("builtin:tiny", [])
        ref = ["img2img", str(source), "-o", str(files / "ref.png"), "--server", url, "--quiet", "--seed", "7"]
        ref += ["--strength", "0.75", "--prompt", "live", "--steps", str(preset.steps), "--cfg", str(preset.guidance)]
        assert main([*ref, "--scheduler", preset.scheduler]) == 0
    assert np.array_equal(load(out), load(files / "ref.png"))  # the last version of the file, bit for bit
    assert not np.array_equal(load(out), load(source))  # and repainted, not copied
