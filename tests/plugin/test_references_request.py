"""Reference layers in a request: read from the document, scaled down to what the encoder sees, before they travel."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portable"))
from core_checks import ListDocument

from sfumato.plugin.core.references import ReferenceSpec, shrink
from sfumato.plugin.core.requests import GenerationParams, build_submit
from sfumato.plugin.core.upscale import build_upscale
from sfumato.protocol import Image, Rect, reference_size


def gradient(w: int, h: int) -> Image:
    """Red counts columns, green rows (mod 256): where a sampled pixel came from can be read back."""
    row = lambda y: bytes(c for x in range(w) for c in (x % 256, y % 256, 7, 255))  # noqa: E731
    return Image(width=w, height=h, format="rgba8", data=b"".join(row(y) for y in range(h)))


class LayeredDocument(ListDocument):
    """A 64×64 document whose other layers have sizes of their own (as a reference layer may be large)."""

    def __init__(self, layers: dict[str, Image]) -> None:
        super().__init__(None)
        self.named = layers
        self.asked: list[str | None] = []

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        self.asked.append(layer)
        return self.named[layer] if layer is not None else super().read_layer(rect)


def test_a_4k_layer_travels_with_its_shorter_side_at_224() -> None:
    big = gradient(4096, 3000)
    doc = LayeredDocument({"look": big})
    params = GenerationParams(references=(ReferenceSpec(layer="look", weight=0.6, mode="composition", adapter="a"),))
    (ref,) = build_submit(doc, params, "j").references
    assert (ref.image.width, ref.image.height) == (306, 224) == reference_size(4096, 3000)
    assert (ref.weight, ref.mode, ref.adapter, ref.image.format) == (0.6, "composition", "a", "rgba8")
    assert len(ref.image.data) == 306 * 224 * 4  # not the 49 MB of the layer
    px = lambda img, x, y: img.data[(y * img.width + x) * 4 : (y * img.width + x) * 4 + 4]  # noqa: E731
    # each pixel is the layer's pixel at the centre of the area it stands for
    for x, y in ((0, 0), (150, 100), (305, 223)):
        sx, sy = (2 * x + 1) * 4096 // (2 * 306), (2 * y + 1) * 3000 // (2 * 224)
        assert px(ref.image, x, y) == px(big, sx, sy) == bytes((sx % 256, sy % 256, 7, 255))
    assert doc.asked == [None, "look"]  # the job's own layer, then the reference's


def test_a_small_layer_is_not_enlarged_and_the_active_layer_is_the_default() -> None:
    doc = LayeredDocument({})
    (ref,) = build_submit(doc, GenerationParams(references=(ReferenceSpec(),)), "j").references
    assert (ref.image.width, ref.image.height, ref.mode, ref.adapter) == (64, 64, "style", None)
    assert ref.image.data == doc.pixels
    assert reference_size(200, 5000) == (41, 1024)  # a long strip: at most 1024 long


def test_deep_layers_are_shrunk_then_made_rgba8() -> None:
    w, h = 500, 300
    floats = Image(
        width=w,
        height=h,
        format="rgbaf32",
        data=b"".join(struct.pack("<4f", x / w, 0.5, 1.0, 1.0) for _ in range(h) for x in range(w)),
    )
    small = shrink(floats, *reference_size(w, h))
    assert (small.width, small.height, small.format) == (373, 224, "rgbaf32")
    doc = LayeredDocument({"deep": floats})
    (ref,) = build_submit(doc, GenerationParams(references=(ReferenceSpec(layer="deep"),)), "j").references
    assert ref.image.format == "rgba8" and (ref.image.width, ref.image.height) == (373, 224)
    assert ref.image.data[:4] == bytes((round(0 / w * 255), 128, 255, 255))


def test_an_upscale_sends_no_references() -> None:
    doc = LayeredDocument({})
    doc.open_enlarged = lambda image, name: None  # type: ignore[attr-defined]
    params = GenerationParams(references=(ReferenceSpec(),))
    assert build_upscale(doc, params, 2).references == ()  # type: ignore[arg-type]
