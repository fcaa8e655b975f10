"""Negotiated limits, checked before anything large is allocated."""

from __future__ import annotations

from dataclasses import dataclass

# Hard ceilings of this implementation; a server may announce lower values, never higher.
HARD_MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class DecodeLimits:
    """What the decoder enforces on incoming frames.

    Structural limits (depth, entries, objects, string bytes) are checked by scanning the msgpack
    headers *before* anything is unpacked; size limits (pixels, image bytes after inflating,
    batch, controls) are checked from the declared sizes *before* any image is inflated.
    """

    max_message_bytes: int = 256 << 20  # 256 MiB: a 4096² RGBA16 layer plus mask and controls
    max_pixels: int = 4096 * 4096  # per image
    max_depth: int = 16  # nesting of maps/lists; deeper frames are rejected
    max_items: int = 4096  # entries of one list or map
    max_objects: int = 1 << 17  # msgpack values in one frame (a welcome with a large catalogue)
    max_str_bytes: int = 64 << 10
    max_batch: int = 64  # submit.batch_size
    max_controls: int = 16  # submit.controls

    @property
    def max_decoded_bytes(self) -> int:
        """Image bytes one frame may hold *after* inflating: zlib saves bandwidth, never adds capacity."""
        return self.max_message_bytes


DEFAULT_LIMITS = DecodeLimits()
