"""Which reply answers which fuzzed frame on one connection: the replies before a frame's marker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

FINAL = ("cancelled", "result", "job_error")


@dataclass(eq=False)
class InFlight:
    """A fuzzed frame on its way: its replies are those that arrive before the reply to its marker."""

    seq: int
    strategy: str
    mutation: str
    frame: bytes | str
    kind: str  # what the protocol's decoder makes of it: submit | cancel | status | other | silent (unknown type)
    own_id: str | None  # the job id the frame names, when it names one
    marker: str
    sent_at: float = field(default_factory=time.perf_counter)
    replies: Counter[str] = field(default_factory=Counter)


class Ledger:
    """One connection's frames in flight.

    The server answers one connection's frames in order, so every frame is followed by a marker (a
    cancel of a unique unknown id, answered by ``job_error``): what arrives before the marker's reply
    answers that frame. A submit is followed by a cancel of its job (so fuzz jobs never pile up);
    when the job is already running, that cancel is answered later, when the job stops: such
    cancels are awaited by job id.
    """

    def __init__(self) -> None:
        self.inflight: deque[InFlight] = deque()
        self.awaiting: dict[str, list[tuple[InFlight, str]]] = {}  # cancels of running jobs, by job id
        self.accepted: set[str] = set()  # job ids the server queued
        self.changed = asyncio.Event()
        self.closed = False
        self.progress = time.perf_counter()  # when a marker was last answered

    def on_reply(self, reply: dict[str, Any]) -> list[tuple[InFlight, str, str]]:
        """Feed one reply; returns what it settled: (frame, which row, "answered" | "unanswered")."""
        kind, job_id = reply.get("type"), reply.get("job_id")
        head = self.inflight[0] if self.inflight else None
        if kind == "queued" and isinstance(job_id, str):
            self.accepted.add(job_id)
        if head is not None and kind == "job_error" and job_id == head.marker:
            self.inflight.popleft()
            self.progress = time.perf_counter()
            return self._settle(head)
        own = head is not None and job_id is not None and job_id == head.own_id
        if isinstance(job_id, str) and kind in FINAL and job_id in self.awaiting and not own:
            return [(f, row, "answered") for f, row in self.awaiting.pop(job_id)]
        if head is None:
            return []
        if isinstance(job_id, str) and not own and (job_id in self.accepted or job_id in self.awaiting):
            return []  # an event of an earlier job (started, progress, a new queue position)
        if kind == "status" and head.kind != "status":
            return []  # a broadcast
        head.replies[f"{kind}:own" if own else str(kind)] += 1
        return []

    def _settle(self, f: InFlight) -> list[tuple[InFlight, str, str]]:
        r = f.replies
        if f.kind == "cancel" and not r and f.own_id in self.accepted:  # a cancel of a running job: later
            self.awaiting.setdefault(f.own_id, []).append((f, f.strategy))
            return []
        out = [] if f.kind == "silent" else [(f, f.strategy, "answered" if r else "unanswered")]
        if f.kind == "submit":  # its follow-up cancel
            own_final = r["cancelled:own"] + r["result:own"]
            own_errors = r["job_error:own"]
            others = sum(v for k, v in r.items() if not k.endswith(":own"))
            if own_final or own_errors >= 2 or (own_errors and (r["queued:own"] or others)):
                out.append((f, "follow-up cancel", "answered"))
            elif r["queued:own"]:  # the job is running: the cancel is answered when it stops
                assert f.own_id is not None
                self.awaiting.setdefault(f.own_id, []).append((f, "follow-up cancel"))
            else:
                out.append((f, "follow-up cancel", "unanswered"))
        return out
