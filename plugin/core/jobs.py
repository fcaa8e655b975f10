"""The editor's view of its jobs: what each one holds for the editor (document, previews, result).

Their states are the session's :class:`JobStates`, which the connection moves through the shared
state table as events arrive; a tracked job shows the state its latest event left it in."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sfumato.protocol import (
    JobError,
    JobState,
    JobStates,
    JobStatus,
    Message,
    Progress,
    Queued,
    Result,
    Started,
    Submit,
)


@dataclass(eq=False)
class TrackedJob:
    submit: Submit
    document: object = None  # opaque: which editor document the result belongs to
    state: JobState = JobState.QUEUED
    position: int | None = None
    step: int = 0
    total: int = 0
    seeds: tuple[int, ...] = ()  # (pixels are not kept: the listener takes them from the event)
    error: JobError | None = None
    started: Started | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.submit.job_id

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


FINISHED_KEPT = 32  # finished jobs remembered, the newest: a live painting ends a job every few seconds


class JobTracker:
    def __init__(self) -> None:
        self.jobs: dict[str, TrackedJob] = {}
        self.states = JobStates()  # moved by the connection (ClientConnection.receive and send)
        self._finished: deque[str] = deque()  # settled jobs, oldest first

    def add(self, submit: Submit, document: object = None) -> TrackedJob:
        job = TrackedJob(submit, document)
        self.jobs[job.id] = job
        return job

    def active(self) -> list[TrackedJob]:
        return [j for j in list(self.jobs.values()) if not j.state.finished]  # (a copy: the GUI thread reads)

    def settle(self, job: TrackedJob) -> None:
        """A finished job whose last event went to the listener: only the newest FINISHED_KEPT finished jobs
        are remembered. The job itself is not changed: the editor's GUI thread may still be reading it."""
        if job.id in self.jobs and job.id not in self._finished:
            self._finished.append(job.id)
        while len(self._finished) > FINISHED_KEPT:
            old = self._finished.popleft()
            self.jobs.pop(old, None)
            self.states.forget(old)

    def restarted(self, job: TrackedJob) -> None:
        """Submitted again to a backend that had lost it: it waits from the start."""
        job.step, job.position = 0, None
        self._follow(job)

    def apply(self, msg: Message) -> TrackedJob | None:
        """Update the job ``msg`` is about; returns it, or ``None`` for an unknown job id."""
        job = self.jobs.get(getattr(msg, "job_id", ""))
        if job is None:
            return None
        was_finished = job.state.finished
        self._follow(job)
        if isinstance(msg, (JobStatus, Queued)):
            job.position = msg.position
        elif isinstance(msg, Started):
            job.started, job.total, job.seeds, job.position = msg, msg.steps, msg.seeds, None
        elif isinstance(msg, Progress):
            job.step, job.total = msg.step, msg.total
        elif isinstance(msg, Result):
            job.seeds, job.step = msg.seeds, job.total
        elif isinstance(msg, JobError) and not was_finished and job.state is JobState.FAILED:
            job.error = msg
        return job

    def _follow(self, job: TrackedJob) -> None:
        state = self.states.get(job.id)
        if state is not None:  # None: a job this session's backend does not know (yet)
            job.state = state
