"""An A1111 client as an editor of the hub: its jobs, what the worker reports of them, its results.

Each client identity (remote address + basic-auth user) is attached to the hub like a websocket
session, so its jobs take turns with every other editor's in the fair queue and its memory is
charged to its own budget. The hub's events arrive here instead of on a socket: a job's end
resolves the future its HTTP request awaits; progress and previews are kept latest-wins, as
encoded frames, and decoded only when the client asks for ``/sdapi/v1/progress``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeAlias

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancelled,
    Error,
    Hello,
    JobError,
    Message,
    Progress,
    Queued,
    Started,
    Submit,
    encode,
)

from ..server.hub import Hub
from ..server.jobs import EditorState

log = logging.getLogger(__name__)

Outcome: TypeAlias = "JobError | Cancelled | None"  # None: the result is waiting in the hub


@dataclass(eq=False)
class Watch:
    """One job of an HTTP request, as the hub reports it."""

    job_id: str
    outcome: asyncio.Future[Outcome]
    previewless_bytes: int  # the longest progress frame of this job that can hold no preview
    position: int = -1
    started: Started | None = None
    progress: bytes | None = None  # the latest progress frame
    preview: bytes | None = None  # the latest progress frame that carried a preview
    preview_png: tuple[bytes, str | None] | None = None  # (that frame, its PNG for /progress): encoded once

    def finish(self, outcome: Outcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)


@dataclass(eq=False)
class Generation:
    """One HTTP request's jobs, in the order their images are answered."""

    watches: list[Watch]
    started_at: float = field(default_factory=time.monotonic)
    timestamp: str = "0"  # A1111's job_timestamp, for /sdapi/v1/progress
    interrupted: bool = False


class Refused(Exception):
    """The hub refused one of a request's jobs (limits, budget, model, shutdown)."""

    def __init__(self, refusal: JobError) -> None:
        self.refusal = refusal
        super().__init__(refusal.message)


class HttpClient:
    """Implements the hub's ``SessionLike``: what the hub sends an editor lands here."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.editor: EditorState | None = None
        self.watches: dict[str, Watch] = {}
        self.generations: list[Generation] = []
        self.model: str | None = None  # chosen with POST /sdapi/v1/options; None: the server's default
        self.body_slot = asyncio.Semaphore(1)  # one request body read and decoded at a time per client
        self.last_seen = time.monotonic()

    @property
    def idle(self) -> bool:
        return not self.generations and not self.body_slot.locked()

    # ------------------------------------------------------------------ what the hub sends (SessionLike)

    def send(self, message: Message, job_id: str | None = None) -> None:
        watch = self.watches.get(getattr(message, "job_id", None) or "")
        if watch is None:  # also status broadcasts: A1111 clients poll /sdapi/v1/progress instead
            return
        if isinstance(message, Queued):
            watch.position = message.position
        elif isinstance(message, Started):
            watch.started, watch.position = message, -1
        elif isinstance(message, (JobError, Cancelled)):
            watch.finish(message)
        elif isinstance(message, Error):  # about a job, but not its end (a duplicate id): cannot happen here
            log.warning("A1111 client %s: %s", self.key, message.message)

    def send_latest(self, job_id: str, frame: bytes) -> None:
        watch = self.watches.get(job_id)
        if watch is not None:
            watch.progress = frame
            if len(frame) > watch.previewless_bytes:  # told apart by size: no decoding on the event loop
                watch.preview = frame

    def send_result(self, job_id: str) -> None:
        watch = self.watches.get(job_id)
        if watch is not None:
            watch.finish(None)

    def close(self, reason: str) -> None:
        """The hub closes sessions only when they are replaced on resume, which HTTP clients never do."""

    # ------------------------------------------------------------------ a request's jobs

    def start(self, hub: Hub, submits: list[Submit]) -> Generation:
        """Queue a request's jobs; if the hub refuses one, the others are cancelled and the refusal raised."""
        assert self.editor is not None
        loop = asyncio.get_running_loop()
        generation = Generation([])
        self.generations.append(generation)
        for req in submits:
            longest = len(encode(Progress(job_id=req.job_id, step=10_000, total=10_000)))
            watch = Watch(req.job_id, loop.create_future(), longest)
            self.watches[req.job_id] = watch
            generation.watches.append(watch)
            try:
                hub.submit(self.editor, req)
            except Exception:  # a bug: no job of this request may stay queued or watched
                self.end(hub, generation)
                raise
            refusal = watch.outcome.result() if watch.outcome.done() else None
            if isinstance(refusal, JobError):
                self.end(hub, generation)
                raise Refused(refusal)
        return generation

    async def wait(self, generation: Generation) -> None:
        await asyncio.wait([w.outcome for w in generation.watches])

    def interrupt(self, hub: Hub) -> int:
        """Cancel every unfinished job of this client (queued ones at once, a running one within a step)."""
        count = 0
        for generation in self.generations:
            generation.interrupted = True
            for watch in generation.watches:
                if self._active(watch.job_id):
                    assert self.editor is not None
                    hub.cancel(self.editor, watch.job_id)
                    count += 1
        return count

    def end(self, hub: Hub, generation: Generation) -> None:
        """The request is answered (or gone): cancel what still runs, release results, stop watching."""
        editor = self.editor
        assert editor is not None
        for watch in generation.watches:
            if self._active(watch.job_id):
                hub.cancel(editor, watch.job_id)
            if watch.job_id in editor.undelivered:
                hub.result_sent(editor, watch.job_id)  # releases its memory budget
            self.watches.pop(watch.job_id, None)
        if generation in self.generations:
            self.generations.remove(generation)
        self.last_seen = time.monotonic()

    def _active(self, job_id: str) -> bool:
        job = self.editor.jobs.get(job_id) if self.editor is not None else None
        return job is not None and not job.state.finished


class Clients:
    """The A1111 clients known to the hub, at most ``limit``; idle ones make room for new ones."""

    def __init__(self, hub: Hub, limit: int) -> None:
        self.hub, self.limit = hub, limit
        self._clients: OrderedDict[str, HttpClient] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, key: str) -> HttpClient | None:
        """The client of this identity, attached to the hub; None when ``limit`` busy clients exist."""
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= self.limit and not self._evict_one():
                return None
            client = self._clients[key] = HttpClient(key)
            hello = Hello(version=PROTOCOL_VERSION, client=f"A1111 API {key}"[:128], kind="other")
            self.hub.attach(hello, client)
            log.info("A1111 client %s: first request", key)
        self._clients.move_to_end(key)
        client.last_seen = time.monotonic()
        return client

    def _evict_one(self) -> bool:
        for key, client in self._clients.items():  # least recently used first
            if client.idle:
                del self._clients[key]
                self.hub.detach(client)  # holds no jobs: the hub forgets it after resume_ttl_s
                return True
        return False
