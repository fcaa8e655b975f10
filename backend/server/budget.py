"""The memory that jobs hold, bounded for all editors together and for each editor alone.

A job is charged when it is accepted: its input images plus room for its result (every batch
image the size of the input, the most a result can be). The charge shrinks to the real result
frame when the job finishes (the inputs are dropped then) and ends when the result has been
sent. So a result, once made, always fits: no editor's load can push out another editor's
result, and a job that could not keep its result is refused up front instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfumato.protocol import BYTES_PER_PIXEL, ErrorCode, Submit

FRAME_OVERHEAD = 4096  # msgpack keys, rect, seeds and timings around a result's pixels


def job_bytes(req: Submit) -> int:
    """What a job may hold at most: its inputs while it waits or runs, then its result frame."""
    images = [req.image, *(c.image for c in req.controls), *(r.image for r in req.references)]
    images += [req.mask] if req.mask is not None else []
    inputs = sum(len(img.data) for img in images)
    out = req.output_rect  # an upscale's result is larger than its image
    result = req.batch_size * out.w * out.h * BYTES_PER_PIXEL[req.image.format]
    return inputs + result + FRAME_OVERHEAD


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


class MemoryBudget:
    """Byte counts per owner (an editor) and in total; all calls happen on the event loop."""

    def __init__(self, total: int, per_owner: int) -> None:
        self.total, self.per_owner = total, per_owner
        self.used = 0
        self._by_owner: dict[object, int] = {}

    def held_by(self, owner: object) -> int:
        return self._by_owner.get(owner, 0)

    def reserve(self, owner: object, n: int) -> Refusal | None:
        """Charge ``n`` bytes to ``owner``, or say why not (nothing is charged then)."""
        mib = 1 << 20
        if n > self.per_owner:
            return Refusal(
                ErrorCode.TOO_LARGE,
                f"this job needs {n / mib:.0f} MiB for its images and result; one editor may use "
                f"{self.per_owner / mib:.0f} MiB: send a smaller region or a smaller batch",
            )
        if self.held_by(owner) + n > self.per_owner:
            return Refusal(
                ErrorCode.QUEUE_FULL,
                f"your waiting jobs and undelivered results already use {self.held_by(owner) / mib:.0f} of "
                f"{self.per_owner / mib:.0f} MiB; wait for them to finish or cancel some",
            )
        if self.used + n > self.total:
            return Refusal(
                ErrorCode.QUEUE_FULL,
                f"the backend is busy: jobs of all editors use {self.used / mib:.0f} of {self.total / mib:.0f} MiB; "
                "try again when some have finished",
            )
        self._by_owner[owner] = self.held_by(owner) + n
        self.used += n
        return None

    def release(self, owner: object, n: int) -> None:
        left = self.held_by(owner) - n
        assert left >= 0 and n >= 0, (left, n)
        if left:
            self._by_owner[owner] = left
        else:
            self._by_owner.pop(owner, None)
        self.used -= n
