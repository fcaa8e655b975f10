"""One worker per device: runs the blocking pipeline calls on its own thread, one job at a time.

Events cross from the worker thread into asyncio with ``call_soon_threadsafe``. Large frames
(results, previews) are encoded on the worker thread so the event loop never spends time on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sfumato.protocol import (
    Cancelled,
    ErrorCode,
    Image,
    JobError,
    JobEvent,
    Progress,
    ProtocolError,
    Result,
    Started,
    encode,
)

from ..engine import JobCancelled
from .hub import Hub
from .jobs import Job

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1  # progress without a preview: at most 10 per second per job, plus the last step


class _Hooks:
    """Engine callbacks for one job; called on the worker thread."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker, self.job = worker, job
        settings = job.submit.preview
        self.interval = 1.0 / settings.max_per_second if settings.enabled and settings.max_per_second > 0 else None
        self.last_preview = 0.0
        self.last_progress = 0.0
        self.step = (0, 0)

    def _call(self, fn: Any, *args: Any) -> None:
        self.worker.loop.call_soon_threadsafe(fn, *args)

    def started(self, steps: int, steps_requested: int, width: int, height: int, seeds: list[int]) -> None:
        msg = Started(
            job_id=self.job.id,
            steps=steps,
            steps_requested=steps_requested,
            width=width,
            height=height,
            seeds=tuple(seeds),
        )
        self._call(self.worker.hub.announce_started, self.job, msg)

    def progress(self, step: int, total: int) -> None:
        self.step = (step, total)
        if self.wants_preview():
            return  # the preview that is due carries the progress itself
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_INTERVAL_S or step == total:
            self.last_progress = now
            frame = encode(Progress(job_id=self.job.id, step=step, total=total))
            self._call(self.worker.hub.emit_progress, self.job, frame)

    def wants_preview(self) -> bool:
        return (
            self.interval is not None
            and self.job.owner.connection is not None
            and time.monotonic() - self.last_preview >= self.interval
        )

    def preview(self, image: Image) -> None:
        self.last_preview = time.monotonic()
        frame = encode(Progress(job_id=self.job.id, step=self.step[0], total=self.step[1], preview=image))
        self._call(self.worker.hub.emit_progress, self.job, frame)

    def cancelled(self) -> bool:
        return self.job.cancel.is_set()


class Worker:
    def __init__(self, hub: Hub, name: str = "worker") -> None:
        self.hub = hub
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sfumato-{name}")
        self.loop = asyncio.get_running_loop()
        self.current: Job | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        while True:
            job = await self.hub.queue.pop()
            self.current = job
            self._idle.clear()
            try:
                await self._run(job)
            finally:
                self.current = None
                self._idle.set()

    async def idle(self, timeout: float) -> bool:
        """Wait until no job runs (at most ``timeout`` s); whether it is idle."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()

    async def _run(self, job: Job) -> None:
        hub = self.hub
        hub.job_started(job)
        try:
            frame = await self.loop.run_in_executor(self.executor, self._generate, job)
        except JobCancelled:
            hub.finish(job, JobEvent.CANCELLED, Cancelled(job_id=job.id))
        except ProtocolError as exc:
            hub.finish(
                job, JobEvent.ERROR, JobError(job_id=job.id, code=exc.code, message=exc.message, field=exc.field)
            )
        except Exception as exc:  # a bug or a library failure: fail this job, keep serving
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            message = f"the backend failed on this job: {type(exc).__name__}: {exc}"[:2000]
            hub.finish(job, JobEvent.ERROR, JobError(job_id=job.id, code=ErrorCode.INTERNAL, message=message))
        else:
            hub.finish(job, JobEvent.RESULT, result=frame)

    def _generate(self, job: Job) -> bytes:
        """On the worker thread: run the engine and encode the result frame."""
        out = self.hub.engine.run(job.submit, job.seed, _Hooks(self, job))
        return encode(
            Result(job_id=job.id, images=tuple(out.images), rect=out.rect, seeds=tuple(out.seeds), timings=out.timings)
        )

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
