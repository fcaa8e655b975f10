"""Live painting in Krita: the docker's *Live* toggle drives plugin.core's LivePainting from a QTimer.

Krita's Python API has no "pixels changed" signal, so the timer compares a cheap fingerprint of the
active layer: the checksum of its thumbnail (``Node.thumbnail``) with its bounds and identity. Krita
keeps a layer's thumbnail cached until the layer changes, so a tick with nothing changed costs next
to nothing; a tick after a change costs one downscale of the layer (measured in the in-Krita test).
Only the painter's layer is looked at, never the projection: the live picture itself sits in the
*Sfumato preview* layer and must not count as a change.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable
from typing import Any

from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.live import DEBOUNCE_S, LivePainting, LiveTimer
from sfumato.plugin.core.requests import GenerationParams

from .document import PREVIEW_LAYER, KritaDocument
from .qt import QTimer

log = logging.getLogger(__name__)

POLL_MS = 50  # how often the layer's fingerprint is compared (an unchanged layer costs ~0.1 ms)
THUMBNAIL_SIDE = 256  # the fingerprint's resolution: a change must show at 1/256 of the canvas side


def fingerprint(node: Any) -> tuple[object, ...]:
    """What changes when the painter paints on ``node``: its identity, its bounds and its thumbnail's checksum."""
    thumb = node.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)  # a QImage, cached by Krita until the layer changes
    bits = thumb.constBits()
    bits.setsize(thumb.sizeInBytes() if hasattr(thumb, "sizeInBytes") else thumb.byteCount())
    b = node.bounds()
    return node.uniqueId().toString(), b.x(), b.y(), b.width(), b.height(), zlib.crc32(bytes(bits))


class KritaLive:
    """One document's live painting, while the docker's Live toggle is on."""

    def __init__(
        self,
        controller: Controller,
        doc: KritaDocument,
        params: Callable[[], GenerationParams],
        on_error: Callable[[str], None],
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self.doc, self.on_error = doc, on_error
        self.painting = LivePainting(controller, doc, params, debounce_s)
        self.seen: tuple[object, ...] | None = None  # None: the first tick counts as a change (paints at once)
        self.layer: Any = None  # the painter's layer the fingerprint was last taken of
        self.slowest_tick_s = 0.0  # the longest a tick held Krita's event loop
        self.send_timer = LiveTimer(self.painting, lambda s, fire: QTimer.singleShot(math.ceil(s * 1000), self.send))
        self.timer = QTimer()
        self.timer.timeout.connect(self.tick)
        self.timer.start(POLL_MS)

    def tick(self) -> None:
        started = time.monotonic()
        try:
            if not self.doc.is_open():
                self.stop()
                return
            node = self.doc.doc.activeNode()
            if node is None or node.name() == PREVIEW_LAYER:  # Krita may activate the preview layer it added
                node = self.layer
                if node is not None:
                    self.doc.doc.setActiveNode(node)  # the painter goes on painting on their layer
            self.layer = self.doc.source = node  # what the fingerprint watches is what a live job reads
            if node is not None:
                now = fingerprint(node)
                if now != self.seen:
                    self.seen = now
                    self.painting.changed(started)
            self.send_timer.arm()
        except Exception as exc:  # plain words in the docker, never Krita's modal dialog from a timer
            self._failed(exc)
        self.slowest_tick_s = max(self.slowest_tick_s, time.monotonic() - started)

    def send(self) -> None:
        """The live job of the layer as it is now, once the changes paused (a turn of Krita's loop of its
        own, even when due at once: the loop runs between the tick that noticed and the send)."""
        started = time.monotonic()
        try:
            if self.painting.on:
                self.send_timer.fire()
        except Exception as exc:
            self._failed(exc)
        self.slowest_tick_s = max(self.slowest_tick_s, time.monotonic() - started)

    def _failed(self, exc: Exception) -> None:
        log.exception("live painting stopped")
        self.stop()
        self.on_error(f"Live painting stopped: {exc}")

    def stop(self) -> None:
        """Live off: no more jobs; the last live picture stays in the preview layer for Apply."""
        self.timer.stop()
        self.painting.stop()

    def apply(self) -> str | None:
        """The newest live picture becomes a layer (one undo step, named like every result)."""
        return self.painting.apply()
