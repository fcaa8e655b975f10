"""A GIMP image seen through plugin.core's ``DocumentLike``: pixels out, previews and results in.

Coordinates are image pixels; a layer's buffer is in its own coordinates, so reads are shifted by the
layer's offsets (pixels outside the layer read as transparent). Every call runs on the main loop.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

from sfumato.plugin.core.editor import PREVIEW_LAYER  # noqa: E402
from sfumato.plugin.core.expand import Margins  # noqa: E402
from sfumato.protocol import Image, PixelFormat, Rect  # noqa: E402

from .formats import BABL, GRAY, SELECTION_BABL, UnsupportedImage, check_base_type, wire_format  # noqa: E402

TRACE_ENV = "SFUMATO_GIMP_TRACE"  # a file: one JSON line per preview/result (used by tests/gimp)


class GimpDocument:
    def __init__(self, image: Any, source: Any, use_selection: bool = True) -> None:
        self.image = image
        self.source = source  # the layer the request was made from; results land right above it
        self.use_selection = use_selection
        self._title = image.get_name() or "Untitled"
        self._preview: Any = None
        self._trace = os.environ.get(TRACE_ENV, "")

    def check(self, need_selection: bool = False, layers: tuple[str, ...] = ()) -> None:
        """Refuse, in plain words, what cannot be sent — before anything is. ``layers``: names that must exist
        (the references')."""
        check_base_type(self.image.get_base_type())
        wire_format(self.image.get_precision())
        if self.source is None or not self.source.is_layer():
            raise UnsupportedImage("select a layer: Sfumato paints layers, not layer masks or channels")
        if need_selection and self.selection_bounds() is None:
            raise UnsupportedImage("inpainting needs a selection: select the area to repaint (soft selections work)")
        for name in layers:
            if self.image.get_layer_by_name(name) is None:
                raise UnsupportedImage(f"there is no layer named {name!r}")

    def grow(self, margins: Margins) -> None:
        """Image ▸ Canvas Size by ``margins`` (Expand): layers keep their pixels where they were; the
        new border is transparent, which is what the request reads there."""
        grown = margins.grown(self.canvas())
        self.image.resize(grown.w, grown.h, -grown.x, -grown.y)
        Gimp.displays_flush()

    # ------------------------------------------------------------------ reading

    def is_open(self) -> bool:
        return bool(self.image.is_valid())

    def title(self) -> str:
        return str(self._title)

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=self.image.get_width(), h=self.image.get_height())

    def selection_bounds(self) -> Rect | None:
        if not self.use_selection:
            return None
        _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(self.image)
        if not non_empty or x2 <= x1 or y2 <= y1:
            return None
        return Rect(x=x1, y=y1, w=x2 - x1, h=y2 - y1)

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        drawable = self.image.get_layer_by_name(layer) if layer else self.source
        if drawable is None:
            raise UnsupportedImage(f"there is no layer named {layer!r}")
        fmt = wire_format(self.image.get_precision())
        ox, oy = _offsets(drawable)
        area = Gegl.Rectangle.new(rect.x - ox, rect.y - oy, rect.w, rect.h)
        data = drawable.get_buffer().get(area, 1.0, BABL[fmt], Gegl.AbyssPolicy.NONE)
        return Image(width=rect.w, height=rect.h, format=fmt, data=bytes(data))

    def read_selection(self, rect: Rect) -> Image:
        area = Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h)
        data = self.image.get_selection().get_buffer().get(area, 1.0, SELECTION_BABL, Gegl.AbyssPolicy.NONE)
        return Image(width=rect.w, height=rect.h, format=PixelFormat.GRAY8, data=bytes(data))

    # ------------------------------------------------------------------ writing

    def show_preview(self, image: Image, rect: Rect) -> None:
        # Previews come and go outside the undo history: the painter undoes results, not previews.
        self.image.undo_freeze()
        try:
            self._remove_preview()
            layer = self._new_layer(PREVIEW_LAYER, image)
            if (image.width, image.height) != (rect.w, rect.h):
                layer.scale(rect.w, rect.h, False)
            layer.set_offsets(rect.x, rect.y)
            layer.set_lock_content(True)
            self._preview = layer
        finally:
            self.image.undo_thaw()
        Gimp.displays_flush()
        self._note("preview", locked=bool(layer.get_lock_content()))

    def clear_preview(self) -> None:
        self.image.undo_freeze()
        try:
            self._remove_preview()
        finally:
            self.image.undo_thaw()
        Gimp.displays_flush()
        self._note("preview cleared")

    def open_enlarged(self, image: Image, name: str) -> None:
        """An upscale's result: a new image of the source's base type and precision, one layer, displayed."""
        base, precision = self.image.get_base_type(), self.image.get_precision()
        enlarged = Gimp.Image.new_with_precision(image.width, image.height, base, precision)
        kind = Gimp.ImageType.GRAYA_IMAGE if int(base) == GRAY else Gimp.ImageType.RGBA_IMAGE
        layer = Gimp.Layer.new(enlarged, name, image.width, image.height, kind, 100.0, Gimp.LayerMode.NORMAL)
        enlarged.insert_layer(layer, None, 0)
        buffer = layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, image.width, image.height), BABL[image.format], image.data)
        buffer.flush()
        enlarged.clean_all()  # a new picture, not an edit of one: nothing to save yet
        Gimp.Display.new(enlarged)
        self._note("enlarged", name=name, size=[image.width, image.height])

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        self.image.undo_group_start()  # one step: undo removes the layer with its pixels
        try:
            layer = self._new_layer(name, image)
            layer.set_offsets(rect.x, rect.y)
        finally:
            self.image.undo_group_end()
        Gimp.displays_flush()
        self._note("result", name=name)

    # ------------------------------------------------------------------ helpers

    def _new_layer(self, name: str, image: Image) -> Any:
        """A layer holding ``image``, right above the source layer; the painter's layer selection is kept."""
        kind = Gimp.ImageType.GRAYA_IMAGE if int(self.image.get_base_type()) == GRAY else Gimp.ImageType.RGBA_IMAGE
        layer = Gimp.Layer.new(self.image, name, image.width, image.height, kind, 100.0, Gimp.LayerMode.NORMAL)
        selected = list(self.image.get_selected_layers())
        src = self.source
        if src is not None and src.is_valid():
            self.image.insert_layer(layer, src.get_parent(), self.image.get_item_position(src))
        else:  # the source layer was deleted meanwhile: on top of the image
            self.image.insert_layer(layer, None, 0)
        buffer = layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, image.width, image.height), BABL[image.format], image.data)
        buffer.flush()
        layer.update(0, 0, image.width, image.height)
        kept = [item for item in selected if item.is_valid()]
        if kept:
            self.image.set_selected_layers(kept)  # inserting selects the new layer; painting goes on where it was
        return layer

    def _remove_preview(self) -> None:
        layer = self._preview
        self._preview = None
        if layer is None or not layer.is_valid():
            layer = self.image.get_layer_by_name(PREVIEW_LAYER)
        if layer is not None and layer.is_valid():
            self.image.remove_layer(layer)

    def _note(self, event: str, **details: Any) -> None:
        if not self._trace:
            return
        layers = [item.get_name() for item in self.image.get_layers()] if self.image.is_valid() else []
        line = {"t": round(time.monotonic(), 3), "event": event, "layers": layers, **details}
        with open(self._trace, "a") as f:
            f.write(json.dumps(line) + "\n")


def _offsets(drawable: Any) -> tuple[int, int]:
    found = drawable.get_offsets()  # (ok, x, y) in GIMP 3.0 and 3.2
    return int(found[-2]), int(found[-1])
