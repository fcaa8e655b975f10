"""What the docker and the window say of the connection, the jobs and the last error: one wording for all."""

from __future__ import annotations

from collections.abc import Sequence

from sfumato.protocol import JobState

from .client import ConnectionChanged
from .jobs import TrackedJob

STATES = {"connected": "Connected", "connecting": "Connecting…", "disconnected": "Disconnected", "failed": "Refused"}


def connection_line(conn: ConnectionChanged) -> str:
    """``Connected — cuda:0 (…)``, or the state and why (``Refused: wrong token``)."""
    text = STATES.get(conn.state, conn.state)
    if conn.welcome is not None and conn.state == "connected":
        text += f" — {conn.welcome.device}"
    if conn.detail and conn.state != "connected":
        text += f": {conn.detail}"
    return text


def queue_line(jobs: Sequence[TrackedJob]) -> str:
    """How many of this editor's jobs are unfinished, and the best queue position among them."""
    queued = [j.position for j in jobs if j.state == JobState.QUEUED and j.position is not None]
    if queued:
        return f"{len(jobs)} job(s); next in queue at position {min(queued) + 1}"
    return f"{len(jobs)} job(s) running" if jobs else ""


def progress_of(jobs: Sequence[TrackedJob]) -> tuple[int, int, str]:
    """The progress bar: (step, total, its words) of the first running job — or, with none running, an empty
    bar that says so (a bar reading 0% after a finished job looked like a failure)."""
    running = [j for j in jobs if j.state == JobState.RUNNING]
    if running:
        job = running[0]
        return job.step, max(1, job.total), f"step {job.step} of {job.total}"
    return 0, 1, "waiting for a job" if jobs else "idle"


def message_line(last_error: str, messages: Sequence[str]) -> str:
    """The editor's own refusal (if any) above the backend's latest word."""
    return "\n".join([*([last_error] if last_error else []), *messages[-1:]])
