"""The front process's side of a Ray Serve replica: an engine that runs each job on the cluster.

A :class:`RayEngine` is one *slot* of the deployment (as many slots as replicas at most), run by an
ordinary worker (server/worker.py), so the hub, the fair queue, cancel, ownership and status work
as they do with local devices. On its worker's thread, :meth:`RayEngine.run` sends the request to
the deployment (Serve picks a free replica) and feeds the streamed events to the worker's hooks.

- Pixels cross once: the request is put into Ray's object store once and the replica reads it
  from there (a retry reuses the same object).
- Cancel: the hooks are polled every ``CANCEL_POLL_S`` while waiting for the next event; a cancel
  cancels the streamed response, which stops the replica's engine at its next step (replica.py).
- A replica that dies mid-job (its process, its machine, its device) gets the job retried once on
  another replica, from the start; a second death ends the job with ``worker_failed``.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from sfumato.protocol import ErrorCode, ModelInfo, Submit

from ..engine import EngineResult, JobCancelled
from ..errors import JobFailure
from ..server.hub import EngineLike
from ..server.worker import Worker
from .replica import ENDINGS, Event

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.02  # how often a waiting slot looks at its job's cancel flag
ATTEMPTS = 2  # a job whose replica dies is run once more elsewhere, then fails with worker_failed


class ReplicaLost(Exception):
    """The replica running the job died (or its machine did)."""


def _replica_lost(exc: BaseException) -> bool:
    from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError
    from ray.serve.exceptions import ReplicaUnavailableError

    return isinstance(exc, (RayActorError, WorkerCrashedError, NodeDiedError, ReplicaUnavailableError))


class RayEngine:
    """One slot of the deployment. ``checker`` is a local engine that answers for the catalogue and checks
    requests before they are queued (it never runs a job); ``handle`` is the deployment's handle."""

    def __init__(self, checker: EngineLike, handle: Any, slot: int) -> None:
        self.checker, self.handle, self.slot = checker, handle, slot
        self.replica = f"ray slot {slot}: no job yet"  # then the replica running (or that ran) its last job
        self.loaded: list[str] = []

    def check(self, req: Submit) -> Any:
        return self.checker.check(req)

    def models(self) -> list[ModelInfo]:
        return self.checker.models()

    def device_label(self) -> str:
        return self.replica

    def loaded_models(self) -> list[str]:
        return list(self.loaded)

    def run(self, req: Submit, seed: int, hooks: Any) -> EngineResult:
        import ray

        request = ray.put(req)  # the pixels cross once; a retry reads the same object
        announced = False
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._stream(request, seed, hooks, announced)
            except ReplicaLost as exc:
                announced = True  # the retry's `started` is the same: the editor hears it once
                where = self.replica
                if attempt == ATTEMPTS:
                    raise JobFailure(
                        f"the job's replica died twice ({where}, last: {exc}); the cluster replaces them: "
                        "submit the job again",
                        "",
                        ErrorCode.WORKER_FAILED,
                    ) from None
                log.warning("job %s: its replica died (%s: %s); retrying on another", req.job_id, where, exc)
        raise AssertionError("unreachable")

    def _stream(self, request: Any, seed: int, hooks: Any, announced: bool) -> EngineResult:
        """One attempt: the job's events, fed to ``hooks`` as they arrive, until its ending."""
        response = self.handle.options(stream=True).generate.remote(request, seed)
        events: queue.SimpleQueue[Event | BaseException | None] = queue.SimpleQueue()
        threading.Thread(target=_pump, args=(response, events), name="sfumato-ray-stream", daemon=True).start()
        started = False
        while True:
            if hooks.cancelled():
                response.cancel()  # the replica stops at its next step
                raise JobCancelled
            try:
                event = events.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                continue
            if event is None:
                raise ReplicaLost("the replica ended the job's stream without an ending")
            if isinstance(event, BaseException):
                if _replica_lost(event):
                    raise ReplicaLost(f"{type(event).__name__}: {event}") from event
                raise event
            kind = event[0]
            if kind == "replica":
                self.replica, self.loaded = f"ray slot {self.slot}: {event[1]}"[:128], event[2]
            elif kind == "started":
                started = True
                if not announced:
                    hooks.started(*event[1:])
            elif kind == "progress" and started:
                hooks.progress(*event[1:])
            elif kind == "preview" and started:
                hooks.preview(event[1])
            elif kind in ENDINGS:
                return _ending(event, self)


def _ending(event: Event, engine: RayEngine) -> EngineResult:
    kind = event[0]
    if kind == "result":
        engine.loaded = event[2]
        result: EngineResult = event[1]
        return result
    if kind == "cancelled":
        raise JobCancelled
    if kind == "failed":
        raise JobFailure(event[2], event[3], event[1])
    raise RuntimeError(f"on {engine.replica}: {event[1]}")  # the worker reports it as `internal`


def _pump(response: Any, events: queue.SimpleQueue[Event | BaseException | None]) -> None:
    """On its own thread: the streamed events into ``events``, then None — or the failure that ended them."""
    try:
        for event in response:
            events.put(event)
    except BaseException as exc:
        events.put(exc)
        return
    events.put(None)


class RayWorker(Worker):
    """A local worker for one slot: its device line names the replica that ran its last job."""

    def status(self) -> Any:
        self.label = self.engine.device_label()  # a str attribute set on the worker's thread
        return super().status()
