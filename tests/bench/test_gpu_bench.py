"""bench/gpu.py tells the truth: full size means the released shapes, and rates count the steps that ran.

The GPU run itself needs a GPU; here the same script runs with ``--tiny`` on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_size_means_the_released_architectures() -> None:
    bench = _bench()
    sd15, sdxl = bench.full_configs("sd15"), bench.full_configs("sdxl")
    assert list(sd15["unet"]["block_out_channels"]) == [320, 640, 1280, 1280] and sd15["size"] == 512
    assert sd15["unet"]["cross_attention_dim"] == 768 and sd15["text"]["num_hidden_layers"] == 12
    assert list(sdxl["unet"]["transformer_layers_per_block"]) == [1, 2, 10] and sdxl["size"] == 1024
    assert sdxl["text2"]["hidden_size"] == 1280 and sdxl["text2"]["num_hidden_layers"] == 32


def test_tiny_run_reports_the_steps_that_ran_and_separate_unet_rates(tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    res = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--archs", "sd15", "--repeats", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {r["task"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["img2img"]["steps_run"] == 20 and rows["img2img@0.6"]["steps_run"] == 12  # 20 requested
    for task in ("img2img", "img2img@0.6", "inpaint", "img2img+canny"):
        row = rows[task]
        assert abs(row["e2e_steps_per_s"] - row["steps_run"] / row["seconds_per_image"]) < 0.05 * row["e2e_steps_per_s"]
    assert rows["unet"]["unet_it_per_s"] > 0 and rows["engine-vs-bare"]["ratio"] > 0
    for mode in ("medium", "low"):  # the offloaded placements run the same job
        assert rows[f"img2img memory={mode}"]["seconds_per_image"] > 0
