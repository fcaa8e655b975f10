"""An editor's view of its session's jobs: every state change goes through the table in states.py.

The backend moves its own jobs with :func:`advance` as it sends their events; the editor moves its
copy with :class:`JobStates` as it receives them, so both sides hold the same state for a job.
"""

from __future__ import annotations

from .errors import ErrorCode, IllegalTransition
from .messages import Cancelled, JobError, JobStatus, Message, Progress, Queued, Result, Started
from .states import TRANSITIONS, JobEvent, JobState, advance

EVENTS: dict[type[Message], JobEvent] = {
    Queued: JobEvent.QUEUED,
    Started: JobEvent.STARTED,
    Progress: JobEvent.PROGRESS,
    Result: JobEvent.RESULT,
    JobError: JobEvent.ERROR,
    Cancelled: JobEvent.CANCELLED,
}


def reachable(start: JobState, goal: JobState) -> bool:
    """Whether some sequence of legal events leads from ``start`` to ``goal`` (itself included)."""
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (before, _), after in TRANSITIONS.items():
            if before is state and after not in seen:
                seen.add(after)
                todo.append(after)
    return goal in seen


class JobStates:
    """Job id → state for the jobs one session submitted. Outlives a connection only when it is resumed."""

    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}
        self._replays: set[str] = set()  # reported done after a resume: their result is replayed next

    def get(self, job_id: str) -> JobState | None:
        return self._states.get(job_id)

    def submitted(self, job_id: str) -> JobState:
        """A submit went out: the backend starts a new job under this id."""
        self._replays.discard(job_id)
        self._states[job_id] = JobState.QUEUED
        return JobState.QUEUED

    def forget(self, job_id: str) -> None:
        """A finished job the editor no longer tracks: later events about it concern no job of this session."""
        self._states.pop(job_id, None)
        self._replays.discard(job_id)

    def clear(self) -> None:
        """A welcome that did not resume: the backend knows none of this session's jobs."""
        self._states.clear()
        self._replays.clear()

    def apply(self, message: Message) -> JobState | None:
        """The state after ``message``, or ``None`` if it concerns no job of this session.

        Raises :class:`IllegalTransition` for an event the job's state does not allow (it changes nothing)."""
        job_id = getattr(message, "job_id", None)
        state = self._states.get(job_id) if isinstance(job_id, str) else None
        if state is None or job_id is None:
            return None
        if isinstance(message, JobStatus):
            return self._resync(job_id, state, JobState(message.state))
        event = EVENTS.get(type(message))
        if event is None:  # an `error` naming a job never changes its state
            return state
        if event is JobEvent.RESULT and job_id in self._replays:
            self._replays.discard(job_id)  # the result the job_status announced: already done
            return state
        if event is JobEvent.ERROR and state.finished and getattr(message, "code", "") == ErrorCode.NOT_FOUND:
            return state  # a cancel that raced the job's end: nothing left to change
        self._states[job_id] = advance(state, event)
        return self._states[job_id]

    def _resync(self, job_id: str, state: JobState, reported: JobState) -> JobState:
        """After a resume the backend reports where a job got to; it must be reachable from here."""
        if not reachable(state, reported):
            raise IllegalTransition(state.value, f"job_status {reported.value}")
        if reported is JobState.DONE and state is not JobState.DONE:
            self._replays.add(job_id)  # finished while we were away: its result follows
        self._states[job_id] = reported
        return reported
