"""A worker per device: jobs of two editors run at once, placement never bends the fair order, cancel
holds, a worker that dies fails its job alone and is replaced, and shutdown waits for every worker.

The jobs that run for real use two CPU workers with the built-in tiny model; torch's intra-op pool is
one per process, so ``share_cpu`` sizes it to cores // 2 (one thread each on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import RecordingConnection as Recording
from helpers import aio, backend_process, connected_client, next_of, raw_client, running_server, submit, until

from sfumato.backend.config import Config
from sfumato.backend.devices import DeviceLost, share_cpu
from sfumato.backend.errors import JobFailure
from sfumato.backend.server.app import Server
from sfumato.backend.server.hub import Hub
from sfumato.backend.server.workers import Workers, place
from sfumato.protocol import (
    Cancelled,
    ErrorCode,
    GetStatus,
    Hello,
    Image,
    JobError,
    ModelInfo,
    Progress,
    Rect,
    Result,
    Status,
    Submit,
    encode,
)

# ---------------------------------------------------------------------------- placement alone


def _worker(name: str, models: tuple[str, ...], free_since: float) -> Any:
    return SimpleNamespace(name=name, models=models, free_since=free_since)


def test_a_job_goes_to_a_free_worker_holding_its_model_else_to_the_least_loaded() -> None:
    job = SimpleNamespace(submit=SimpleNamespace(model="m"))
    holds = _worker("holds", ("x", "m"), 5.0)
    empty = _worker("empty", (), 9.0)
    other = _worker("other", ("x",), 1.0)
    assert place(job, [empty, holds, other]).name == "holds"  # no load, even though it holds more
    assert place(job, [other, empty]).name == "empty"  # loading there evicts nothing
    assert place(job, [_worker("late", (), 7.0), _worker("early", (), 2.0)]).name == "early"


# ---------------------------------------------------------------------------- the fair order, with gated engines


class GatedEngine:
    """Runs a job only when the test opens its gate; says which models it holds."""

    def __init__(self, name: str, holds: tuple[str, ...], log: list[tuple[str, str]]) -> None:
        self.name, self.holds, self.log = name, list(holds), log
        self.gates: dict[str, threading.Event] = {}

    def gate(self, job_id: str) -> threading.Event:
        return self.gates.setdefault(job_id, threading.Event())

    def check(self, req: Submit) -> None:
        pass

    def run(self, req: Submit, seed: int, hooks: Any) -> Any:
        self.log.append((req.job_id, self.name))  # on the worker's thread: the order jobs really started
        hooks.started(1, 1, 1, 1, [seed])
        assert self.gate(req.job_id).wait(30), f"gate of {req.job_id} never opened"
        if req.model not in self.holds:
            self.holds.append(req.model)
        pixel = Image(width=1, height=1, format="rgba8", data=bytes(4))
        return SimpleNamespace(images=[pixel], rect=Rect(x=0, y=0, w=1, h=1), seeds=[seed], timings={})

    def device_label(self) -> str:
        return f"fake:{self.name}"

    def models(self) -> list[ModelInfo]:
        return []

    def loaded_models(self) -> list[str]:
        return list(self.holds)


@aio
async def test_model_affinity_never_lets_a_later_job_overtake_the_fair_order() -> None:
    log: list[tuple[str, str]] = []
    holds_m = GatedEngine("holds-m", ("m",), log)
    plain = GatedEngine("plain", (), log)
    hub = Hub(Config(), holds_m)
    workers = hub.devices = Workers(hub, [holds_m, plain])
    dispatcher = asyncio.create_task(workers.run())
    try:
        x, _ = hub.attach(Hello(version=(1, 4), client="x", kind="test"), Recording())
        y, _ = hub.attach(Hello(version=(1, 4), client="y", kind="test"), Recording())
        hub.submit(x, submit("busy-0", model="m"))
        hub.submit(y, submit("busy-1", model="n"))
        await until(lambda: len(log) == 2, what="both workers busy")
        # the fair order is x1, y1, x2; x1 needs n, the other two need the m that holds-m has loaded
        hub.submit(x, submit("x1", model="n"))
        hub.submit(y, submit("y1", model="m"))
        hub.submit(x, submit("x2", model="m"))
        assert [j.id for j in hub.queue.order()] == ["x1", "y1", "x2"]
        where = dict(log)
        busy_on_m = next(job_id for job_id, name in where.items() if name == "holds-m")
        busy_on_plain = next(job_id for job_id, name in where.items() if name == "plain")
        holds_m.gate(busy_on_m).set()  # only the worker holding m is free: y1 and x2 would fit it, x1 is next
        await until(lambda: len(log) == 3, what="the next job started")
        assert log[2] == ("x1", "holds-m")
        plain.gate(busy_on_plain).set()
        await until(lambda: len(log) == 4, what="the next job started")
        assert log[3] == ("y1", "plain")
        holds_m.gate("x1").set()
        await until(lambda: len(log) == 5, what="the last job started")
        assert log[4] == ("x2", "holds-m")  # free, and it holds m
        plain.gate("y1").set()
        holds_m.gate("x2").set()
        await until(lambda: not hub.running, what="every job done")
        held = {d.device: d.loaded_models for d in hub.device_status()}
        assert "n" in held["fake:holds-m"]  # refreshed after a job: x1 (model n) ran on holds-m
    finally:
        dispatcher.cancel()
        await workers.stop(5)


# ---------------------------------------------------------------------------- two CPU workers, the tiny model


@pytest.fixture(scope="module")
def two_cpus(model_cache: Path) -> Iterator[list[Any]]:
    import torch

    from sfumato.backend.engine import Engine
    from sfumato.backend.models.catalogue import Catalogue

    threads = torch.get_num_threads()
    share_cpu(["cpu", "cpu"])
    catalogue = Catalogue.scan([], model_cache)  # one catalogue, an engine (and pipeline cache) per worker
    try:
        yield [Engine(catalogue, device="cpu"), Engine(catalogue, device="cpu")]
    finally:
        torch.set_num_threads(threads)  # the process's pool: other tests keep their default


@aio
async def test_two_editors_jobs_run_at_the_same_time_and_cancel_still_holds(two_cpus: list[Any]) -> None:
    async with (
        running_server(two_cpus) as server,
        connected_client(server.url, "a") as (a, ra),
        connected_client(server.url, "b") as (b, rb),
    ):
        assert a.welcome is not None and len(a.welcome.devices) == 2
        await a.submit(submit("a-long", size=128, steps=200, strength=1.0))
        await b.submit(submit("b-long", size=128, steps=200, strength=1.0))
        await ra.wait_for(Progress, "a-long")
        await rb.wait_for(Progress, "b-long")
        # both jobs report progress before either ends, and both workers hold a job at the same moment
        assert not ra.of(Result) and not rb.of(Result)
        running = [w.current.id for w in server.workers.all if w.current is not None]
        assert sorted(running) == ["a-long", "b-long"]
        await a.request_status()
        status = await ra.wait_for(Status, timeout=5, count=len(ra.of(Status)) + 1)
        assert [d.state for d in status.devices] == ["running", "running"] and status.running == 2
        steps_before = len(rb.of(Progress, "b-long"))
        await a.cancel("a-long")
        await ra.wait_for(Cancelled, "a-long", timeout=10)
        await rb.wait_for(Progress, "b-long", count=steps_before + 1)  # the other job carries on
        await b.cancel("b-long")
        await rb.wait_for(Cancelled, "b-long", timeout=10)
        await a.submit(submit("a-next", steps=4))
        await ra.wait_for(Result, "a-next", timeout=60)


class Breakable:
    """A real engine that fails the way a dying worker does when the prompt asks for it."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def run(self, req: Submit, seed: int, hooks: Any) -> Any:
        if req.prompt == "lose the device":
            raise DeviceLost("CUDA error: an illegal memory access was encountered")
        if req.prompt == "kill the thread":
            raise KilledThread
        if req.prompt == "lose the device while loading":  # as the pipeline cache reports a failed load
            try:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            except RuntimeError:
                raise JobFailure("could not load 'x'", "submit.model", ErrorCode.MISSING_WEIGHTS) from None
        return self.engine.run(req, seed, hooks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class KilledThread(BaseException):
    """Not an Exception: nothing in the worker's loop expects it, so it leaves the loop."""


@aio
async def test_a_worker_that_dies_fails_its_job_alone_and_is_replaced(two_cpus: list[Any]) -> None:
    renewed: list[Any] = []

    def renew(old: Any) -> Any:
        renewed.append(old)
        return old

    server = Server(Config(port=0), [Breakable(e) for e in two_cpus], renew=renew)
    await server.start()
    try:
        async with connected_client(server.url, "a") as (a, ra), connected_client(server.url, "b") as (b, rb):
            await a.submit(submit("long", size=128, steps=120, strength=1.0))
            await ra.wait_for(Progress, "long")
            for n, how in enumerate(("kill the thread", "lose the device", "lose the device while loading")):
                before = list(server.workers.all)
                await b.submit(submit(f"dies-{n}", prompt=how))
                failed = await rb.wait_for(JobError, f"dies-{n}", timeout=30)
                assert failed.code == ErrorCode.WORKER_FAILED and "replaced" in failed.message
                await until(lambda old=before: server.workers.all != old, what="a replacement worker")
                await until(lambda: len(server.workers.free()) == 1, what="the replacement to be free")
                assert not ra.of(JobError) and not ra.of(Cancelled)  # the other worker's job carries on
            assert len(renewed) == 3
            await b.submit(submit("next", steps=4))
            await rb.wait_for(Result, "next", timeout=60)  # served by the replacement
            await ra.wait_for(Result, "long", timeout=120)
    finally:
        await server.stop(grace_s=5)


@aio
async def test_shutdown_waits_for_every_worker(two_cpus: list[Any]) -> None:
    server = Server(Config(port=0), two_cpus)
    await server.start()
    try:
        async with connected_client(server.url, "a") as (a, ra), connected_client(server.url, "b") as (b, rb):
            await a.submit(submit("a-long", size=128, steps=200, strength=1.0))
            await b.submit(submit("b-long", size=128, steps=200, strength=1.0))
            await ra.wait_for(Progress, "a-long")
            await rb.wait_for(Progress, "b-long")
            workers = list(server.workers.all)
            await server.stop(grace_s=10)
            assert not any(w._thread.is_alive() for w in workers)  # every worker's thread has ended
            await ra.wait_for(Cancelled, "a-long", timeout=10)
            await rb.wait_for(Cancelled, "b-long", timeout=10)
    finally:
        await server.stop(grace_s=1)


# ---------------------------------------------------------------------------- starting it


def test_devices_come_from_flags_the_environment_and_the_config_file(tmp_path: Path) -> None:
    import torch

    from sfumato.backend.config import load_config
    from sfumato.backend.devices import expand
    from sfumato.backend.engine import pick_device

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_config(empty, env={}).device == ["auto"]  # one worker, on the best device
    assert load_config(empty, env={"SFUMATO_DEVICE": "cuda:0,cuda:1"}).device == ["cuda:0", "cuda:1"]
    listed = tmp_path / "config.toml"
    listed.write_text('[server]\ndevice = ["cpu", "cpu"]\n')
    assert load_config(listed, env={}).device == ["cpu", "cpu"]
    assert load_config(listed, env={}, device=["cpu"]).device == ["cpu"]  # flags win
    assert expand(["cpu", "cpu"]) == ["cpu", "cpu"]
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    assert expand(["all"]) == (gpus or [pick_device("auto")])


@aio
async def test_a_backend_started_with_two_devices_shows_both(model_cache: Path) -> None:
    with backend_process(model_cache, "--device", "cpu") as (url, _):  # the helper passes --device cpu too
        ws = await raw_client(url)
        try:
            await ws.send(encode(GetStatus()))
            status = await next_of(ws, Status)
            assert [d.device for d in status.devices] == ["cpu", "cpu"]
            assert [d.state for d in status.devices] == ["idle", "idle"]
        finally:
            await ws.close()
