"""A Krita document seen through plugin.core's ``DocumentLike``: pixels out, previews and results in."""

from __future__ import annotations

from typing import Any

from krita import Krita, Selection

from sfumato.plugin.core.pixels import swap_red_blue_8
from sfumato.protocol import Image, PixelFormat, Rect

from .qt import QtCore, QtGui

PREVIEW_LAYER = "Sfumato preview"


class UnsupportedDocument(Exception):
    """The document's colour space is not one Sfumato handles yet; the message says what to do."""


def check_supported(doc: Any) -> None:
    model, depth = doc.colorModel(), doc.colorDepth()
    if model != "RGBA" or depth != "U8":
        raise UnsupportedDocument(
            f"Sfumato works on 8-bit RGBA documents for now; this one is {model} {depth}. Use Image > "
            "Convert Image Color Space… > RGB/Alpha, 8-bit integer/channel, generate, then convert back."
        )


class KritaDocument:
    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self._preview: Any = None
        self._title = doc.name() or doc.fileName() or "Untitled"

    # ------------------------------------------------------------------ reading

    def is_open(self) -> bool:
        return any(d == self.doc for d in Krita.instance().documents())

    def title(self) -> str:
        return self._title

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=self.doc.width(), h=self.doc.height())

    def selection_bounds(self) -> Rect | None:
        sel = self.doc.selection()
        if sel is None or sel.width() <= 0 or sel.height() <= 0:
            return None
        return Rect(x=sel.x(), y=sel.y(), w=sel.width(), h=sel.height())

    def _node(self, layer: str | None) -> Any:
        node = self.doc.nodeByName(layer) if layer else self.doc.activeNode()
        if node is None:
            raise UnsupportedDocument(f"there is no layer named {layer!r}" if layer else "select a layer first")
        return node

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        check_supported(self.doc)
        node = self._node(layer)
        if node.colorModel() != "RGBA" or node.colorDepth() != "U8":
            raise UnsupportedDocument(
                f"layer '{node.name()}' is {node.colorModel()} {node.colorDepth()}; use an 8-bit RGBA paint layer"
            )
        data = bytes(node.pixelData(rect.x, rect.y, rect.w, rect.h))
        return Image(width=rect.w, height=rect.h, format=PixelFormat.RGBA8, data=swap_red_blue_8(data))

    def read_selection(self, rect: Rect) -> Image:
        sel = self.doc.selection()
        data = bytes(sel.pixelData(rect.x, rect.y, rect.w, rect.h))
        return Image(width=rect.w, height=rect.h, format=PixelFormat.GRAY8, data=data)

    # ------------------------------------------------------------------ writing

    def _insert_above_active(self, node: Any) -> None:
        active = self.doc.activeNode()
        parent = active.parentNode() if active is not None and active.parentNode() is not None else self.doc.rootNode()
        parent.addChildNode(node, active if active is not None and active.parentNode() is not None else None)

    def show_preview(self, image: Image, rect: Rect) -> None:
        bgra = _scaled_bgra(image, rect.w, rect.h)
        if self._preview is None or self.doc.nodeByName(PREVIEW_LAYER) is None:
            active = self.doc.activeNode()
            self._preview = self.doc.createNode(PREVIEW_LAYER, "paintlayer")
            self._preview.setPixelData(bgra, rect.x, rect.y, rect.w, rect.h)
            self._preview.setLocked(True)  # locked before it appears: adding it may run Qt events
            self._insert_above_active(self._preview)
            if active is not None:
                self.doc.setActiveNode(active)  # painting continues on the painter's layer
        else:
            self._preview.setLocked(False)
            self._preview.setPixelData(bgra, rect.x, rect.y, rect.w, rect.h)
        self._preview.setLocked(True)
        self.doc.refreshProjection()

    def clear_preview(self) -> None:
        node = self.doc.nodeByName(PREVIEW_LAYER)
        if node is not None:
            node.setLocked(False)
            node.remove()
        self._preview = None
        self.doc.refreshProjection()

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        active = self.doc.activeNode()
        node = self.doc.createNode(name, "paintlayer")
        node.setPixelData(swap_red_blue_8(image.data), rect.x, rect.y, rect.w, rect.h)  # before adding: one undo step
        self._insert_above_active(node)
        if active is not None:
            self.doc.setActiveNode(active)
        self.doc.refreshProjection()


def _scaled_bgra(image: Image, w: int, h: int) -> bytes:
    """Scale an RGBA8 preview to w×h with Qt and return Krita's BGRA bytes."""
    qimg = QtGui.QImage(image.data, image.width, image.height, image.width * 4, QtGui.QImage.Format.Format_RGBA8888)
    scaled = qimg.scaled(
        w, h, QtCore.Qt.AspectRatioMode.IgnoreAspectRatio, QtCore.Qt.TransformationMode.SmoothTransformation
    )
    argb = scaled.convertToFormat(QtGui.QImage.Format.Format_ARGB32)  # BGRA in memory on little-endian machines
    ptr = argb.constBits()
    ptr.setsize(argb.sizeInBytes() if hasattr(argb, "sizeInBytes") else argb.byteCount())
    raw = bytes(ptr)
    stride = argb.bytesPerLine()
    return raw if stride == w * 4 else b"".join(raw[y * stride : y * stride + w * 4] for y in range(h))


def active_document() -> KritaDocument | None:
    doc = Krita.instance().activeDocument()
    return KritaDocument(doc) if doc is not None else None


__all__ = ["PREVIEW_LAYER", "KritaDocument", "Selection", "UnsupportedDocument", "active_document"]
