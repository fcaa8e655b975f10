"""Expand the canvas (outpaint) in the engine: transparent canvas under the mask is filled, the rest stays."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import pattern_rgba, rect_mask

from sfumato.backend.tasks import inpaint
from sfumato.backend.tasks.job import Models
from sfumato.protocol import Image, Submit

W, H, PAD = 96, 64, 16  # a 64×64 picture with 16 px of new, transparent canvas left and right


def padded(picture: np.ndarray) -> Image:
    """The picture on a canvas grown by PAD on the left and the right (transparent there)."""
    canvas = np.zeros((H, W, 4), np.uint8)
    canvas[:, PAD : W - PAD] = picture
    return Image(width=W, height=H, format="rgba8", data=canvas.tobytes())


def border() -> Image:
    inner = np.frombuffer(rect_mask(W, H, PAD, 0, W - PAD, H).data, np.uint8)
    return Image(width=W, height=H, format="gray8", data=(255 - inner).tobytes())


def arr(img: Image) -> np.ndarray:
    return np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, 4)


def expand_request(image: Image, **kw: Any) -> Submit:
    kw.setdefault("strength", 1.0)
    return Submit(job_id="x", task="inpaint", model="builtin:tiny", image=image, mask=border(), steps=4, **kw)


def test_a_transparent_border_is_filled_and_the_picture_stays_bit_identical(engine: Any) -> None:
    from sfumato.cli.document import composite

    picture = arr(pattern_rgba(64, 64, seed=3))
    image = padded(picture)
    out = engine.run(expand_request(image), seed=5)
    assert out.rect.w == W and out.rect.h == H  # the border's bounds: both sides
    layer = arr(out.images[0])
    assert (layer[:, :PAD, 3] == 255).all() and (layer[:, W - PAD :, 3] == 255).all()  # covers the new canvas
    assert (layer[:, PAD : W - PAD, 3] == 0).all()  # and nothing of the picture
    result = composite(arr(image).copy(), out.images[0], out.rect)
    assert (result[..., 3] == 255).all(), "the grown canvas is opaque everywhere"
    assert np.array_equal(result[:, PAD : W - PAD], picture)  # the picture, bit for bit
    assert len({tuple(p) for p in result[:, :PAD, :3].reshape(-1, 3)}) > 16  # painted, not a flat colour


def test_transparent_canvas_under_the_mask_reads_as_its_surroundings(engine: Any) -> None:
    red = np.zeros((64, 64, 4), np.uint8)
    red[..., 0], red[..., 3] = 200, 255
    req = expand_request(padded(red), strength=0.5)
    entry = engine.catalogue.get("builtin:tiny")
    job = inpaint.prepare(req, Models(entry, [], engine.addons(req, entry)), 1)
    cx = job.context.x
    left = job.rgb[:, : PAD - cx] if cx < PAD else job.rgb[:, :0]
    assert left.size and np.allclose(left, [200 / 255, 0, 0], atol=1e-3)  # the picture's colour, not grey
    assert (job.alpha[:, : PAD - cx] == 1).all()  # covered fully, no seam ramp into nothing


def test_transparency_outside_the_mask_is_left_alone(engine: Any) -> None:
    from sfumato.cli.document import composite

    image = pattern_rgba(64, 64, alpha=None)  # x < 16 transparent, then half, then opaque
    mask = rect_mask(64, 64, 8, 8, 56, 56)  # over transparent, half and opaque pixels
    req = Submit(job_id="y", task="inpaint", model="builtin:tiny", image=image, mask=mask, steps=4, strength=1.0)
    out = engine.run(req, seed=2)
    result = composite(arr(image).copy(), out.images[0], out.rect)
    selected = np.frombuffer(mask.data, np.uint8).reshape(64, 64) > 0
    assert np.array_equal(result[~selected], arr(image)[~selected])  # transparent columns outside stay transparent
    assert (result[8:56, 8:16, 3] == 255).all()  # the transparent part of the selection is filled
