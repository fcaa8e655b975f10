"""The hub: which editors exist, which jobs are theirs, and where every event goes.

Every job event goes to the job's owner only. The only broadcast is the server status (queue
length, running jobs, loaded models, device), and it is sent explicitly by :meth:`broadcast_status`.
All methods run on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Protocol

from sfumato.protocol import (
    Cancelled,
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
    Status,
    Submit,
    encode,
)

from ..config import Config
from .jobs import EditorState, Job
from .queue import FairQueue

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    def check(self, req: Submit) -> Any: ...
    def run(self, req: Submit, seed: int, hooks: Any) -> Any: ...
    def device_label(self) -> str: ...
    def models(self) -> list[ModelInfo]: ...
    def loaded_models(self) -> list[str]: ...


class SessionLike(Protocol):
    editor: EditorState | None

    def send(self, message: Message, job_id: str | None = None) -> None: ...
    def send_frame(self, frame: bytes, job_id: str | None = None) -> None: ...
    def send_latest(self, job_id: str, frame: bytes) -> None: ...
    def send_result(self, job_id: str) -> None: ...
    def close(self, reason: str) -> None: ...


class Hub:
    def __init__(self, config: Config, engine: EngineLike) -> None:
        self.config = config
        self.engine = engine
        self.queue = FairQueue()
        self.editors: dict[str, EditorState] = {}
        self.running: set[Job] = set()
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

    # ------------------------------------------------------------------ editors

    def attach(self, hello: Hello, session: SessionLike) -> tuple[EditorState, bool]:
        """Bind a connection to a new editor state, or to its earlier one when resuming."""
        editor = self.editors.get(hello.resume) if hello.resume else None
        resumed = editor is not None
        if editor is None:
            editor = EditorState(session_id=secrets.token_urlsafe(24), name=hello.client)
            self.editors[editor.session_id] = editor
        elif editor.session is not None:  # the same editor reconnected before we noticed the drop
            editor.session.close("replaced by a newer connection of the same editor")
        editor.session = session
        editor.disconnected_at = None
        session.editor = editor
        return editor, resumed

    def replay(self, editor: EditorState) -> None:
        """After a resume: the state of every job, then the results that finished meanwhile."""
        session = editor.session
        assert session is not None
        for job in editor.jobs.values():
            session.send(
                JobStatus(job_id=job.id, state=job.state.value, position=job.position if job.position >= 0 else None)
            )
        for job_id in editor.undelivered:
            session.send_result(job_id)

    def detach(self, session: SessionLike) -> None:
        editor = session.editor
        if editor is not None and editor.session is session:
            editor.session = None
            editor.disconnected_at = time.monotonic()
        self.broadcast_status()

    def expire(self) -> None:
        """Forget editors gone longer than the resume TTL: cancel their jobs, drop their results."""
        now = time.monotonic()
        for sid, editor in list(self.editors.items()):
            if (
                editor.session is None
                and editor.disconnected_at is not None
                and now - editor.disconnected_at > self.config.resume_ttl_s
            ):
                for job in editor.active_jobs:
                    self._cancel_job(job)
                del self.editors[sid]
        self._bound_results()

    def _bound_results(self) -> None:
        """Keep undelivered results within the memory budget, dropping the oldest first."""
        budget = self.config.result_memory_mib << 20
        stored = [
            (job.created, e, job.id)
            for e in self.editors.values()
            for job in e.jobs.values()
            if job.id in e.undelivered
        ]
        total = sum(len(e.undelivered[jid]) for _, e, jid in stored)
        for _, editor, jid in sorted(stored, key=lambda t: t[0]):
            if total <= budget:
                break
            total -= len(editor.undelivered.pop(jid))
            log.warning("dropped the undelivered result of job %s (result memory budget)", jid)

    # ------------------------------------------------------------------ jobs

    def submit(self, editor: EditorState, req: Submit) -> None:
        session = editor.session
        assert session is not None
        fail = None
        if self.closing:
            fail = (ErrorCode.SHUTTING_DOWN, "the server is shutting down", "")
        elif req.job_id in editor.jobs and not editor.jobs[req.job_id].state.finished:
            fail = (ErrorCode.DUPLICATE_JOB, f"job id {req.job_id!r} is already in use", "submit.job_id")
        elif len(editor.active_jobs) >= self.config.max_queued_per_editor:
            fail = (
                ErrorCode.QUEUE_FULL,
                f"you already have {self.config.max_queued_per_editor} jobs waiting; wait or cancel some",
                "",
            )
        elif req.batch_size > self.config.max_batch:
            fail = (ErrorCode.TOO_LARGE, f"batch size is limited to {self.config.max_batch}", "submit.batch_size")
        elif len(req.controls) > self.config.max_controls:
            fail = (ErrorCode.TOO_LARGE, f"at most {self.config.max_controls} controls per job", "submit.controls")
        if fail is None:
            try:
                self.engine.check(req)
            except ProtocolError as exc:
                fail = (exc.code, exc.message, exc.field)
        if fail is not None:
            session.send(JobError(job_id=req.job_id, code=fail[0], message=fail[1], field=fail[2]))
            return
        editor.forget_finished()
        editor.undelivered.pop(req.job_id, None)
        job = Job(owner=editor, submit=req, seed=req.seed if req.seed is not None else secrets.randbelow(1 << 32))
        editor.jobs[job.id] = job
        self.queue.push(job)
        self.reposition()
        self.broadcast_status()

    def cancel(self, editor: EditorState, job_id: str) -> None:
        job = editor.jobs.get(job_id)
        if job is None or job.state.finished:
            if editor.session is not None:  # never reveal whether another editor has such a job
                editor.session.send(
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
            job.advance(JobEvent.CANCELLED)
            self.emit(job, Cancelled(job_id=job.id))
            self.reposition()
            self.broadcast_status()

    def reposition(self) -> None:
        """Send ``queued`` to every job whose place in the line changed."""
        for pos, job in enumerate(self.queue.order()):
            if job.position != pos:
                job.position = pos
                job.advance(JobEvent.QUEUED)
                self.emit(job, Queued(job_id=job.id, position=pos))

    # ------------------------------------------------------------------ routing (owner only)

    def emit(self, job: Job, message: Message) -> None:
        session = job.owner.session
        if session is not None:
            session.send(message, job_id=job.id)

    def emit_progress(self, job: Job, frame: bytes) -> None:
        session = job.owner.session
        if session is not None:
            session.send_latest(job.id, frame)

    def deliver(self, job: Job, frame: bytes) -> None:
        job.owner.undelivered[job.id] = frame
        self._bound_results()
        session = job.owner.session
        if session is not None and job.id in job.owner.undelivered:
            session.send_result(job.id)

    # ------------------------------------------------------------------ status (the only broadcast)

    def status(self) -> Status:
        return Status(
            queue_length=len(self.queue),
            running=len(self.running),
            editors=sum(1 for e in self.editors.values() if e.session is not None),
            loaded_models=tuple(self.engine.loaded_models()[:64]),
            device=self.engine.device_label(),
        )

    def broadcast_status(self) -> None:
        """Coalesce bursts of changes into one status message to every connected editor."""
        if self._status_pending:
            return
        self._status_pending = True

        def send() -> None:
            self._status_pending = False
            frame = encode(self.status())
            for editor in self.editors.values():
                if editor.session is not None:
                    editor.session.send_frame(frame)

        asyncio.get_running_loop().call_later(0.1, send)
