"""What is waiting to be sent to one editor, bounded so a stalled editor cannot grow server memory.

Events (queued, started, errors, ...) wait in order, up to a byte budget; progress and previews are
latest-wins per job, so at most one waits per job; results are referenced, not copied (their bytes
stay in the editor's undelivered store until the send succeeds, so a disconnect loses nothing).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass

from sfumato.protocol.buffers import Frame


@dataclass(frozen=True)
class ResultRef:
    job_id: str


class Outbox:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._events: deque[Frame | ResultRef] = deque()
        self._latest: OrderedDict[str, Frame] = OrderedDict()
        self._bytes = 0
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    @property
    def pending_bytes(self) -> int:
        return self._bytes + sum(len(f) for f in self._latest.values())

    def put(self, frame: Frame, job_id: str | None = None) -> None:
        if self.closed:
            return
        if job_id is not None:
            self._latest.pop(job_id, None)  # a stale progress must not follow the job's final event
        if self._bytes + len(frame) > self.max_bytes:
            self.overflowed = True
        else:
            self._events.append(frame)
            self._bytes += len(frame)
        self._wake.set()

    def put_latest(self, job_id: str, frame: Frame) -> None:
        if self.closed:
            return
        self._latest[job_id] = frame
        self._wake.set()

    def put_result(self, job_id: str) -> None:
        if self.closed:
            return
        self._latest.pop(job_id, None)
        self._events.append(ResultRef(job_id))
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> Frame | ResultRef | None:
        """The next thing to send; ``None`` at once on overflow, or once closed and drained.

        Closing keeps the events already queued (a final error, the last ``cancelled``) but drops
        progress, which nobody needs any more."""
        while True:
            if self.overflowed:
                return None
            if self._events:
                item = self._events.popleft()
                if not isinstance(item, ResultRef):
                    self._bytes -= len(item)
                return item
            if self.closed:
                return None
            if self._latest:
                return self._latest.popitem(last=False)[1]
            self._wake.clear()
            await self._wake.wait()
