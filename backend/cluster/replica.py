"""The engine as a Ray Serve deployment: one replica per GPU, each running one job at a time.

A replica builds its own engine (its own catalogue scan and pipeline cache, on the GPU Ray gave it)
and streams each job's events back to the front process as they happen (:class:`Event` tuples):
``started``, ``progress``, ``preview``, then ``result`` — or ``failed`` (a typed refusal, in words
for the painter) or ``cancelled``. A cancelled response (the front cancels it when the painter
cancels) sets the job's cancel flag, which the engine reads at every step; the request ends only
once the engine has stopped, so a replica never runs two jobs at once.

A replica whose device is lost ends its process: Serve starts a new one, and the front retries the
job elsewhere (remote.py). Nothing here is imported unless ``sfumato serve --ray`` is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

from sfumato.protocol import Image, ProtocolError, Submit

from ..config import Config
from ..devices import is_device_lost
from ..engine import JobCancelled
from ..errors import JobFailure
from ..server.hub import EngineLike
from ..server.worker import PROGRESS_INTERVAL_S

log = logging.getLogger(__name__)

Event = tuple[Any, ...]  # ("started", steps, steps_requested, w, h, seeds) · ("progress", step, total) · …
ENDINGS = ("result", "failed", "cancelled", "error")  # the last event of a job
EngineFactory = Callable[[Config], EngineLike]  # builds a replica's engine, on the replica (picklable)


def replica_engine(config: Config) -> EngineLike:
    """The engine of one replica: the device Ray assigned (its GPU, else the CPU), the config's models."""
    from ..main import build_engines

    return build_engines(config)[0]


class _Hooks:
    """Engine callbacks on the replica's job thread: events into the stream, the cancel flag out of it."""

    def __init__(self, req: Submit, put: Callable[[Event], None], cancel: threading.Event) -> None:
        settings = req.preview
        self.interval = 1.0 / settings.max_per_second if settings.enabled and settings.max_per_second > 0 else None
        self.put, self.cancel = put, cancel
        self.last_preview = self.last_progress = 0.0
        self.step = (0, 0)

    def started(self, steps: int, steps_requested: int, width: int, height: int, seeds: list[int]) -> None:
        self.put(("started", steps, steps_requested, width, height, list(seeds)))

    def progress(self, step: int, total: int) -> None:
        self.step = (step, total)
        now = time.monotonic()
        # throttled here as on a local worker: every event crosses the network
        if not self.wants_preview() and (now - self.last_progress >= PROGRESS_INTERVAL_S or step == total):
            self.last_progress = now
            self.put(("progress", step, total))

    def wants_preview(self) -> bool:
        return self.interval is not None and time.monotonic() - self.last_preview >= self.interval

    def preview(self, image: Image) -> None:
        self.last_preview = time.monotonic()
        self.put(("progress", *self.step))
        self.put(("preview", image))

    def cancelled(self) -> bool:
        return self.cancel.is_set()


class Replica:
    """One Serve replica (deployed by cluster/deploy.py with ``max_ongoing_requests=1``)."""

    def __init__(self, config: Config, factory: EngineFactory = replica_engine, cpu_threads: int = 0) -> None:
        if cpu_threads > 0:  # a CPU replica uses the cores Ray gave it, not the whole machine's
            import torch

            torch.set_num_threads(cpu_threads)
        self.engine = factory(config)
        self.label = self._label()

    def _label(self) -> str:
        """How the front's status names this replica (after its slot): its id, its machine, its device."""
        from ray import serve
        from ray.util import get_node_ip_address

        replica = serve.get_replica_context().replica_id.unique_id
        return f"{replica} on {get_node_ip_address()}: {self.engine.device_label()}"

    async def generate(self, req: Submit, seed: int) -> AsyncIterator[Event]:
        """Run one job, yielding its events as they happen; the first says where it runs."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        cancel = threading.Event()

        def put(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        yield ("replica", self.label, list(self.engine.loaded_models()))
        job = loop.run_in_executor(None, self._run, req, seed, _Hooks(req, put, cancel), put)
        try:
            while True:
                event = await events.get()
                yield event
                if event[0] in ENDINGS:
                    break
        finally:
            if not job.done():  # the front cancelled the response (or went away): stop at the next step
                cancel.set()
                await asyncio.shield(job)

    def _run(self, req: Submit, seed: int, hooks: _Hooks, put: Callable[[Event], None]) -> None:
        """On the job's thread: the engine, and how it ended as the last event."""
        try:
            out = self.engine.run(req, seed, hooks)
            put(("result", out, list(self.engine.loaded_models())))
        except JobCancelled:
            put(("cancelled",))
        except (JobFailure, ProtocolError) as exc:
            put(("failed", exc.code, exc.message, exc.field))
        except Exception as exc:
            if is_device_lost(exc):  # this process cannot be trusted with a job again: Serve replaces it
                log.critical("the device of %s is lost; the replica ends:\n%s", self.label, traceback.format_exc())
                os._exit(70)
            log.error("job %s failed:\n%s", req.job_id, traceback.format_exc())
            put(("error", f"{type(exc).__name__}: {exc}"))
