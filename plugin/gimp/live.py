"""Live painting in GIMP: the window's *Live* toggle drives plugin.core's LivePainting from GLib timeouts.

GIMP tells a plug-in nothing when pixels change, so a 50 ms poll compares a cheap fingerprint of the
painter's layer (the one selected layer of the window's image): its identity, offsets and size, and
the checksum of its thumbnail (``Gimp.Drawable.get_thumbnail_data``; after the first call of a layer,
about a millisecond even for a 4096² layer — the figures below).

Measured in the in-GIMP test (tests/gimp/window_selftest.py, printed on every run; GIMP 3.0.4 and
3.2.6 under Xvfb on 2 loaded cores): the fingerprint of a 4096² layer takes 0.6–0.9 ms unchanged
and 1.2–1.8 ms after a 16 px change (medians of five; the very first one of a new layer 33–35 ms);
the slowest whole tick of the poll during the live scenario, sending the job included, 5–14 ms.

Only the painter's layer is looked at, never the image's projection: the live picture sits in the
*Sfumato preview* layer and must not count as a change.

No ``gi`` here: the window lends its GLib timers (``glib.repeat``, ``glib.after``), and the host tests
drive this module with fakes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.editor import PREVIEW_LAYER
from sfumato.plugin.core.live import DEBOUNCE_S, LivePainting, LivePoll, StartTimer
from sfumato.plugin.core.requests import GenerationParams

POLL_MS = 50  # how often the layer's fingerprint is compared
THUMBNAIL_SIDE = 256  # the fingerprint's resolution: a change must show at 1/256 of the layer's side

Repeat = Callable[[int, Callable[[], bool]], object]  # (milliseconds, callback returning "again?")


def fingerprint(drawable: Any) -> tuple[object, ...]:
    """What changes when the painter paints on ``drawable``: identity, offsets, size and its thumbnail's checksum."""
    data, width, height, bpp = drawable.get_thumbnail_data(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    checksum = zlib.crc32(data.get_data()) if data is not None else None
    offsets = drawable.get_offsets()  # (ok, x, y)
    size = (drawable.get_width(), drawable.get_height())
    return drawable.get_id(), offsets[-2], offsets[-1], size, (width, height, bpp), checksum


class GimpLive(LivePoll):
    """One image's live painting, while the window's Live toggle is on (and its picture until Apply)."""

    def __init__(
        self,
        controller: Controller,
        doc: Any,  # a GimpDocument: its image is polled, its source follows the painter's layer
        params: Callable[[], GenerationParams],
        on_error: Callable[[str], None],
        repeat: Repeat,
        after: StartTimer,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        super().__init__(LivePainting(controller, doc, params, debounce_s), after, on_error)
        self.doc = doc
        self.layer: Any = doc.source  # the painter's layer the fingerprint was last taken of
        repeat(POLL_MS, self.tick)

    def tick(self) -> bool:
        """The GLib poll; returns whether to poll again (the GLib source ends once live painting is off)."""
        if self.painting.on:
            self.poll()
        return self.painting.on

    def look(self) -> object:
        if not self.doc.is_open():
            self.stop()
            self.on_error("Live painting stopped: the image was closed.")
            return None
        layer = self._painters_layer()
        self.doc.source = layer  # what the fingerprint watches is what a live job reads
        return fingerprint(layer) if layer is not None else None

    def _painters_layer(self) -> Any:
        """The one selected layer; the last one watched while several, none or the preview layer are selected."""
        selected = list(self.doc.image.get_selected_layers())
        if len(selected) == 1 and selected[0].get_name() != PREVIEW_LAYER:
            self.layer = selected[0]
        elif self.layer is not None and not self.layer.is_valid():
            self.layer = None  # deleted: nothing to paint from until the painter selects a layer
        return self.layer
