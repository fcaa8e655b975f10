"""The workers, one per device, and where the next job runs.

*Which* job runs next is the fair queue's decision alone: a job leaves the queue only when a worker
is free, and it is always the queue's head, so no placement can let a later job overtake an
earlier one. *Where* it runs is decided here (:func:`place`): on a free worker that already holds
its model, else on the free worker holding the fewest models (loading there evicts the least),
the one free the longest among equals. A job never waits for a busy worker that holds its model.

A worker that dies (worker.py) is replaced by a new one on the same device, with its engine
renewed when a ``renew`` is given (a fresh pipeline cache); the other workers never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from sfumato.protocol import DeviceStatus

from .hub import EngineLike, Hub
from .jobs import Job
from .worker import Worker

log = logging.getLogger(__name__)

Renew = Callable[[EngineLike], EngineLike]  # a fresh engine on the old one's device (on a thread: it may load)


def place(job: Job, free: Sequence[Worker]) -> Worker:
    """The free worker ``job`` runs on (model affinity, then the least loaded)."""
    holding = [w for w in free if job.submit.model in w.models]
    return min(holding or free, key=lambda w: (len(w.models), w.free_since))


class Workers:
    def __init__(
        self, hub: Hub, engines: Sequence[EngineLike], renew: Renew | None = None, kind: type[Worker] = Worker
    ) -> None:
        """``kind``: the worker class (a Ray slot's names the replica it last ran on: cluster/remote.py)."""
        self.hub = hub
        self._renew = renew
        self._kind = kind
        self._changed = asyncio.Event()  # a worker became free, or a replacement started
        self._idle = asyncio.Event()
        self._renewing: set[asyncio.Task[None]] = set()
        self.all: list[Worker] = [self._start(engine, slot) for slot, engine in enumerate(engines)]
        self._update()

    def _start(self, engine: EngineLike, slot: int) -> Worker:
        return self._kind(self.hub, engine, f"worker-{slot}", on_free=self._freed, on_death=self._replace)

    def free(self) -> list[Worker]:
        return [w for w in self.all if not w.dead and w.current is None]

    def status(self) -> tuple[DeviceStatus, ...]:
        return tuple(w.status() for w in self.all)

    async def run(self) -> None:
        """Start the queue's next job whenever a worker is free."""
        while True:
            await self._until_free()
            job = await self.hub.queue.pop()
            await self._until_free()  # (only if the free worker died meanwhile)
            place(job, self.free()).give(job)
            self._update()

    async def _until_free(self) -> None:
        while not self.free():
            self._changed.clear()
            await self._changed.wait()

    def _freed(self, worker: Worker) -> None:
        self._update()

    def _update(self) -> None:
        self._changed.set()
        if any(w.current is not None for w in self.all):
            self._idle.clear()
        else:
            self._idle.set()

    async def idle(self, timeout: float) -> bool:
        """Wait until no worker runs a job (at most ``timeout`` s); whether none does."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()

    # ------------------------------------------------------------------ replacing a dead worker

    def _replace(self, dead: Worker) -> None:
        self._update()
        self.hub.broadcast_status()  # its device shows "starting"
        if self.hub.closing:
            return
        task = asyncio.create_task(self._replacement(dead))
        self._renewing.add(task)
        task.add_done_callback(self._renewing.discard)

    async def _replacement(self, dead: Worker) -> None:
        engine = dead.engine
        if self._renew is not None:
            try:
                engine = await asyncio.to_thread(self._renew, dead.engine)
            except Exception:
                log.exception("the engine on %s could not be renewed; its worker stays down", dead.label)
                return
        if self.hub.closing:
            return
        slot = self.all.index(dead)
        self.all[slot] = self._start(engine, slot)
        log.info("a new worker runs on %s", self.all[slot].label)
        self._update()
        self.hub.broadcast_status()

    # ------------------------------------------------------------------ shutdown

    async def stop(self, timeout: float) -> bool:
        """End every worker's thread once its job is done (at most ``timeout`` s); whether all have ended."""
        for task in list(self._renewing):
            task.cancel()
        live = [w for w in self.all if not w.dead]
        for worker in live:
            worker.stop()
        ended = await asyncio.gather(*(w.join(timeout) for w in live))
        return all(ended)
