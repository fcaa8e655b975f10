"""Rectangles and the two regions of an inpainting request.

The *context* is what the model sees: the selection bounds grown by a margin that scales with the
selection, snapped to multiples of 8 and clamped to the canvas. The *result* is what gets pasted:
the selection bounds. Both editors and the backend use these functions, so the plugin can send only
the context crop of a huge canvas.
"""

from __future__ import annotations

import dataclasses

from .errors import InvalidMessage
from .schema import Int, Record, wire

_COORD = Int(-(1 << 20), 1 << 20)
_SIZE = Int(1, 1 << 16)


@dataclasses.dataclass(frozen=True)
class Point(Record):
    PATH = "point"
    x: int = wire(_COORD)
    y: int = wire(_COORD)


@dataclasses.dataclass(frozen=True)
class Rect(Record):
    """An axis-aligned rectangle in document pixels: ``x, y`` top-left, ``w, h`` size (≥ 1)."""

    PATH = "rect"
    x: int = wire(_COORD)
    y: int = wire(_COORD)
    w: int = wire(_SIZE)
    h: int = wire(_SIZE)

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def contains(self, other: Rect) -> bool:
        return self.x <= other.x and self.y <= other.y and other.right <= self.right and other.bottom <= self.bottom

    def intersect(self, other: Rect) -> Rect | None:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect(x=x0, y=y0, w=x1 - x0, h=y1 - y0) if x1 > x0 and y1 > y0 else None


def context_margin(selection: Rect) -> int:
    """Margin around a selection: about a third of its mean side, at least 16 px."""
    return max(16, (selection.w + selection.h) // 6)


def context_rect(selection: Rect, canvas: Rect, margin: int | None = None, snap: int = 8) -> Rect:
    """The context region for a selection: grown by ``margin``, snapped outward to ``snap``, clamped to the canvas."""
    if canvas.intersect(selection) is None:
        raise InvalidMessage("the selection lies outside the canvas", "selection")
    m = context_margin(selection) if margin is None else margin
    x0 = max(canvas.x, selection.x - m)
    y0 = max(canvas.y, selection.y - m)
    x1 = min(canvas.right, selection.right + m)
    y1 = min(canvas.bottom, selection.bottom + m)
    # Snap the size up to a multiple of `snap` by growing on whichever side still has canvas.
    x0, x1 = _snap_span(x0, x1, canvas.x, canvas.right, snap)
    y0, y1 = _snap_span(y0, y1, canvas.y, canvas.bottom, snap)
    return Rect(x=x0, y=y0, w=x1 - x0, h=y1 - y0)


def _snap_span(a: int, b: int, lo: int, hi: int, snap: int) -> tuple[int, int]:
    extra = (-(b - a)) % snap
    grow_right = min(extra, hi - b)
    b += grow_right
    a -= min(extra - grow_right, a - lo)
    return a, b
