"""The queue, the outbox and the hub on their own: no sockets, no engine, just their rules."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import aio, submit

from sfumato.backend.config import Config
from sfumato.backend.server.hub import Hub
from sfumato.backend.server.jobs import EditorState, Job
from sfumato.backend.server.outbox import Outbox, ResultRef
from sfumato.backend.server.queue import FairQueue
from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancelled,
    Encoded,
    Error,
    Hello,
    JobError,
    JobEvent,
    ModelInfo,
    Queued,
    Submit,
    decode,
)


class FakeConnection:
    def __init__(self) -> None:
        self.editor: EditorState | None = None
        self.sent: list[Any] = []
        self.results: list[str] = []
        self.closed = ""

    def send(self, message: Any, job_id: str | None = None) -> None:
        self.sent.append(message)

    def send_frame(self, frame: bytes, job_id: str | None = None) -> None:
        self.sent.append(decode(frame))

    def send_latest(self, job_id: str, frame: bytes) -> None:
        self.sent.append(decode(frame))

    def send_result(self, job_id: str) -> None:
        self.results.append(job_id)

    def close(self, reason: str) -> None:
        self.closed = reason


class FakeEngine:
    def check(self, req: Submit) -> None:
        pass

    def run(self, req: Submit, seed: int, hooks: Any) -> Any:
        raise AssertionError("the hub never runs jobs")

    def device_label(self) -> str:
        return "cpu"

    def models(self) -> list[ModelInfo]:
        return []

    def loaded_models(self) -> list[str]:
        return []


def _editor(hub: Hub, name: str) -> tuple[EditorState, FakeConnection]:
    session = FakeConnection()
    editor, _ = hub.attach(Hub_hello(name), session)
    return editor, session


def Hub_hello(name: str) -> Hello:
    return Hello(version=(1, 1), client=name)


def test_fair_queue_takes_turns_across_editors() -> None:
    async def main() -> list[str]:
        queue = FairQueue()
        a, b = EditorState("a", "a"), EditorState("b", "b")
        for owner, ids in ((a, ["a1", "a2", "a3"]), (b, ["b1"])):
            for job_id in ids:
                queue.push(Job(owner=owner, id=job_id, request=None, seed=0))
        assert [j.id for j in queue.order()] == ["a1", "b1", "a2", "a3"]
        return [(await queue.pop()).id for _ in range(4)]

    assert asyncio.run(main()) == ["a1", "b1", "a2", "a3"]


@aio
async def test_outbox_drains_what_it_holds_when_closed_and_keeps_only_the_latest_progress() -> None:
    box = Outbox(max_bytes=100)
    box.put_latest("j", b"progress 1")
    box.put_latest("j", b"progress 2")  # latest wins
    box.put(b"queued")
    box.put_result("r")
    assert await box.get() == b"queued"
    assert await box.get() == ResultRef("r")
    assert await box.get() == b"progress 2"
    box.put(b"last words")
    box.put_latest("j", b"progress 3")
    box.close()
    box.put(b"after close")  # ignored
    assert await box.get() == b"last words"  # events queued before the close still go out
    assert await box.get() is None  # progress is dropped once closed
    overflow = Outbox(max_bytes=10)
    overflow.put(b"x" * 11)
    assert overflow.overflowed and await overflow.get() is None


@aio
async def test_hub_positions_budget_and_release_without_sockets() -> None:
    hub = Hub(Config(editor_memory_mib=1, job_memory_mib=1), FakeEngine())
    a, sa = _editor(hub, "a")
    for job_id in ("j1", "j2"):
        hub.submit(a, submit(job_id, size=128))  # 64 KiB in, 64 KiB reserved for the result
    assert [(m.job_id, m.position) for m in sa.sent if isinstance(m, Queued)] == [("j1", 0), ("j2", 1)]
    big = submit("big", size=512)  # 1 MiB in + 1 MiB out: more than one editor may hold
    hub.submit(a, big)
    refused = [m for m in sa.sent if isinstance(m, JobError)]
    assert [(m.job_id, m.code) for m in refused] == [("big", "too_large")]
    hub.submit(a, submit("j1", size=64))
    duplicate = [m for m in sa.sent if isinstance(m, Error)]
    assert [(m.code, m.job_id) for m in duplicate] == [("duplicate_job", "j1")]
    held = hub.budget.used
    job = a.jobs["j1"]
    assert held == hub.budget.held_by(a) > 0
    hub.cancel(a, "j2")
    assert [m.job_id for m in sa.sent if isinstance(m, Cancelled)] == ["j2"]
    assert a.jobs["j2"].request is None, "a cancelled job drops its inputs"
    popped = await hub.queue.pop()
    hub.job_started(popped)
    result = Encoded(header=b"h" * 10, buffers=(memoryview(b"r" * 990),))
    hub.finish(popped, JobEvent.RESULT, result=result)
    assert hub.budget.used == 1000 and sa.results == ["j1"], "the charge shrinks to the result's bytes"
    assert hub.result_frame(a, "j1") is result and job.request is None
    hub.result_sent(a, "j1")
    assert hub.budget.used == 0 and "j1" not in a.undelivered


def test_a_second_connection_resuming_a_session_replaces_the_first() -> None:
    async def main() -> None:
        hub = Hub(Config(), FakeEngine())
        editor, first = _editor(hub, "twin")
        second = FakeConnection()
        again, resumed = hub.attach(Hello(version=PROTOCOL_VERSION, client="twin", resume=editor.session_id), second)
        assert resumed and again is editor and editor.connection is second
        assert [(m.code, m.fatal) for m in first.sent if isinstance(m, Error)] == [("session_replaced", True)]
        assert first.closed and first.editor is None

    asyncio.run(main())
