"""The resolution autopilot: generate near the model's native size, whatever the region's size."""

from __future__ import annotations

import math
from dataclasses import dataclass

MULTIPLE = 8
LOW, HIGH = 0.75, 1.5  # accepted side range relative to native (by area)
MAX_REFINE_FACTOR = 2.5  # beyond this the second pass would be too slow; we upscale without it


@dataclass(frozen=True)
class Plan:
    width: int  # first (or only) pass
    height: int
    refine: bool  # a second, low-strength pass at the region's own size (rounded to MULTIPLE)
    refine_width: int = 0
    refine_height: int = 0

    @property
    def resized(self) -> bool:
        return self.refine or (self.width, self.height) != (self.refine_width, self.refine_height)


def _snap(x: float) -> int:
    return max(MULTIPLE, round(x / MULTIPLE) * MULTIPLE)


def plan(width: int, height: int, native: int) -> Plan:
    """Scale a ``width``×``height`` region into the model's range in multiples of 8.

    Tiny regions are generated at the model's minimum and scaled down; huge ones are generated at
    native size, scaled up, then refined in a second pass at the region's size.
    """
    area, lo, hi = width * height, (native * LOW) ** 2, (native * HIGH) ** 2
    own_w, own_h = _snap(width), _snap(height)
    if area < lo:
        s = math.sqrt(lo / area)
        return Plan(_snap(width * s), _snap(height * s), False, own_w, own_h)
    if area > hi:
        s = math.sqrt(native * native / area)
        refine = 1 / s <= MAX_REFINE_FACTOR * HIGH
        return Plan(_snap(width * s), _snap(height * s), refine, own_w, own_h)
    return Plan(own_w, own_h, False, own_w, own_h)
