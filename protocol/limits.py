"""Negotiated limits, checked before anything large is allocated."""

from __future__ import annotations

from dataclasses import dataclass

# Hard ceilings of this implementation; a server may announce lower values, never higher.
HARD_MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class DecodeLimits:
    """What the decoder enforces on incoming frames."""

    max_message_bytes: int = 256 << 20  # 256 MiB: a 4096² RGBA16 layer plus mask and controls
    max_pixels: int = 4096 * 4096  # per image
    max_depth: int = 16  # nesting of maps/lists; deeper frames are rejected
    max_items: int = 4096  # entries of one list or map
    max_str_bytes: int = 64 << 10


DEFAULT_LIMITS = DecodeLimits()
