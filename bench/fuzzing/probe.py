"""The honest editor and the get_status pings: what the fuzzing must not slow down."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgpack
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Cancelled,
    GetStatus,
    Hello,
    Image,
    JobError,
    Queued,
    Result,
    Started,
    Submit,
    encode,
)

T = TypeVar("T")


def split_total(split: str) -> float:
    """The total of a ``split`` string, so the worst split can be kept."""
    return float(split.split(" s:")[0]) if split else 0.0


class Probe:
    """Runs in its own thread and event loop, so the fuzzers' CPU work does not delay what it measures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.phase = "quiet"
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.rtt: dict[str, list[float]] = defaultdict(list)
        self.intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.ping_intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.marks: dict[str, dict[str, float]] = {}
        self.worst_split: dict[str, str] = {}
        self.failures: Counter[str] = Counter()
        self.disconnects = 0
        self.jobs_done = 0
        self.running = False
        self.n = 0
        self.ping_answered_sent_at = 0.0

    def call(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def open(self) -> None:
        from sfumato.plugin.core.client import Client, ConnectionChanged
        from sfumato.plugin.core.transport import WebSocketTransport

        self.waiters: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self.closing = False

        def listener(event: Any, job: Any) -> None:
            if isinstance(event, ConnectionChanged):
                if event.state == "disconnected" and not self.closing:
                    self.disconnects += 1
            elif isinstance(event, (Queued, Started)):
                self.marks.setdefault(event.job_id, {}).setdefault(event.TYPE, time.perf_counter())
            elif isinstance(event, (Result, JobError, Cancelled)):
                fut = self.waiters.get(event.job_id)
                if fut is not None and not fut.done():
                    fut.set_result((type(event).__name__, time.perf_counter()))

        self.client = Client(lambda: WebSocketTransport.connect(self.url), "honest-editor", "test", listener=listener)
        self.client_task = asyncio.create_task(self.client.run())
        await self.client.wait_connected(60)
        self.ping_ws = await connect(self.url, max_size=None, compression=None, ping_interval=None)
        await self.ping_ws.send(encode(Hello(version=PROTOCOL_VERSION, client="pinger", kind="test")))
        await self.ping_ws.recv()
        self.ping_waiters: dict[str, asyncio.Future[float]] = {}
        self.ping_reader = asyncio.create_task(self._read_pings())
        w, h = 64, 64
        self.image = Image(
            width=w,
            height=h,
            format="rgba8",
            data=bytes((x * 4 + c * 60 + y) % 256 for y in range(h) for x in range(w) for c in range(4)),
        )

    async def _read_pings(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ping_ws:
                reply = msgpack.unpackb(raw)
                fut = self.ping_waiters.pop(str(reply.get("job_id")), None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

    async def job(self, req: Submit | None = None) -> float | None:
        """One job, submit → result (an honest one unless ``req``); None if it failed or took over 300 s."""
        self.n += 1
        jid = f"honest-{self.n}"
        fut: asyncio.Future[tuple[str, float]] = self.loop.create_future()
        if req is None:
            req = Submit(
                job_id=jid, task="img2img", model="builtin:tiny", image=self.image, steps=4, strength=0.5, seed=1
            )
        else:
            req = dataclasses.replace(req, job_id=jid)
        self.waiters[jid] = fut
        t0 = time.perf_counter()
        await self.client.submit(req)
        try:
            kind, t1 = await asyncio.wait_for(fut, 300)
        except asyncio.TimeoutError:
            self.failures["no result within 300 s"] += 1
            return None
        finally:
            self.waiters.pop(jid, None)
        if kind != "Result":
            self.failures[kind] += 1
            return None
        self.jobs_done += 1
        self.latency[self.phase].append(t1 - t0)
        self.intervals[self.phase].append((t0, t1))
        self.marks.setdefault(jid, {}).update(submit=t0, result=t1)
        self.worst_split[self.phase] = max(self.worst_split.get(self.phase, ""), self.split(jid), key=split_total)
        return t1 - t0

    def split(self, jid: str) -> str:
        """Where one job's time went: submit → queued → started → result."""
        m = self.marks.get(jid, {})
        if not {"submit", "queued", "started", "result"} <= m.keys():
            return ""
        parts = [("to queued", m["queued"] - m["submit"]), ("queued", m["started"] - m["queued"])]
        parts.append(("running", m["result"] - m["started"]))
        return f"{m['result'] - m['submit']:.3f} s: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts)

    async def ping(self) -> float | None:
        self.n += 1
        marker = f"ping-{self.n}"
        fut: asyncio.Future[float] = self.loop.create_future()
        self.ping_waiters[marker] = fut
        t0 = time.perf_counter()
        await self.ping_ws.send(encode(GetStatus()))
        await self.ping_ws.send(encode(Cancel(job_id=marker)))  # its reply follows the status: a unique marker
        try:
            t1 = await asyncio.wait_for(fut, 300)
        except asyncio.TimeoutError:
            self.failures["ping unanswered for 300 s"] += 1
            return None
        self.rtt[self.phase].append(t1 - t0)
        self.ping_intervals[self.phase].append((t0, t1))
        self.ping_answered_sent_at = t0
        return t1 - t0

    async def background(self) -> None:
        self.running = True

        async def jobs() -> None:
            while self.running:
                await self.job()

        async def pings() -> None:
            while self.running:
                await self.ping()
                await asyncio.sleep(0.05)

        self.bg = asyncio.gather(jobs(), pings())

    async def stop(self) -> None:
        self.running = False
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.bg, 600)

    async def close(self) -> None:
        self.closing = True
        self.ping_reader.cancel()
        await self.ping_ws.close()
        await self.client.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.client_task, 10)
