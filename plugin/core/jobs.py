"""The editor's view of its jobs, kept in step with the backend's events through the shared state table."""

from __future__ import annotations

from dataclasses import dataclass, field

from sfumato.protocol import (
    Cancelled,
    Image,
    JobError,
    JobEvent,
    JobState,
    JobStatus,
    Message,
    Progress,
    Queued,
    Result,
    Started,
    Submit,
    advance,
)


@dataclass(eq=False)
class TrackedJob:
    submit: Submit
    document: object = None  # opaque: which editor document the result belongs to
    state: JobState = JobState.QUEUED
    position: int | None = None
    step: int = 0
    total: int = 0
    seeds: tuple[int, ...] = ()
    preview: Image | None = None
    result: Result | None = None
    error: JobError | None = None
    started: Started | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.submit.job_id

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


class JobTracker:
    def __init__(self) -> None:
        self.jobs: dict[str, TrackedJob] = {}

    def add(self, submit: Submit, document: object = None) -> TrackedJob:
        job = TrackedJob(submit, document)
        self.jobs[job.id] = job
        return job

    def active(self) -> list[TrackedJob]:
        return [j for j in self.jobs.values() if not j.state.finished]

    def apply(self, msg: Message) -> TrackedJob | None:
        """Update the job ``msg`` is about; returns it, or ``None`` for an unknown job id."""
        job = self.jobs.get(getattr(msg, "job_id", ""))
        if job is None:
            return None
        if isinstance(msg, JobStatus):  # after a resume the backend's word is the truth
            job.state = JobState(msg.state)
            job.position = msg.position
        elif isinstance(msg, Queued):
            job.state = advance(job.state, JobEvent.QUEUED)
            job.position = msg.position
        elif isinstance(msg, Started):
            job.state = advance(job.state, JobEvent.STARTED)
            job.started, job.total, job.seeds, job.position = msg, msg.steps, msg.seeds, None
        elif isinstance(msg, Progress):
            job.state = advance(job.state, JobEvent.PROGRESS)
            job.step, job.total = msg.step, msg.total
            if msg.preview is not None:
                job.preview = msg.preview
        elif isinstance(msg, Result):
            if not (job.state == JobState.DONE and job.result is None):  # a result replayed after resume
                job.state = advance(job.state, JobEvent.RESULT)
            job.result, job.seeds, job.preview = msg, msg.seeds, None
            job.step = job.total
        elif isinstance(msg, JobError):
            if job.state.finished:
                return job  # e.g. a late "not found" for a cancel that raced the result
            job.state = advance(job.state, JobEvent.ERROR)
            job.error = msg
        elif isinstance(msg, Cancelled):
            job.state = advance(job.state, JobEvent.CANCELLED)
            job.preview = None
        return job
