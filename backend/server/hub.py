"""The hub: which editors exist, which jobs are theirs, and where every event goes.

Every job event goes to the job's owner only. The only broadcast is the server status (queue
length, running jobs, loaded models, devices), and it is sent explicitly by :meth:`broadcast_status`.
The hub owns the whole life of a job (accept, position, start, finish, result delivery) and of the
memory it holds (see budget.py). All methods run on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Protocol

from sfumato.protocol import (
    DecodeLimits,
    DeviceStatus,
    Encoded,
    Error,
    ErrorCode,
    Hello,
    JobError,
    JobEvent,
    JobStatus,
    Limits,
    Message,
    ModelInfo,
    ProtocolError,
    Queued,
    Started,
    Status,
    Submit,
)

from ..config import Config
from ..errors import JobFailure
from .budget import MemoryBudget, job_bytes
from .jobs import EditorState, Job
from .queue import FairQueue

log = logging.getLogger(__name__)

CLIENT_FRAME_MAX_OBJECTS = 8192  # a submit with every control is a few hundred msgpack values


class EngineLike(Protocol):
    def check(self, req: Submit) -> Any: ...
    def run(self, req: Submit, seed: int, hooks: Any) -> Any: ...
    def device_label(self) -> str: ...
    def models(self) -> list[ModelInfo]: ...
    def loaded_models(self) -> list[str]: ...


class DevicesLike(Protocol):
    def status(self) -> tuple[DeviceStatus, ...]: ...


class ConnectionLike(Protocol):
    editor: EditorState | None

    def send(self, message: Message, job_id: str | None = None) -> None: ...
    def send_latest(self, job_id: str, frame: bytes) -> None: ...
    def send_result(self, job_id: str) -> None: ...
    def close(self, reason: str) -> None: ...


class Hub:
    def __init__(self, config: Config, engine: EngineLike) -> None:
        self.config = config
        self.engine = engine  # the first device's: it answers for the catalogue every worker shares
        self.devices: DevicesLike | None = None  # the workers, once the server started them
        self.queue = FairQueue()
        self.editors: dict[str, EditorState] = {}
        self.running: set[Job] = set()
        self.budget = MemoryBudget(config.job_memory_mib << 20, config.editor_memory_mib << 20)
        self.closing = False
        self._status_pending = False

    @property
    def limits(self) -> Limits:
        c = self.config
        return Limits(
            max_message_bytes=c.max_message_mib << 20,
            max_pixels=c.max_pixels,
            max_batch=c.max_batch,
            max_queued_per_editor=c.max_queued_per_editor,
            max_controls=c.max_controls,
        )

    @property
    def decode_limits(self) -> DecodeLimits:
        """What every editor's frames are held to, while they are decoded."""
        c = self.config
        return DecodeLimits(
            max_message_bytes=c.max_message_mib << 20,
            max_pixels=c.max_pixels,
            max_objects=CLIENT_FRAME_MAX_OBJECTS,
            max_batch=c.max_batch,
            max_controls=c.max_controls,
        )

    # ------------------------------------------------------------------ editors

    def attach(self, hello: Hello, connection: ConnectionLike) -> tuple[EditorState, bool]:
        """Bind a connection to a new editor state, or to its earlier one when resuming."""
        editor = self.editors.get(hello.resume) if hello.resume else None
        resumed = editor is not None
        if editor is None:
            editor = EditorState(session_id=secrets.token_urlsafe(24), name=hello.client)
            self.editors[editor.session_id] = editor
        elif editor.connection is not None:  # a second connection resumed the same session: the newest wins
            old = editor.connection
            old.send(
                Error(
                    code=ErrorCode.SESSION_REPLACED,
                    message="another connection resumed this session; this one is closed",
                    fatal=True,
                )
            )
            old.editor = None
            old.close("replaced by a newer connection of the same editor")
        editor.connection = connection
        editor.disconnected_at = None
        connection.editor = editor
        return editor, resumed

    def replay(self, editor: EditorState) -> None:
        """After a resume: the state of every job, then the results that finished meanwhile."""
        connection = editor.connection
        assert connection is not None
        for job in editor.jobs.values():
            connection.send(
                JobStatus(job_id=job.id, state=job.state.value, position=job.position if job.position >= 0 else None)
            )
        for job_id in editor.undelivered:
            connection.send_result(job_id)

    def detach(self, connection: ConnectionLike) -> None:
        editor = connection.editor
        if editor is not None and editor.connection is connection:
            editor.connection = None
            editor.disconnected_at = time.monotonic()
        self.broadcast_status()

    def expire(self) -> None:
        """Forget editors gone longer than the resume TTL: cancel their jobs, drop their results."""
        now = time.monotonic()
        for sid, editor in list(self.editors.items()):
            if (
                editor.connection is None
                and editor.disconnected_at is not None
                and now - editor.disconnected_at > self.config.resume_ttl_s
            ):
                del self.editors[sid]
                for job in editor.active_jobs:
                    self._cancel_job(job)  # a running one stops at its next step, then releases its memory
                for job_id in list(editor.undelivered):
                    self._forget_result(editor, job_id)
                log.info("forgot editor %s: gone longer than %.0f s", _name(editor), self.config.resume_ttl_s)

    # ------------------------------------------------------------------ jobs

    def submit(self, editor: EditorState, req: Submit) -> None:
        connection = editor.connection
        assert connection is not None
        existing = editor.jobs.get(req.job_id)
        if existing is not None and not existing.state.finished:
            # an `error`, not a `job_error`: the id belongs to the running original, which carries on
            connection.send(
                Error(
                    code=ErrorCode.DUPLICATE_JOB,
                    message=f"job id {req.job_id!r} is already in use by one of your unfinished jobs",
                    field="submit.job_id",
                    job_id=req.job_id,
                )
            )
            return
        superseded = [j for j in editor.active_jobs if j.live] if req.live else []
        refusal = self._refuse(editor, req, replaced=len(superseded))
        if refusal is not None:  # a refused live job supersedes nothing
            connection.send(JobError(job_id=req.job_id, code=refusal[0], message=refusal[1], field=refusal[2]))
            return
        editor.forget_finished()
        self._forget_result(editor, req.job_id)  # an old result under a reused id
        reserved = job_bytes(req)
        waiting = [j for j in superseded if j in self.queue]
        freed = sum(j.reserved for j in waiting)  # a queued live job's room passes to its successor
        self.budget.release(editor, freed)
        verdict = self.budget.reserve(editor, reserved)
        if verdict is not None:
            self.budget.reserve(editor, freed)  # given back just now: always fits again
            connection.send(JobError(job_id=req.job_id, code=verdict.code, message=verdict.message))
            return
        for old in waiting:
            old.reserved = 0
        seed = req.seed if req.seed is not None else secrets.randbelow(1 << 32)
        job = Job(owner=editor, id=req.job_id, request=req, seed=seed, reserved=reserved, live=req.live)
        editor.jobs[job.id] = job
        self._supersede(superseded, job)
        self.reposition()
        self.broadcast_status()

    def _supersede(self, superseded: list[Job], job: Job) -> None:
        """Queue ``job``; the live jobs it supersedes end (queued: at once, in place; running: at the next step)."""
        placed = False
        for old in superseded:
            old.superseded_by = old.superseded_by or job.id  # superseded again while stopping: the first one counts
            old.cancel.set()  # a running one stops at its next step; the worker reports it
            if not placed and self.queue.replace(old, job):
                placed = True
                self.finish(old, JobEvent.CANCELLED, old.cancelled())
            elif self.queue.remove(old):
                self.finish(old, JobEvent.CANCELLED, old.cancelled())
        if not placed:
            self.queue.push(job)

    def _refuse(self, editor: EditorState, req: Submit, replaced: int = 0) -> tuple[str, str, str] | None:
        if self.closing:
            return ErrorCode.SHUTTING_DOWN, "the server is shutting down", ""
        if len(editor.active_jobs) - replaced >= self.config.max_queued_per_editor:
            cap = self.config.max_queued_per_editor
            return ErrorCode.QUEUE_FULL, f"you already have {cap} jobs waiting; wait or cancel some", ""
        out = req.output_rect  # an upscale's result is larger than its image: that size counts
        if out.w * out.h > self.config.max_pixels:
            return (
                ErrorCode.INVALID_REQUEST,
                f"the result would be {out.w}×{out.h} pixels, more than this backend's max_pixels "
                f"({self.config.max_pixels}); use a smaller image or factor",
                "submit.upscale.factor",
            )
        try:
            self.engine.check(req)
        except (JobFailure, ProtocolError) as exc:
            return exc.code, exc.message, exc.field
        return None

    def cancel(self, editor: EditorState, job_id: str) -> None:
        job = editor.jobs.get(job_id)
        if job is None or job.state.finished:
            if editor.connection is not None:  # never reveal whether another editor has such a job
                editor.connection.send(
                    JobError(
                        job_id=job_id,
                        code=ErrorCode.NOT_FOUND,
                        message=f"you have no running or queued job {job_id!r}",
                        field="cancel.job_id",
                    )
                )
            return
        self._cancel_job(job)

    def _cancel_job(self, job: Job) -> None:
        job.cancel.set()  # a running job stops at its next step; the worker reports it
        if self.queue.remove(job):
            self.finish(job, JobEvent.CANCELLED, job.cancelled())
            self.reposition()

    def shutdown(self) -> None:
        """Refuse new work and cancel every job; running ones stop at their next step."""
        self.closing = True
        for editor in list(self.editors.values()):
            for job in editor.active_jobs:
                self._cancel_job(job)

    def reposition(self) -> None:
        """Send ``queued`` to every job whose place in the line changed."""
        for pos, job in enumerate(self.queue.order()):
            if job.position != pos:
                job.position = pos
                job.advance(JobEvent.QUEUED)
                self.emit(job, Queued(job_id=job.id, position=pos))

    # ------------------------------------------------------------------ a job's life on the worker

    def job_started(self, job: Job) -> None:
        """The worker took the job; the jobs behind it move up once its ``started`` is out."""
        job.position = -1
        job.advance(JobEvent.STARTED)
        self.running.add(job)
        self.broadcast_status()

    def announce_started(self, job: Job, message: Started) -> None:
        self.emit(job, message)
        self.reposition()

    def finish(self, job: Job, event: JobEvent, message: Message | None = None, result: Encoded | None = None) -> None:
        """The one way a job ends: its state, its event, its inputs released, its result kept."""
        if result is not None and job.superseded_by is not None:  # its last step ran before the newer job came
            event, message, result = JobEvent.CANCELLED, job.cancelled(), None
        was_running = job in self.running
        self.running.discard(job)
        job.advance(event)
        job.request = None  # the inputs are no longer needed
        if result is not None:
            self.budget.release(job.owner, job.reserved - result.size)  # room was reserved at submit
            job.reserved = result.size
            job.owner.undelivered[job.id] = result
            connection = job.owner.connection
            if job.owner.session_id not in self.editors:  # expired meanwhile: nobody will collect it
                self._forget_result(job.owner, job.id)
            elif connection is not None:
                connection.send_result(job.id)
        else:
            self.budget.release(job.owner, job.reserved)
            job.reserved = 0
            if message is not None:
                self.emit(job, message)
        if was_running:
            self.reposition()  # a job that failed before `started` leaves the line moving
        self.broadcast_status()

    def result_frame(self, editor: EditorState, job_id: str) -> Encoded | None:
        """The job's result, encoded once (each connection frames it for its editor)."""
        return editor.undelivered.get(job_id)

    def result_sent(self, editor: EditorState, job_id: str) -> None:
        """The result frame went out: now it may be forgotten."""
        self._forget_result(editor, job_id)

    def _forget_result(self, editor: EditorState, job_id: str) -> None:
        frame = editor.undelivered.pop(job_id, None)
        job = editor.jobs.get(job_id)
        if frame is not None and job is not None:
            self.budget.release(editor, job.reserved)
            job.reserved = 0

    # ------------------------------------------------------------------ routing (owner only)

    def emit(self, job: Job, message: Message) -> None:
        connection = job.owner.connection
        if connection is not None:
            connection.send(message, job_id=job.id)

    def emit_progress(self, job: Job, frame: bytes) -> None:
        connection = job.owner.connection
        if connection is not None and not job.state.finished:
            connection.send_latest(job.id, frame)

    # ------------------------------------------------------------------ status (the only broadcast)

    def device_status(self) -> tuple[DeviceStatus, ...]:
        return self.devices.status() if self.devices is not None else ()

    def status(self) -> Status:
        devices = self.device_status()
        loaded = dict.fromkeys(m for d in devices for m in d.loaded_models) if devices else self.engine.loaded_models()
        return Status(
            queue_length=len(self.queue),
            running=len(self.running),
            editors=sum(1 for e in self.editors.values() if e.connection is not None),
            loaded_models=tuple(loaded)[:64],
            device=self.engine.device_label(),
            devices=devices,
        )

    def broadcast_status(self) -> None:
        """Coalesce bursts of changes into one status message to every connected editor."""
        if self._status_pending:
            return
        self._status_pending = True

        def send() -> None:
            self._status_pending = False
            status = self.status()
            for editor in self.editors.values():
                if editor.connection is not None:
                    editor.connection.send(status)  # shaped for each editor's protocol version

        asyncio.get_running_loop().call_later(0.1, send)


def _name(editor: EditorState) -> str:
    """An editor's self-chosen name, safe for a log line (quoted, escaped, bounded)."""
    return repr(editor.name[:64])
