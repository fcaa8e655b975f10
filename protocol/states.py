"""The job state machine: one table, used by the backend's queue and by the editor's job tracker."""

from __future__ import annotations

from enum import Enum

from .errors import IllegalTransition


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobEvent(str, Enum):
    QUEUED = "queued"  # (re)positioned in the queue
    STARTED = "started"
    PROGRESS = "progress"
    RESULT = "result"
    ERROR = "error"
    CANCELLED = "cancelled"


Q, R, D, F, C = JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLED

# (state, event) → next state. Anything not listed is illegal.
TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (Q, JobEvent.QUEUED): Q,
    (Q, JobEvent.STARTED): R,
    (Q, JobEvent.ERROR): F,
    (Q, JobEvent.CANCELLED): C,
    (R, JobEvent.PROGRESS): R,
    (R, JobEvent.RESULT): D,
    (R, JobEvent.ERROR): F,
    (R, JobEvent.CANCELLED): C,
}


def advance(state: JobState, event: JobEvent) -> JobState:
    """The state after ``event``; raises :class:`IllegalTransition` naming both if it is not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state.value, event.value) from None
