"""Live painting in the backend: a live job supersedes its session's earlier live job — dropped from
the line in place when queued, stopped at its next step when running, never delivering a result — and
editors painting live share the backend fairly with each other and with an ordinary Generate.

The supersede rule runs on the hub with engines the test steps by hand (exact, on every CPU); the
fairness runs through the real server with the built-in tiny model.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from types import SimpleNamespace
from typing import Any

from helpers import RecordingConnection as Recording
from helpers import aio, connected_client, running_server, submit, until

from sfumato.backend.config import Config
from sfumato.backend.engine import JobCancelled
from sfumato.backend.server.hub import Hub
from sfumato.backend.server.workers import Workers
from sfumato.protocol import Cancelled, Hello, Image, JobError, ModelInfo, Queued, Rect, Result, Started, Submit


class SteppedEngine:
    """Runs ``req.steps`` steps, each one only when the test allows it; checks cancel between steps
    as the real engine does (tasks/passes.py), and records how many steps each job ran."""

    def __init__(self) -> None:
        self.allowed = threading.Semaphore(0)
        self.ran: dict[str, int] = {}
        self.started: list[str] = []
        self.ignore_cancel = False  # a job whose last step already ran: cancel comes too late

    def check(self, req: Submit) -> None:
        if req.model == "missing":
            from sfumato.backend.errors import JobFailure

            raise JobFailure("unknown model 'missing'", "submit.model")

    def run(self, req: Submit, seed: int, hooks: Any) -> Any:
        self.started.append(req.job_id)
        self.ran[req.job_id] = 0
        hooks.started(req.steps, req.steps, 1, 1, [seed])
        for step in range(req.steps):
            if hooks.cancelled() and not self.ignore_cancel:
                raise JobCancelled
            assert self.allowed.acquire(timeout=30), "the test never allowed the next step"
            self.ran[req.job_id] = step + 1
            hooks.progress(step + 1, req.steps)
        pixel = Image(width=1, height=1, format="rgba8", data=bytes([seed % 256, 0, 0, 255]))
        return SimpleNamespace(images=[pixel], rect=Rect(x=0, y=0, w=1, h=1), seeds=[seed], timings={})

    def device_label(self) -> str:
        return "fake:stepped"

    def models(self) -> list[ModelInfo]:
        return []

    def loaded_models(self) -> list[str]:
        return []


def live(job_id: str, steps: int = 10, size: int = 8, **kw: Any) -> Submit:
    return submit(job_id, size=size, steps=steps, strength=1.0, live=True, **kw)


async def stepped_hub() -> tuple[Hub, SteppedEngine, Workers, asyncio.Task[None]]:
    engine = SteppedEngine()
    hub = Hub(Config(), engine)
    workers = hub.devices = Workers(hub, [engine])
    return hub, engine, workers, asyncio.create_task(workers.run())


def attach(hub: Hub, name: str) -> tuple[Any, Recording]:
    conn = Recording()
    editor, _ = hub.attach(Hello(version=(1, 6), client=name, kind="test"), conn)
    return editor, conn


@aio
async def test_a_live_job_drops_the_queued_one_in_place_and_stops_the_running_one_at_its_next_step() -> None:
    hub, engine, workers, dispatcher = await stepped_hub()
    try:
        a, sa = attach(hub, "a")
        b, sb = attach(hub, "b")
        hub.submit(a, live("l1"))
        await until(lambda: engine.started == ["l1"], what="l1 running")
        engine.allowed.release(3)
        await until(lambda: engine.ran["l1"] == 3, what="three steps of l1")
        hub.submit(a, submit("plain", size=8, steps=1))  # an ordinary job of the same editor: never superseded
        hub.submit(a, live("l2"))  # supersedes the running l1
        hub.submit(b, submit("b1", size=8, steps=1))
        assert [j.id for j in hub.queue.order()] == ["plain", "b1", "l2"]
        hub.submit(a, live("l3"))  # supersedes the queued l2: it takes l2's place, behind b1 still
        assert [j.id for j in hub.queue.order()] == ["plain", "b1", "l3"]
        dropped = [m for m in sa.of(Cancelled) if m.job_id == "l2"]
        assert dropped == [Cancelled(job_id="l2", superseded_by="l3")]
        # l2's cancelled went out before l3 was first queued
        assert sa.sent.index(dropped[0]) < sa.sent.index(next(m for m in sa.of(Queued) if m.job_id == "l3"))
        engine.allowed.release(1)  # l1 checks cancel before its next step and stops
        await until(lambda: any(m.job_id == "l1" for m in sa.of(Cancelled)), what="l1 cancelled")
        assert [m for m in sa.of(Cancelled) if m.job_id == "l1"] == [Cancelled(job_id="l1", superseded_by="l2")]
        assert engine.ran["l1"] < 10, "the superseded job ran every step"
        engine.allowed.release(1 + 1 + 10)  # plain, b1, l3
        await until(lambda: "l3" in sa.results, what="l3's result")
        assert engine.started == ["l1", "plain", "b1", "l3"]  # l2 never started
        assert sa.results == ["plain", "l3"] and sb.results == ["b1"]
        assert engine.ran["l3"] == 10 and not hub.running and len(hub.queue) == 0
        assert hub.budget.held_by(a) == sum(
            r.size for j in ("plain", "l3") if (r := hub.result_frame(a, j)) is not None
        )
    finally:
        dispatcher.cancel()
        await workers.stop(5)


@aio
async def test_a_superseded_job_whose_last_step_already_ran_ends_cancelled_not_with_a_result() -> None:
    hub, engine, workers, dispatcher = await stepped_hub()
    engine.ignore_cancel = True  # as if the new job came after the last denoising step
    try:
        a, sa = attach(hub, "a")
        hub.submit(a, live("l1", steps=2))
        await until(lambda: engine.started == ["l1"], what="l1 running")
        hub.submit(a, live("l2", steps=2))
        engine.allowed.release(2)
        await until(lambda: any(m.job_id == "l1" for m in sa.of(Cancelled)), what="l1 ended")
        assert engine.ran["l1"] == 2 and "l1" not in sa.results and hub.result_frame(a, "l1") is None
        engine.allowed.release(2)
        await until(lambda: sa.results == ["l2"], what="l2's result")
        assert a.jobs["l1"].state.value == "cancelled" and a.jobs["l2"].state.value == "done"
    finally:
        dispatcher.cancel()
        await workers.stop(5)


@aio
async def test_only_the_sessions_own_live_jobs_are_superseded_and_a_refused_one_supersedes_nothing() -> None:
    hub, engine, workers, dispatcher = await stepped_hub()
    try:
        a, sa = attach(hub, "a")
        b, sb = attach(hub, "b")
        hub.submit(a, live("busy", steps=1))
        await until(lambda: engine.started == ["busy"], what="a job running")
        hub.submit(b, live("b-live", steps=1))
        hub.submit(a, live("a-live", steps=1))  # supersedes busy, not b's live job
        hub.submit(a, live("a-bad", steps=1, model="missing"))  # refused: a-live carries on
        assert [m.job_id for m in sa.of(JobError)] == ["a-bad"]
        assert [j.id for j in hub.queue.order()] == ["b-live", "a-live"]
        assert not sb.of(Cancelled)
        engine.allowed.release(3)
        await until(lambda: sa.results == ["a-live"] and sb.results == ["b-live"], what="both live results")
        assert [m.job_id for m in sa.of(Cancelled)] == ["busy"]
    finally:
        dispatcher.cancel()
        await workers.stop(5)


# ---------------------------------------------------------------------------- fairness through the real server


@aio
async def test_two_editors_painting_live_and_an_ordinary_generate_share_the_backend_fairly(engine: Any) -> None:
    """A and B paint without a pause: each time its live job starts, a new change supersedes it. The
    worker must still alternate between them, C's ordinary job must start within one round of them,
    and the last live job of each must finish once they stop."""
    async with (
        running_server(engine) as server,
        connected_client(server.url, "a") as (a, ra),
        connected_client(server.url, "b") as (b, rb),
        connected_client(server.url, "c") as (c, rc),
    ):
        order: list[str] = []  # job ids in the order the worker took them, read on the event loop
        take = server.hub.job_started

        def started(job: Any) -> None:
            order.append(job.id)
            take(job)

        server.hub.job_started = started
        changes = {"a": 0, "b": 0}
        clients = {"a": (a, ra), "b": (b, rb)}
        stop = asyncio.Event()

        async def paint(name: str) -> None:
            client, rec = clients[name]
            while True:
                job_id = f"{name}-{changes[name]}"
                changes[name] += 1
                await client.submit(live(job_id, steps=50, seed=changes[name], size=64))
                if stop.is_set():
                    return
                await rec.wait_for(Started, job_id, timeout=60)  # the change is being painted …
                # … and the painter changes the canvas again

        painters = [asyncio.create_task(paint("a")), asyncio.create_task(paint("b"))]
        await until(lambda: len(order) >= 4, timeout=60, what="both painters under way")
        before = len(order)
        await c.submit(submit("generate", size=64, steps=4))
        await rc.wait_for(Started, "generate", timeout=60)
        stop.set()
        await asyncio.gather(*painters)
        final = {name: f"{name}-{changes[name] - 1}" for name in clients}
        await ra.wait_for(Result, final["a"], timeout=120)
        await rb.wait_for(Result, final["b"], timeout=120)
        await rc.wait_for(Result, "generate", timeout=120)
        painters_order = [job_id[0] for job_id in order if job_id != "generate"]
        # the worker alternated: neither painter's job started twice in a row while the other's waited
        assert all(x != y for x, y in itertools.pairwise(painters_order)), order
        # at most one live job of each painter started between C's submit and C's start
        assert order.index("generate") - before <= 2, order
        for name, rec in (("a", ra), ("b", rb)):
            assert [r.job_id for r in rec.of(Result)] == [final[name]]  # only the newest live picture finished
            superseded = rec.of(Cancelled)
            assert len(superseded) == changes[name] - 1
            assert all(cx.superseded_by is not None for cx in superseded)
