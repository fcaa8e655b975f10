"""A worker runs jobs on one device, one at a time, on a thread of its own.

The event loop hands it a job (:meth:`Worker.give`); its thread runs the engine and hands the
outcome back with ``call_soon_threadsafe``. Large frames (results, previews) are encoded on the
thread so the event loop never spends time on them.

A worker *dies* when its thread leaves its loop: an exception the loop does not expect, or a failure
that means its device is lost (``devices.is_device_lost``). Its job alone fails, with
``worker_failed``, and whoever started it (server/workers.py) replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from sfumato.protocol import (
    DeviceStatus,
    Encoded,
    ErrorCode,
    Image,
    JobError,
    JobEvent,
    Message,
    Progress,
    ProtocolError,
    Result,
    Started,
    encode,
    encode_once,
)

from ..devices import bind_thread, is_device_lost
from ..engine import JobCancelled
from ..errors import JobFailure
from .hub import EngineLike, Hub
from .jobs import Job

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1  # progress without a preview: at most 10 per second per job, plus the last step
MAX_MODELS_SHOWN = 64  # DeviceStatus.loaded_models holds at most this many

Outcome = tuple[JobEvent, Message | None, Encoded | None]  # how a job ended: event, message, result


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
        self.worker.post(fn, *args)

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
    """One device's worker. Its attributes are read and written on the event loop only."""

    def __init__(
        self,
        hub: Hub,
        engine: EngineLike,
        name: str,
        on_free: Callable[[Worker], None],
        on_death: Callable[[Worker], None],
    ) -> None:
        self.hub, self.engine, self.name = hub, engine, name
        self.loop = asyncio.get_running_loop()
        self.label = engine.device_label()
        self.current: Job | None = None
        self.dead = False
        self.models = tuple(engine.loaded_models())  # as of its last job: the loop never reads the cache itself
        self.free_since = time.monotonic()
        self._on_free, self._on_death = on_free, on_death
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"sfumato-{name}", daemon=True)
        self._thread.start()

    def status(self) -> DeviceStatus:
        state = "starting" if self.dead else ("idle" if self.current is None else "running")
        return DeviceStatus(device=self.label[:128], state=state, loaded_models=self.models[:MAX_MODELS_SHOWN])

    def give(self, job: Job) -> None:
        """Run ``job`` here; the worker must be free."""
        assert self.current is None and not self.dead, f"{self.name} is not free"
        self.current = job
        self.hub.job_started(job)
        self._inbox.put(job)

    def stop(self) -> None:
        """Let the thread end once its job (if any) is done."""
        self._inbox.put(None)

    async def join(self, timeout: float) -> bool:
        """Wait for the thread to end (at most ``timeout`` s); whether it has."""
        await asyncio.to_thread(self._thread.join, max(0.0, timeout))
        return not self._thread.is_alive()

    def post(self, fn: Any, *args: Any) -> None:
        """From the thread: call ``fn`` on the event loop (nothing, once the loop is gone)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to tell
            self.loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ on the worker's thread

    def _loop(self) -> None:
        try:
            bind_thread(getattr(self.engine, "device", ""))  # test engines have no device
            while (job := self._inbox.get()) is not None:
                outcome = self._attempt(job)
                self.post(self._done, job, outcome, tuple(self.engine.loaded_models()))
        except BaseException as exc:  # out of its loop: this worker is done for; the loop learns why
            self.post(self._died, exc)

    def _attempt(self, job: Job) -> Outcome:
        try:
            frame = self._generate(job)
        except JobCancelled:
            return JobEvent.CANCELLED, job.cancelled(), None
        except (JobFailure, ProtocolError) as exc:  # the request cannot run here, in words for the painter
            if is_device_lost(exc):  # e.g. a model load that failed because the device is gone
                raise
            return JobEvent.ERROR, JobError(job_id=job.id, code=exc.code, message=exc.message, field=exc.field), None
        except Exception as exc:
            if is_device_lost(exc):
                raise
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())  # a bug or a library failure
            message = f"the backend failed on this job: {type(exc).__name__}: {exc}"[:2000]
            return JobEvent.ERROR, JobError(job_id=job.id, code=ErrorCode.INTERNAL, message=message), None
        return JobEvent.RESULT, None, frame

    def _generate(self, job: Job) -> Encoded:
        """Run the engine and encode the result (its pixels moved out, not copied: each editor gets them as
        its version takes them, protocol.ServerConnection.result_frames)."""
        out = self.engine.run(job.submit, job.seed, _Hooks(self, job))
        return encode_once(
            Result(job_id=job.id, images=tuple(out.images), rect=out.rect, seeds=tuple(out.seeds), timings=out.timings)
        )

    # ------------------------------------------------------------------ back on the event loop

    def _done(self, job: Job, outcome: Outcome, models: tuple[str, ...]) -> None:
        self.current, self.models, self.free_since = None, models, time.monotonic()
        event, message, frame = outcome
        self.hub.finish(job, event, message, result=frame)
        self._on_free(self)

    def _died(self, exc: BaseException) -> None:
        self.dead = True
        job, self.current = self.current, None
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("the worker on %s failed and is replaced:\n%s", self.label, trace)
        if job is not None and not job.state.finished:
            if job.cancel.is_set():  # what its owner asked for happened anyway
                self.hub.finish(job, JobEvent.CANCELLED, job.cancelled())
            else:
                message = (
                    f"the worker on {self.label} failed ({type(exc).__name__}: {exc}) and was replaced; "
                    "submit the job again"
                )
                self.hub.finish(
                    job, JobEvent.ERROR, JobError(job_id=job.id, code=ErrorCode.WORKER_FAILED, message=message[:2000])
                )
        self._on_death(self)
