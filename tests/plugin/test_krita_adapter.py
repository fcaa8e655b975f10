"""The Krita adapter (plugin/krita/document.py) outside Krita: a fake ``krita`` module, the real Qt (PyQt6).

What it proves here, quickly and on every machine: channel order and depth on the way out and back,
linear profiles marked, selections, where previews and results land, refusals. tests/krita runs the
same adapter inside real Kritas.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from sfumato.protocol import Image, PixelFormat, Rect

sys.path.insert(0, str(Path(__file__).parent))
import fake_krita

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


ADAPTER_MODULES = ("krita", "sfumato.plugin.krita.document", "sfumato.plugin.krita.live")


@pytest.fixture
def adapter() -> Iterator[ModuleType]:
    """plugin.krita.document imported against the fake ``krita`` (and removed again afterwards)."""
    saved = {k: sys.modules.pop(k) for k in ADAPTER_MODULES if k in sys.modules}
    sys.modules["krita"] = fake_krita
    fake_krita.Krita._instance = None
    import sfumato.plugin.krita.document as document

    yield document
    for key in ADAPTER_MODULES:
        sys.modules.pop(key, None)
    sys.modules.update(saved)


def open_doc(depth: str = "U8", model: str = "RGBA", size: tuple[int, int] = (8, 6)) -> fake_krita.Document:
    doc = fake_krita.Document(*size, depth=depth, model=model)
    fake_krita.Krita.instance().docs.append(doc)
    return doc


def test_8bit_layers_go_out_as_rgba_and_results_come_back_as_bgra(adapter: Any) -> None:
    doc = open_doc()
    paint = doc.add_layer("Paint")
    paint.setPixelData(bytes((10, 20, 30, 255)) * 48, 0, 0, 8, 6)  # Krita's BGRA
    kd = adapter.KritaDocument(doc)
    image = kd.read_layer(Rect(x=0, y=0, w=8, h=6))
    assert image.format == PixelFormat.RGBA8 and image.data == bytes((30, 20, 10, 255)) * 48 and not image.linear

    result = Image(width=2, height=2, format=PixelFormat.RGBA8, data=bytes((1, 2, 3, 4)) * 4)
    kd.insert_result(result, Rect(x=3, y=2, w=2, h=2), "a fox [seed 1]")
    layer = doc.nodeByName("a fox [seed 1]")
    assert layer is not None and layer.pixelData(3, 2, 2, 2) == bytes((3, 2, 1, 4)) * 4
    assert layer.pixelData(0, 0, 1, 1) == bytes(4)  # nothing outside the result's rectangle
    assert [n.name() for n in doc.topLevelNodes()] == ["Paint", "a fox [seed 1]"]  # right above the active layer
    assert doc.activeNode() is paint and paint.pixelData(3, 2, 1, 1) == bytes((10, 20, 30, 255))


def test_a_read_reaches_past_the_layer_as_transparent(adapter: Any) -> None:
    doc = open_doc()
    doc.add_layer("Paint").setPixelData(bytes((9, 9, 9, 255)) * 48, 0, 0, 8, 6)
    image = adapter.KritaDocument(doc).read_layer(Rect(x=6, y=4, w=4, h=4))
    px = np.frombuffer(image.data, np.uint8).reshape(4, 4, 4)
    assert (px[:2, :2] == (9, 9, 9, 255)).all()
    assert not px[2:, :].any() and not px[:, 2:].any()


def test_16bit_integer_layers_travel_as_rgba16_in_both_directions(adapter: Any) -> None:
    doc = open_doc("U16")
    doc.add_layer("Paint").setPixelData(struct.pack("<4H", 100, 2000, 30000, 65535) * 48, 0, 0, 8, 6)
    kd = adapter.KritaDocument(doc)
    image = kd.read_layer(Rect(x=0, y=0, w=8, h=6))
    assert image.format == PixelFormat.RGBA16
    assert struct.unpack("<4H", image.data[:8]) == (30000, 2000, 100, 65535)  # BGRA → RGBA, 16 bits kept
    kd.insert_result(image, Rect(x=0, y=0, w=8, h=6), "back")
    assert doc.nodeByName("back").pixelData(0, 0, 8, 6) == doc.nodeByName("Paint").pixelData(0, 0, 8, 6)


@pytest.mark.parametrize("depth", ["F16", "F32"])
def test_float_layers_travel_as_linear_rgbaf32_and_come_back_in_their_depth(adapter: Any, depth: str) -> None:
    doc = open_doc(depth)
    values = np.array([0.25, 0.5, 0.75, 1.0], np.float16 if depth == "F16" else np.float32)
    doc.add_layer("Paint").setPixelData(np.tile(values, 48).tobytes(), 0, 0, 8, 6)
    kd = adapter.KritaDocument(doc)
    image = kd.read_layer(Rect(x=0, y=0, w=8, h=6))
    assert image.format == PixelFormat.RGBAF32 and image.linear  # Krita's float default profile is g10
    assert np.array_equal(np.frombuffer(image.data, np.float32)[:4], values.astype(np.float32))
    kd.insert_result(image, Rect(x=0, y=0, w=8, h=6), "back")
    assert doc.nodeByName("back").pixelData(0, 0, 8, 6) == doc.nodeByName("Paint").pixelData(0, 0, 8, 6)


def test_the_selection_gives_bounds_and_coverage(adapter: Any) -> None:
    doc = open_doc()
    doc.add_layer("Paint")
    kd = adapter.KritaDocument(doc)
    assert kd.selection_bounds() is None
    doc.sel = fake_krita.Selection(8, 6)
    assert kd.selection_bounds() is None  # an empty selection is no selection
    doc.sel.setPixelData(bytes((128, 255)), 2, 3, 2, 1)
    assert kd.selection_bounds() == Rect(x=2, y=3, w=2, h=1)
    mask = kd.read_selection(Rect(x=1, y=3, w=4, h=1))
    assert mask.format == PixelFormat.GRAY8 and mask.data == bytes((0, 128, 255, 0))


def test_previews_stay_in_one_locked_layer_that_goes_away(adapter: Any) -> None:
    doc = open_doc()
    paint = doc.add_layer("Paint")
    kd = adapter.KritaDocument(doc)
    preview = Image(width=2, height=2, format=PixelFormat.RGBA8, data=bytes((255, 0, 0, 255)) * 4)
    kd.show_preview(preview, Rect(x=0, y=0, w=4, h=4))  # scaled up by Qt
    kd.show_preview(preview, Rect(x=0, y=0, w=4, h=4))
    names = [n.name() for n in doc.topLevelNodes()]
    assert names == ["Paint", adapter.PREVIEW_LAYER] and doc.activeNode() is paint
    layer = doc.nodeByName(adapter.PREVIEW_LAYER)
    assert layer.is_locked and layer.pixelData(3, 3, 1, 1) == bytes((0, 0, 255, 255))  # red, as BGRA
    kd.clear_preview()
    assert [n.name() for n in doc.topLevelNodes()] == ["Paint"]


def painting_on_paint(adapter: Any) -> tuple[Any, fake_krita.Document, fake_krita.Node, Any]:
    """A document whose active layer is 'Paint', seen by the adapter; the Qt application the guard's timer
    needs comes first (kept by the caller: a collected application stops every timer)."""
    app = _qt_app()
    doc = open_doc()
    paint = doc.add_layer("Paint")
    doc.setActiveNode(paint)
    return app, doc, paint, adapter.KritaDocument(doc)


def test_krita_activating_a_result_late_gives_the_painter_their_layer_back_once(adapter: Any) -> None:
    """Krita 5.1 activates a layer a script added tens of ms later, from its image thread (tests/krita caught it:
    the next Generate restyled the result, or found no active layer). The guard undoes that activation once;
    a later choice is the painter's and ends the watch."""
    from sfumato.plugin.krita.active_layer import WATCHING

    app, doc, paint, kd = painting_on_paint(adapter)
    result = Image(width=2, height=2, format=PixelFormat.RGBA8, data=bytes((1, 2, 3, 255)) * 4)
    kd.insert_result(result, Rect(x=0, y=0, w=2, h=2), "a fox [seed 1]")
    added = doc.nodeByName("a fox [seed 1]")
    guard = kd._guard
    assert doc.activeNode() is paint and guard.timer.isActive() and guard in WATCHING.values()
    guard._check()
    assert doc.activeNode() is paint  # nothing to undo yet
    doc.setActiveNode(added)  # Krita's own activation arrives
    assert kd._painters_active_layer() is paint  # a job starting now still reads the painter's layer
    guard._check()
    assert doc.activeNode() is paint and guard in WATCHING.values()
    doc.setActiveNode(added)  # now the painter picks the result layer: theirs to keep, and the watch ends
    guard._check()
    assert doc.activeNode() is added and not guard.timer.isActive() and guard not in WATCHING.values()
    assert app is not None


def test_a_document_left_without_an_active_layer_gets_the_painters_back_and_the_watch_ends(adapter: Any) -> None:
    from sfumato.plugin.krita.active_layer import WATCHING

    app, doc, paint, kd = painting_on_paint(adapter)
    preview = Image(width=2, height=2, format=PixelFormat.RGBA8, data=bytes((255, 0, 0, 255)) * 4)
    kd.show_preview(preview, Rect(x=0, y=0, w=2, h=2))
    doc.setActiveNode(doc.nodeByName(adapter.PREVIEW_LAYER))  # Krita activates the preview layer
    kd.clear_preview()  # … which then goes: no layer is active
    doc.active = None
    guard = kd._guard
    guard._check()
    assert doc.activeNode() is paint
    guard.until = 0.0  # the watch ends: the timer stops and lets go of the guard
    guard._check()
    assert not guard.timer.isActive() and guard not in WATCHING.values() and app is not None


@pytest.mark.parametrize("model", ["GRAYA", "CMYKA", "LABA"])
def test_other_colour_models_are_refused_with_what_to_do(adapter: Any, model: str) -> None:
    doc = open_doc(model=model)
    doc.add_layer("Paint")
    with pytest.raises(adapter.UnsupportedDocument, match="Convert Image Color Space"):
        adapter.KritaDocument(doc).read_layer(Rect(x=0, y=0, w=2, h=2))


def test_a_closed_document_is_known_to_be_closed(adapter: Any) -> None:
    doc = open_doc()
    kd = adapter.KritaDocument(doc)
    assert kd.is_open() and adapter.active_document().doc is doc
    fake_krita.Krita.instance().docs.remove(doc)
    assert not kd.is_open() and adapter.active_document() is None


def test_expand_grows_the_canvas_and_asks_for_exactly_the_new_border(adapter: Any) -> None:
    from sfumato.plugin.core.expand import Margins, build_expand
    from sfumato.plugin.core.requests import GenerationParams

    doc = open_doc(size=(8, 6))
    doc.add_layer("Paint").setPixelData(bytes((10, 20, 30, 255)) * 48, 0, 0, 8, 6)
    kd = adapter.KritaDocument(doc)
    margins = Margins(left=2, bottom=3)
    kd.grow(margins)
    assert kd.canvas() == Rect(x=0, y=0, w=10, h=9)
    px = np.frombuffer(kd.read_layer(kd.canvas()).data, np.uint8).reshape(9, 10, 4)
    assert (px[:6, 2:] == (30, 20, 10, 255)).all()  # the picture, moved by the left margin
    assert not px[:, :2].any() and not px[6:].any()  # the new border is transparent
    sub = build_expand(kd, margins, GenerationParams(), "e")
    assert sub.mask is not None and sub.context == Rect(x=0, y=0, w=10, h=9)
    cov = np.frombuffer(sub.mask.data, np.uint8).reshape(9, 10)
    assert (cov == np.where(px[..., 3] == 0, 255, 0)).all()  # the mask is the new border, exactly


def test_an_upscale_opens_a_new_document_in_the_source_depth(adapter: Any) -> None:
    doc = open_doc("U16")
    doc.add_layer("Paint")
    enlarged = Image(width=16, height=12, format=PixelFormat.RGBA16, data=struct.pack("<4H", 1, 2, 3, 4) * 192)
    adapter.KritaDocument(doc).open_enlarged(enlarged, "big [seed 3]")
    new = fake_krita.Krita.instance().activeDocument()
    assert new is not doc and (new.width(), new.height(), new.colorDepth()) == (16, 12, "U16")
    assert new.name() == "big [seed 3]" and [n.name() for n in new.topLevelNodes()] == ["big [seed 3]"]
    assert new.topLevelNodes()[0].pixelData(0, 0, 1, 1) == struct.pack("<4H", 3, 2, 1, 4)  # Krita's BGRA
    assert [n.name() for n in doc.topLevelNodes()] == ["Paint"]  # the source document is left as it was


def test_a_reference_row_names_a_layer_that_travels_scaled_down(adapter: Any) -> None:
    """The docker's Reference row (real Qt widgets) and the adapter reading its layer: a 600×400 layer goes
    out as 336×224 RGBA, each pixel the layer's at the centre of its area, in RGBA order."""
    from sfumato.plugin.core.requests import GenerationParams, build_submit
    from sfumato.protocol import ModelInfo

    app = _qt_app()
    saved = sys.modules.pop("sfumato.plugin.krita.reference_row", None)
    try:
        from sfumato.plugin.krita.reference_row import ReferenceRow

        doc = open_doc(size=(600, 400))
        look = doc.add_layer("look")
        rng = np.random.default_rng(1)
        bgra = rng.integers(0, 255, (400, 600, 4), dtype=np.uint8)
        bgra[..., 3] = 255
        look.setPixelData(bgra.tobytes(), 0, 0, 600, 400)
        doc.add_layer("Paint")
        removed: list[Any] = []
        row = ReferenceRow(removed.append)
        assert [row.layer.itemText(i) for i in range(row.layer.count())] == ["", "look", "Paint"]
        row.layer.setCurrentText("look")
        row.mode.setCurrentText("composition")
        row.weight.setValue(0.5)
        adapters = [ModelInfo(id="ipadapter/a", kind="ipadapter", arch="sd15", label="a")]
        row.offer(adapters)
        assert [row.adapter.itemData(i) for i in range(row.adapter.count())] == [None, "ipadapter/a"]
        row.adapter.setCurrentIndex(1)
        row.offer(adapters)  # a refresh keeps the choice
        spec = row.spec()
        assert (spec.layer, spec.mode, spec.weight, spec.adapter) == ("look", "composition", 0.5, "ipadapter/a")
        (ref,) = build_submit(adapter.KritaDocument(doc), GenerationParams(references=(spec,)), "j").references
        assert (ref.image.width, ref.image.height, ref.image.format) == (336, 224, "rgba8")
        got = np.frombuffer(ref.image.data, np.uint8).reshape(224, 336, 4)
        ys = (2 * np.arange(224) + 1) * 400 // (2 * 224)
        xs = (2 * np.arange(336) + 1) * 600 // (2 * 336)
        assert np.array_equal(got, bgra[ys][:, xs][..., [2, 1, 0, 3]])
        row.deleteLater()
    finally:
        sys.modules.pop("sfumato.plugin.krita.reference_row", None)
        if saved is not None:
            sys.modules["sfumato.plugin.krita.reference_row"] = saved
    assert app is not None


def _qt_app() -> Any:
    from PyQt6 import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


class LiveClient:
    """What live painting needs of the client: the catalogue it was welcomed with, and where submits go."""

    def __init__(self) -> None:
        from sfumato.plugin.core.jobs import JobTracker

        self.tracker = JobTracker()
        self.welcome = None
        self.sent: list[Any] = []

    async def submit(self, submit: Any, document: object = None) -> Any:
        self.sent.append(submit)
        return self.tracker.add(submit, document)

    async def cancel(self, job_id: str) -> None:
        self.sent.append(("cancel", job_id))


def test_live_paints_each_change_of_the_layer_but_not_its_own_preview_and_apply_makes_one_layer(adapter: Any) -> None:
    import asyncio

    from PyQt6.QtGui import QGuiApplication

    from sfumato.plugin.core.controller import Controller
    from sfumato.plugin.core.requests import GenerationParams
    from sfumato.plugin.krita import live
    from sfumato.protocol import Result

    app = QGuiApplication.instance() or QGuiApplication([])  # QTimer needs one
    doc = open_doc(size=(64, 64))
    paint = doc.add_layer("Paint")
    paint.setPixelData(bytes((90, 60, 30, 255)) * 64 * 64, 0, 0, 64, 64)
    client = LiveClient()
    controller = Controller(client, asyncio.run, job_prefix="k")  # type: ignore[arg-type]
    errors: list[str] = []
    params = GenerationParams(prompt="fox", seed=5)
    kl = live.KritaLive(controller, adapter.KritaDocument(doc), lambda: params, errors.append, 0.0)
    assert kl.timer.isActive()
    kl.timer.stop()  # the test ticks by hand; a due live job is sent in a turn of Qt's loop of its own

    def tick() -> None:
        kl.poll()
        app.processEvents()

    tick()
    assert [s.live for s in client.sent] == [True]  # Live on paints the canvas as it is at once
    tick()
    assert len(client.sent) == 1  # nothing changed: nothing sent
    paint.setPixelData(bytes((0, 0, 255, 255)) * 9, 30, 30, 3, 3)  # a small red stroke
    tick()
    assert len(client.sent) == 2 and client.sent[1].image.data != client.sent[0].image.data
    job = client.tracker.jobs[client.sent[1].job_id]
    picture = Image(width=64, height=64, format=PixelFormat.RGBA8, data=bytes((200, 100, 50, 255)) * 64 * 64)
    controller.handle(Result(job_id=job.id, images=(picture,), rect=Rect(x=0, y=0, w=64, h=64), seeds=(5,)), job)
    preview = doc.nodeByName(adapter.PREVIEW_LAYER)
    assert preview is not None and preview.pixelData(0, 0, 1, 1) == bytes((50, 100, 200, 255))  # shown, as BGRA
    tick()
    assert len(client.sent) == 2  # the live picture in the preview layer is no change of the painter's layer
    doc.active = preview  # as Krita may do with a layer just added
    paint.setPixelData(bytes((0, 255, 0, 255)) * 9, 10, 10, 3, 3)  # the painter paints on
    tick()
    assert doc.activeNode() is paint  # the painter's layer is active again
    assert len(client.sent) == 3 and client.sent[2].image == adapter.KritaDocument(doc).read_layer(
        Rect(x=0, y=0, w=64, h=64)
    )
    assert kl.apply() == "fox [seed 5]"
    assert [n.name() for n in doc.topLevelNodes()] == ["Paint", "fox [seed 5]"] and doc.activeNode() is paint
    assert doc.nodeByName("fox [seed 5]").pixelData(0, 0, 1, 1) == bytes((50, 100, 200, 255))
    tick()
    assert len(client.sent) == 3 and kl.apply() is None  # applied once; the new layer is no change either
    fake_krita.Krita.instance().docs.remove(doc)
    kl.poll()  # its document closed: live painting stops by itself
    assert not kl.painting.on and not kl.timer.isActive() and not errors
    assert kl.slowest_tick_s > 0
