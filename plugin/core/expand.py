"""Expand the canvas (outpaint): the request that fills a new border so it continues the picture.

The editor grows its canvas first (Krita: ``Document.resizeImage``; the CLI pads the file with
transparent pixels) and snapshots the grown document. The new border is then an ordinary inpaint
mask: the backend reads transparent pixels under a mask as empty canvas, fills them from their
surroundings before denoising and covers them fully (backend/tasks/inpaint.py), while every pixel
outside the border stays bit-identical. Only the context around the border is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sfumato.protocol import Image, PixelFormat, Rect, Submit, context_rect

from .editor import DocumentLike
from .requests import GenerationParams, new_job_id, submit_for

SIDES = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class Margins:
    """Pixels added on each side of the canvas."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    @classmethod
    def on(cls, sides: Iterable[str], px: int) -> Margins:
        """``px`` on each named side (``left``, ``top``, ``right``, ``bottom``)."""
        chosen = set(sides)
        unknown = chosen - set(SIDES)
        if unknown:
            raise ValueError(f"unknown side(s) {', '.join(sorted(unknown))}: choose from {', '.join(SIDES)}")
        if px < 0:
            raise ValueError(f"the margin must not be negative, got {px}")
        return cls(*(px if side in chosen else 0 for side in SIDES))

    @property
    def empty(self) -> bool:
        return not (self.left or self.top or self.right or self.bottom)

    def grown(self, canvas: Rect) -> Rect:
        """The canvas after growing, in the coordinates of the canvas before."""
        return Rect(
            x=canvas.x - self.left,
            y=canvas.y - self.top,
            w=canvas.w + self.left + self.right,
            h=canvas.h + self.top + self.bottom,
        )

    def inner(self, grown: Rect) -> Rect:
        """Where the old canvas lies in the grown one."""
        return Rect(
            x=grown.x + self.left,
            y=grown.y + self.top,
            w=grown.w - self.left - self.right,
            h=grown.h - self.top - self.bottom,
        )

    def border_bounds(self, grown: Rect) -> Rect:
        """The bounding box of the new border strips in the grown canvas."""
        inner = self.inner(grown)
        x0 = grown.x if self.left or self.top or self.bottom else inner.right
        x1 = grown.right if self.right or self.top or self.bottom else inner.x
        y0 = grown.y if self.top or self.left or self.right else inner.bottom
        y1 = grown.bottom if self.bottom or self.left or self.right else inner.y
        return Rect(x=x0, y=y0, w=x1 - x0, h=y1 - y0)


def refuse_empty(margins: Margins) -> None:
    if margins.empty:
        raise ValueError("choose a margin and at least one side to expand")


def border_mask(margins: Margins, grown: Rect, region: Rect) -> Image:
    """Coverage over ``region``: 255 on the new border of ``grown``, 0 on the old canvas."""
    inner = margins.inner(grown)
    a = min(max(inner.x - region.x, 0), region.w)  # the old canvas's columns within the region: [a, b)
    b = min(max(inner.right - region.x, a), region.w)
    middle = b"\xff" * a + b"\0" * (b - a) + b"\xff" * (region.w - b)
    full = b"\xff" * region.w
    rows = (middle if inner.y <= y < inner.bottom else full for y in range(region.y, region.bottom))
    return Image(width=region.w, height=region.h, format=PixelFormat.GRAY8, data=b"".join(rows))


def build_expand(doc: DocumentLike, margins: Margins, params: GenerationParams, job_id: str | None = None) -> Submit:
    """The request that fills the border ``margins`` added to ``doc``'s (already grown) canvas."""
    refuse_empty(margins)
    canvas = doc.canvas()
    if margins.left + margins.right >= canvas.w or margins.top + margins.bottom >= canvas.h:
        raise ValueError("the margins are larger than the canvas")
    result = margins.border_bounds(canvas)
    region = context_rect(result, canvas)
    return submit_for(
        doc, params, job_id or new_job_id(), "inpaint", region, result, border_mask(margins, canvas, region)
    )
