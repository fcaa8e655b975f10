"""Live painting in Krita: the docker's *Live* toggle drives plugin.core's LivePainting from a QTimer.

Krita's Python API has no "pixels changed" signal, so the timer compares a cheap fingerprint of the
active layer: the checksum of its thumbnail (``Node.thumbnail``) with its bounds and identity. Krita
keeps a layer's thumbnail cached until the layer changes, so a tick with nothing changed costs next
to nothing; a tick after a change costs one downscale of the layer (measured in the in-Krita test).
Only the painter's layer is looked at, never the projection: the live picture itself sits in the
*Sfumato preview* layer and must not count as a change.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any

from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.live import DEBOUNCE_S, LivePainting, LivePoll
from sfumato.plugin.core.requests import GenerationParams

from .document import PREVIEW_LAYER, KritaDocument
from .qt import QTimer

POLL_MS = 50  # how often the layer's fingerprint is compared (an unchanged layer costs ~0.1 ms)
THUMBNAIL_SIDE = 256  # the fingerprint's resolution: a change must show at 1/256 of the canvas side


def fingerprint(node: Any) -> tuple[object, ...]:
    """What changes when the painter paints on ``node``: its identity, its bounds and its thumbnail's checksum."""
    thumb = node.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)  # a QImage, cached by Krita until the layer changes
    bits = thumb.constBits()
    bits.setsize(thumb.sizeInBytes() if hasattr(thumb, "sizeInBytes") else thumb.byteCount())
    b = node.bounds()
    return node.uniqueId().toString(), b.x(), b.y(), b.width(), b.height(), zlib.crc32(bytes(bits))


class KritaLive(LivePoll):
    """One document's live painting, while the docker's Live toggle is on."""

    def __init__(
        self,
        controller: Controller,
        doc: KritaDocument,
        params: Callable[[], GenerationParams],
        on_error: Callable[[str], None],
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        painting = LivePainting(controller, doc, params, debounce_s)
        super().__init__(painting, lambda seconds, send: QTimer.singleShot(math.ceil(seconds * 1000), send), on_error)
        self.doc = doc
        self.layer: Any = None  # the painter's layer the fingerprint was last taken of
        self.timer = QTimer()
        self.timer.timeout.connect(self.poll)
        self.timer.start(POLL_MS)

    def look(self) -> object:
        if not self.doc.is_open():
            self.stop()
            return None
        node = self.doc.doc.activeNode()
        if node is None or node.name() == PREVIEW_LAYER:  # Krita may activate the preview layer it added
            node = self.layer
            if node is not None:
                self.doc.doc.setActiveNode(node)  # the painter goes on painting on their layer
        self.layer = self.doc.source = node  # what the fingerprint watches is what a live job reads
        return fingerprint(node) if node is not None else None

    def stop(self) -> None:
        self.timer.stop()
        super().stop()
