"""plugin.core's Expand: the request built for given margins on an already grown canvas."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portable"))
from core_checks import ListDocument

from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.expand import Margins, build_expand
from sfumato.plugin.core.requests import GenerationParams
from sfumato.protocol import Rect


def mask_rows(data: bytes, w: int) -> list[bytes]:
    return [data[i : i + w] for i in range(0, len(data), w)]


def test_one_side_sends_the_strip_and_its_context_only() -> None:
    doc = ListDocument(Rect(x=10, y=10, w=4, h=4))  # a selection does not change what Expand fills
    sub = build_expand(doc, Margins.on(["right"], 16), GenerationParams(prompt="sea", strength=1.0), "e")
    assert sub.task == "inpaint" and sub.result == Rect(x=48, y=0, w=16, h=64)
    assert sub.context is not None and sub.context.contains(sub.result) and sub.context.x < 48  # sees the picture
    assert doc.reads == [sub.context]  # the layer is read over the context only
    assert (sub.origin.x, sub.origin.y) == (sub.context.x, sub.context.y)
    assert sub.mask is not None
    inside = 48 - sub.context.x
    for row in mask_rows(sub.mask.data, sub.context.w):
        assert row == b"\0" * inside + b"\xff" * 16  # exactly the new strip


def test_two_sides_cover_an_l_shaped_border() -> None:
    sub = build_expand(ListDocument(None), Margins(left=8, bottom=16), GenerationParams(), "e")
    assert sub.result == Rect(x=0, y=0, w=64, h=64) and sub.context == Rect(x=0, y=0, w=64, h=64)
    assert sub.mask is not None
    rows = mask_rows(sub.mask.data, 64)
    assert all(row == b"\xff" * 8 + b"\0" * 56 for row in rows[:48])
    assert all(row == b"\xff" * 64 for row in rows[48:])


def test_margins_from_sides_and_the_grown_canvas() -> None:
    m = Margins.on(["left", "top"], 32)
    assert m == Margins(left=32, top=32) and m.grown(Rect(x=0, y=0, w=100, h=50)) == Rect(x=-32, y=-32, w=132, h=82)
    with pytest.raises(ValueError, match="unknown side"):
        Margins.on(["up"], 8)
    with pytest.raises(ValueError, match="choose a margin"):
        build_expand(ListDocument(None), Margins(), GenerationParams())
    with pytest.raises(ValueError, match="larger than the canvas"):
        build_expand(ListDocument(None), Margins(left=40, right=40), GenerationParams())


class GrowingDocument(ListDocument):
    """Records each canvas growth (the 64×64 canvas stands for the grown one)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.growths: list[Margins] = []

    def grow(self, margins: Margins) -> None:
        self.growths.append(margins)


def test_the_controller_grows_the_canvas_once_then_sends_the_fill() -> None:
    sent: list[Any] = []
    controller = Controller(SimpleNamespace(submit=lambda submit, doc: submit), sent.append)  # type: ignore[arg-type]
    doc = GrowingDocument()
    with pytest.raises(ValueError, match="choose a margin"):
        controller.expand(doc, GenerationParams(), Margins())
    assert doc.growths == [] and sent == []  # refused before the canvas changes
    submit = controller.expand(doc, GenerationParams(), Margins.on(["right"], 16))
    assert doc.growths == [Margins(right=16)] and sent == [submit]
    assert submit.task == "inpaint" and submit.result == Rect(x=48, y=0, w=16, h=64)
