"""A job as the backend tracks it, and the state each editor keeps across reconnects."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sfumato.protocol import Cancelled, Encoded, JobEvent, JobState, Submit, advance

if TYPE_CHECKING:
    from .hub import ConnectionLike


@dataclass(eq=False)
class Job:
    owner: EditorState
    id: str
    request: Submit | None  # the inputs; dropped as soon as the job is finished
    seed: int
    reserved: int = 0  # bytes charged to the memory budget (see budget.py)
    state: JobState = JobState.QUEUED
    position: int = -1
    cancel: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)
    live: bool = False  # a live job: a newer live job of its owner supersedes it
    superseded_by: str | None = None  # the live job that replaced it; it ends cancelled, never with a result

    @property
    def submit(self) -> Submit:
        assert self.request is not None, f"job {self.id} is finished: its inputs were released"
        return self.request

    def advance(self, event: JobEvent) -> None:
        self.state = advance(self.state, event)

    def cancelled(self) -> Cancelled:
        """How this job's cancel is told to its owner: superseded, or cancelled as asked."""
        return Cancelled(job_id=self.id, superseded_by=self.superseded_by)


@dataclass(eq=False)
class EditorState:
    """One editor's session: its jobs and undelivered results; outlives its connection for ``resume_ttl_s``."""

    session_id: str
    name: str
    connection: ConnectionLike | None = None
    jobs: dict[str, Job] = field(default_factory=dict)
    undelivered: dict[str, Encoded] = field(default_factory=dict)  # job id → its Result, encoded once
    disconnected_at: float | None = None

    @property
    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.state.finished]

    def forget_finished(self) -> None:
        """Drop finished jobs whose results were delivered (their ids may be reused)."""
        for jid in [j.id for j in self.jobs.values() if j.state.finished and j.id not in self.undelivered]:
            del self.jobs[jid]
