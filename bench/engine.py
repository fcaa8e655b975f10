"""The engine's own cost, with the built-in tiny model; ratios against baselines measured in the same run.

(a) inpaint cost follows the selection, not the canvas: a 128² selection on a 2048² canvas vs the same
    selection on a 256² canvas, through the editor path (request built from the document, engine,
    compositing)                                                        goal ≤ 1.2×
(b) the engine's pre/post-processing vs the bare diffusers call it makes (same inputs, same steps)
                                                                        goal ≤ 1.05×
(c) the Canny control map of a 2048² layer with one long weak edge (hysteresis follows it across the
    image; 18.8 s with the hand-written loop this replaced) vs taking the same layer as a ready map
                                                                        goal ≤ 3×

    python bench/engine.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import pattern_rgba

from sfumato.cli.document import ImageDocument, composite
from sfumato.plugin.core.requests import GenerationParams, build_submit
from sfumato.protocol import Submit


def canvas(size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(size)
    px = np.empty((size, size, 4), np.uint8)
    px[..., :3] = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    px[..., 3] = 255
    mask = np.zeros((size, size), np.uint8)
    c = size // 2
    mask[c - 64 : c + 64, c - 64 : c + 64] = 255
    return px, mask


def editor_inpaint(engine: Any, px: np.ndarray, mask: np.ndarray) -> float:
    t = time.perf_counter()
    doc = ImageDocument(px, mask)
    sub = build_submit(doc, GenerationParams(prompt="a fox", strength=1.0, steps=8, seed=1), "b")
    out = engine.run(sub, 1)
    composite(px, out.images[0], out.rect)
    return time.perf_counter() - t


def main(repeats: int) -> None:
    import torch
    from PIL import Image as PILImage

    from sfumato.backend.engine import Engine
    from sfumato.backend.models.catalogue import Catalogue
    from sfumato.backend.models.schedulers import make_scheduler

    engine = Engine(Catalogue.scan([], Path(tempfile.gettempdir()) / "sfumato-bench-cache"), device="auto")
    big, small = canvas(2048), canvas(256)
    editor_inpaint(engine, *small)  # warm-up
    t_big, t_small = [], []
    for _ in range(repeats):
        t_big.append(editor_inpaint(engine, *big))
        t_small.append(editor_inpaint(engine, *small))
    b, s = statistics.median(t_big), statistics.median(t_small)
    print(f"device {engine.device_label()}; median of {repeats}")
    print(
        f"(a) 128² selection inpaint: on 2048² {b * 1000:.0f} ms, on 256² {s * 1000:.0f} ms → {b / s:.3f}×  goal ≤ 1.2×"
    )

    image = pattern_rgba(64, 64)
    req = Submit(
        job_id="b",
        task="img2img",
        model="builtin:tiny",
        image=image,
        prompt="a fox",
        strength=1.0,
        steps=12,
        scheduler="euler_a",
    )
    pipe = engine.cache.pipeline(engine.catalogue.get("builtin:tiny"), "img2img", [])
    rgb = PILImage.frombytes("RGBA", (64, 64), image.data).convert("RGB")

    def bare() -> float:
        t = time.perf_counter()
        pipe.scheduler = make_scheduler("euler_a", pipe.scheduler.config)
        pipe(
            prompt="a fox",
            negative_prompt="",
            image=rgb,
            strength=1.0,
            num_inference_steps=12,
            guidance_scale=7.0,
            generator=[torch.Generator("cpu").manual_seed(1)],
            output_type="np",
        )
        return time.perf_counter() - t

    def through_engine() -> float:
        t = time.perf_counter()
        engine.run(req, 1)
        return time.perf_counter() - t

    bare(), through_engine()
    pairs = [(through_engine(), bare()) for _ in range(repeats * 2)]
    ratio = statistics.median(e / b for e, b in pairs)
    e_med, b_med = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    print(
        f"(b) img2img 64² × 12 steps: engine {e_med * 1000:.1f} ms, bare pipeline {b_med * 1000:.1f} ms "
        f"→ median pair ratio {ratio:.3f}×  goal ≤ 1.05×"
    )

    canny_vs_ready_map(repeats)


def canny_vs_ready_map(repeats: int) -> None:
    from sfumato.backend.imaging.control import control_map

    size = 2048
    rgba = np.ones((size, size, 4), np.float32)
    rgba[..., :3] = 0.0
    rgba[size // 2 :, :, :3] = 1.0  # a strong edge across the middle, and a weak one winding down
    weak = 30 / 255
    for y in range(0, size // 2):
        rgba[y, : size // 4 + (y % 512), :3] = weak

    def timed(preprocess: bool) -> float:
        t = time.perf_counter()
        control_map("canny", rgba, preprocess, "controls[0]")
        return time.perf_counter() - t

    timed(True), timed(False)
    pairs = [(timed(True), timed(False)) for _ in range(repeats)]
    c, r = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    print(f"(c) 2048² control map: Canny {c * 1000:.0f} ms, ready map {r * 1000:.0f} ms → {c / r:.2f}×  goal ≤ 3×")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    main(p.parse_args().repeats)
