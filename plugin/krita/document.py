"""A Krita document seen through plugin.core's ``DocumentLike``: pixels out, previews and results in."""

from __future__ import annotations

from typing import Any

from krita import Krita, Selection

from sfumato.plugin.core.editor import PREVIEW_LAYER
from sfumato.plugin.core.expand import Margins
from sfumato.plugin.core.pixels import (
    float_to_half,
    half_to_float,
    rgba8_to_16,
    rgba8_to_float,
    swap_red_blue_8,
    swap_red_blue_16,
)
from sfumato.protocol import Image, PixelFormat, Rect

from .active_layer import ActiveLayerGuard, guard_for, in_document
from .qt import QtCore, QtGui


class UnsupportedDocument(Exception):
    """The document's colour space is not one Sfumato handles yet; the message says what to do."""


# Krita's channel depth → how its pixels travel (integer layers are BGRA in Krita, float layers RGBA).
WIRE_FORMAT = {
    "U8": PixelFormat.RGBA8,
    "U16": PixelFormat.RGBA16,
    "F16": PixelFormat.RGBAF32,
    "F32": PixelFormat.RGBAF32,
}


def check_supported(node: Any, what: str) -> None:
    model, depth = node.colorModel(), node.colorDepth()
    if model != "RGBA" or depth not in WIRE_FORMAT:
        raise UnsupportedDocument(
            f"Sfumato paints on RGB/Alpha {what}s (8- or 16-bit integer, 16- or 32-bit float); this {what} is "
            f"{model} {depth}. Use Image > Convert Image Color Space… > RGB/Alpha, generate, then convert back."
        )


def is_linear(node: Any) -> bool:
    """Krita's float documents default to linear-light profiles (sRGB-elle-V2-g10.icc, scRGB, …)."""
    profile = (node.colorProfile() or "").lower()
    return "g10" in profile or "linear" in profile or "scrgb" in profile


def to_krita(image: Image, depth: str) -> bytes:
    """Wire pixels (the request's own format) → ``setPixelData`` bytes for a layer of ``depth``."""
    if depth == "U8":
        return swap_red_blue_8(image.data)
    if depth == "U16":
        return swap_red_blue_16(image.data)
    return float_to_half(image.data) if depth == "F16" else image.data


def preview_to_krita(bgra8: bytes, depth: str, linear: bool) -> bytes:
    """An 8-bit BGRA preview → ``setPixelData`` bytes for a layer of ``depth`` (float layers are RGBA)."""
    if depth == "U8":
        return bgra8
    if depth == "U16":
        return rgba8_to_16(bgra8)
    rgba = rgba8_to_float(swap_red_blue_8(bgra8), linear)
    return float_to_half(rgba) if depth == "F16" else rgba


class KritaDocument:
    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.source: Any = None  # the layer to read instead of the active one (live painting's layer)
        self._preview: Any = None
        self._painter_layer: Any = None  # the layer that was active when the preview layer appeared
        self._title = doc.name() or doc.fileName() or "Untitled"

    # ------------------------------------------------------------------ reading

    def is_open(self) -> bool:
        return any(d == self.doc for d in Krita.instance().documents())

    def title(self) -> str:
        return self._title

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=self.doc.width(), h=self.doc.height())

    def grow(self, margins: Margins) -> None:
        """Image ▸ Canvas Size by ``margins`` (Expand): the new border is transparent on the paint layers."""
        grown = margins.grown(self.canvas())
        self.doc.resizeImage(grown.x, grown.y, grown.w, grown.h)
        self.doc.waitForDone()  # the resize runs as a stroke; the snapshot must see the grown canvas

    def selection_bounds(self) -> Rect | None:
        sel = self.doc.selection()
        if sel is None or sel.width() <= 0 or sel.height() <= 0:
            return None
        return Rect(x=sel.x(), y=sel.y(), w=sel.width(), h=sel.height())

    def _node(self, layer: str | None) -> Any:
        node = self.doc.nodeByName(layer) if layer else (self.source or self.doc.activeNode())
        if node is None:
            raise UnsupportedDocument(f"there is no layer named {layer!r}" if layer else "select a layer first")
        return node

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        check_supported(self.doc, "document")
        node = self._node(layer)
        check_supported(node, "layer")
        depth = node.colorDepth()
        data = bytes(node.pixelData(rect.x, rect.y, rect.w, rect.h))
        if depth == "U8":
            data = swap_red_blue_8(data)
        elif depth == "U16":
            data = swap_red_blue_16(data)
        elif depth == "F16":
            data = half_to_float(data)  # half floats are widened: the wire carries rgbaf32
        return Image(width=rect.w, height=rect.h, format=WIRE_FORMAT[depth], data=data, linear=is_linear(node))

    def read_selection(self, rect: Rect) -> Image:
        sel = self.doc.selection()
        data = bytes(sel.pixelData(rect.x, rect.y, rect.w, rect.h))
        return Image(width=rect.w, height=rect.h, format=PixelFormat.GRAY8, data=data)

    # ------------------------------------------------------------------ writing

    @property
    def _guard(self) -> ActiveLayerGuard:
        return guard_for(self.doc)  # the one watching this document now, shared by all its jobs

    def _painters_active_layer(self) -> Any:
        """The active layer, the painter's: never the preview layer (Krita may have made it active)."""
        active = self.doc.activeNode()
        if active is None or active.name() == PREVIEW_LAYER or self._guard.is_sfumatos(active):
            painter_layer = self._painter_layer if in_document(self._painter_layer) else self._guard.layer
            return painter_layer if in_document(painter_layer) else None
        return active

    def _insert_above(self, node: Any, active: Any) -> None:
        parent = active.parentNode() if in_document(active) else self.doc.rootNode()
        parent.addChildNode(node, active if in_document(active) else None)

    def show_preview(self, image: Image, rect: Rect) -> None:
        bgra = preview_to_krita(_scaled_bgra(image, rect.w, rect.h), self.doc.colorDepth(), is_linear(self.doc))
        node = self._preview
        if node is not None and self.doc.nodeByName(PREVIEW_LAYER) is not None:
            node.setPixelData(bgra, rect.x, rect.y, rect.w, rect.h)  # a script may paint a locked layer
        else:
            active = self._painter_layer = self._painters_active_layer()
            node = self._preview = self.doc.createNode(PREVIEW_LAYER, "paintlayer")
            node.setPixelData(bgra, rect.x, rect.y, rect.w, rect.h)
            node.setLocked(True)  # locked before it appears
            # Adding a layer may run Qt events, the end of this very job among them (clear_preview):
            self._insert_above(node, active)
            if self._preview is not node:  # the job ended meanwhile: this preview must not stay behind
                node.remove()
            self._guard.keep(active, node)
        self.doc.refreshProjection()

    def clear_preview(self) -> None:
        node = self.doc.nodeByName(PREVIEW_LAYER)
        if node is not None:
            painter_layer = self._painters_active_layer()
            node.remove()  # still locked: never, even for a moment, a layer the painter could paint on
            self._guard.keep(painter_layer)  # were the preview active, none would be now
        self._preview = None
        self.doc.refreshProjection()

    def open_enlarged(self, image: Image, name: str) -> None:
        _open_document(self.doc, image, name)

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        active = self._painters_active_layer()
        node = self.doc.createNode(name, "paintlayer")
        # the pixels go in before the layer is added: one undo step
        node.setPixelData(to_krita(image, self.doc.colorDepth()), rect.x, rect.y, rect.w, rect.h)
        self._insert_above(node, active)
        self._guard.keep(active, node)
        self.doc.refreshProjection()


def _open_document(doc: Any, image: Image, name: str) -> None:
    """A new document like ``doc`` (depth, profile, resolution) holding ``image`` as its one paint layer, shown."""
    app = Krita.instance()
    depth = doc.colorDepth()
    new = app.createDocument(image.width, image.height, name, "RGBA", depth, doc.colorProfile(), doc.resolution())
    layer = new.createNode(name, "paintlayer")
    layer.setPixelData(to_krita(image, depth), 0, 0, image.width, image.height)
    new.rootNode().addChildNode(layer, None)
    new.setActiveNode(layer)
    window = app.activeWindow()
    if window is not None:
        window.addView(new)


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
