"""What plugin.core needs from an editor's document. Krita (and later GIMP) implement this; tests fake it.

All methods are called on the editor's GUI thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sfumato.protocol import Image, Rect

if TYPE_CHECKING:
    from .expand import Margins

PREVIEW_LAYER = "Sfumato preview"  # the one layer previews and live pictures show in, in every editor


class DocumentLike(Protocol):
    def is_open(self) -> bool: ...

    def title(self) -> str: ...

    def canvas(self) -> Rect: ...

    def selection_bounds(self) -> Rect | None:
        """Bounds of the non-zero selection coverage, or None when nothing is selected."""
        ...

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        """RGBA pixels (rgba8, rgba16 or rgbaf32, straight alpha) of the active layer, or of ``layer`` by name."""
        ...

    def read_selection(self, rect: Rect) -> Image:
        """Selection coverage as gray8 (0 = unselected ... 255 = selected)."""
        ...

    def show_preview(self, image: Image, rect: Rect) -> None:
        """Show ``image`` scaled to ``rect`` in the one preview layer (created on first use)."""
        ...

    def clear_preview(self) -> None: ...

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        """A new layer above the active one at ``rect``, undoable; the source layer stays untouched."""
        ...


class EnlargingDocument(DocumentLike, Protocol):
    """A document an upscale can start from: its editor opens the bigger picture as a new document."""

    def open_enlarged(self, image: Image, name: str) -> None:
        """A new document (same depth and profile) holding ``image`` as its one layer."""
        ...


class GrowingDocument(DocumentLike, Protocol):
    """A document an expand can start from: its editor grows the canvas first (one undo step)."""

    def grow(self, margins: Margins) -> None:
        """Image ▸ Canvas Size by ``margins``: the new border transparent, every layer kept in place."""
        ...
