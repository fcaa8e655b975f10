"""plugin.core: request building, the controller's routing, reconnect/resume over the in-memory transport."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portable"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core_checks import ListDocument
from helpers import Recorder, pattern_rgba

from sfumato.plugin.core import pixels
from sfumato.plugin.core.client import Client
from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.jobs import FINISHED_KEPT, JobTracker
from sfumato.plugin.core.requests import ControlSpec, GenerationParams, build_submit
from sfumato.plugin.core.transport import MemoryTransport, TransportClosed, memory_pair
from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancelled,
    ClientConnection,
    Hello,
    Image,
    JobError,
    JobStatus,
    Limits,
    Progress,
    Rect,
    Result,
    Started,
    Submit,
    Welcome,
    decode,
    encode,
)

# ---------------------------------------------------------------------------- requests


def test_no_selection_restyles_the_whole_layer() -> None:
    doc = ListDocument(None)
    sub = build_submit(doc, GenerationParams(prompt="p", strength=0.4), "j")
    assert sub.task == "img2img" and sub.mask is None and sub.image_rect == Rect(x=0, y=0, w=64, h=64)
    assert sub.strength == 0.4 and sub.context is None and sub.result is None


def test_selection_inpaints_and_reads_only_the_context() -> None:
    doc = ListDocument(Rect(x=20, y=24, w=10, h=6))
    sub = build_submit(doc, GenerationParams(controls=(ControlSpec("canny"),)), "j")
    assert sub.task == "inpaint" and sub.result == Rect(x=20, y=24, w=10, h=6)
    assert sub.context is not None and sub.context.contains(sub.result)
    assert sub.context.w % 8 == 0 and sub.context.h % 8 == 0
    assert doc.reads == [sub.context, sub.context]  # the layer and the control source: the context only
    assert (sub.origin.x, sub.origin.y) == (sub.context.x, sub.context.y)
    assert sub.mask is not None and sum(1 for v in sub.mask.data if v == 255) == 60


# ---------------------------------------------------------------------------- controller


class FakeClient:
    """The client's bookkeeping without a network: events arrive as bytes through a real connection."""

    def __init__(self) -> None:
        from sfumato.plugin.core.jobs import JobTracker

        self.tracker = JobTracker()
        self.sent: list[Any] = []
        self.connection = ClientConnection("fake", jobs=self.tracker.states)
        self.connection.hello()
        self.connection.receive(welcome("S", False))

    async def submit(self, submit: Submit, document: object = None) -> Any:
        self.sent.append(submit)
        self.connection.send(submit)
        return self.tracker.add(submit, document)

    async def cancel(self, job_id: str) -> None:
        self.sent.append(("cancel", job_id))


class ClosableDocument(ListDocument):
    def __init__(self) -> None:
        super().__init__(None)
        self.open = True
        self.previews: list[Rect] = []
        self.cleared = 0

    def is_open(self) -> bool:
        return self.open

    def show_preview(self, image: Image, rect: Rect) -> None:
        self.previews.append(rect)

    def clear_preview(self) -> None:
        self.cleared += 1


def _drive(controller: Controller, client: FakeClient, events: list[Any]) -> None:
    for event in events:
        received = client.connection.receive(encode(event))
        controller.handle(received, client.tracker.apply(received))


def test_results_land_in_their_own_document_and_previews_are_cleared() -> None:
    async def main() -> None:
        client = FakeClient()
        controller = Controller(client, lambda coro: asyncio.ensure_future(coro))  # type: ignore[arg-type]
        a, b = ClosableDocument(), ClosableDocument()
        sa = controller.generate(a, GenerationParams(prompt="first", seed=3))
        sb = controller.generate(b, GenerationParams(prompt="second", seed=4))
        await asyncio.sleep(0)
        img = pattern_rgba(64, 64)
        preview = Image(width=8, height=8, format="rgba8", data=bytes(256))
        _drive(
            controller,
            client,
            [
                Started(job_id=sa.job_id, steps=2, steps_requested=4, width=64, height=64, seeds=(3,)),
                Progress(job_id=sa.job_id, step=1, total=2, preview=preview),
                Result(job_id=sa.job_id, images=(img,), rect=Rect(x=0, y=0, w=64, h=64), seeds=(3,)),
            ],
        )
        assert a.previews == [Rect(x=0, y=0, w=64, h=64)] and a.cleared == 1
        assert [name for _, _, name in a.layers] == ["first [seed 3]"] and not b.layers
        b.open = False  # the painter closed the second document meanwhile
        _drive(
            controller,
            client,
            [
                Started(job_id=sb.job_id, steps=2, steps_requested=4, width=64, height=64, seeds=(4,)),
                Result(job_id=sb.job_id, images=(img,), rect=Rect(x=0, y=0, w=64, h=64), seeds=(4,)),
            ],
        )
        assert not b.layers and len(a.layers) == 1  # never pasted into the wrong document
        assert controller.kept_results[0].job_id == sb.job_id
        assert "closed" in controller.messages[-1]

    asyncio.run(main())


def test_an_upscale_enlarges_the_whole_layer_into_a_new_document() -> None:
    class Source(ClosableDocument):
        def __init__(self) -> None:
            super().__init__()
            self.enlarged: list[tuple[int, int, str]] = []

        def open_enlarged(self, image: Image, name: str) -> None:
            self.enlarged.append((image.width, image.height, name))

    async def main() -> None:
        client = FakeClient()
        controller = Controller(client, lambda coro: asyncio.ensure_future(coro))  # type: ignore[arg-type]
        doc = Source()
        params = GenerationParams(prompt="big", seed=5, batch_size=3, controls=(ControlSpec("canny"),))
        sub = controller.upscale(doc, params, 4, None, 0.25)
        await asyncio.sleep(0)
        assert (sub.task, sub.upscale.factor, sub.upscale.upscaler) == ("upscale", 4, None)
        assert sub.image_rect == doc.canvas() and sub.strength == 0.25 and sub.batch_size == 1 and not sub.controls
        big = pattern_rgba(doc.canvas().w * 4, doc.canvas().h * 4)
        tile = Image(width=8, height=8, format="rgba8", data=bytes(256))
        _drive(
            controller,
            client,
            [
                Started(job_id=sub.job_id, steps=2, steps_requested=8, width=64, height=64, seeds=(5,)),
                Progress(job_id=sub.job_id, step=1, total=2, preview=tile),
                Result(job_id=sub.job_id, images=(big,), rect=sub.output_rect, seeds=(5,)),
            ],
        )
        assert doc.previews == []  # the tiles belong to the bigger picture, not to this document
        assert doc.enlarged == [(big.width, big.height, "big [seed 5]")] and not doc.layers

    asyncio.run(main())


def test_errors_are_reported_in_plain_words() -> None:
    async def main() -> None:
        client = FakeClient()
        controller = Controller(client, lambda coro: asyncio.ensure_future(coro))  # type: ignore[arg-type]
        doc = ClosableDocument()
        sub = controller.generate(doc, GenerationParams())
        await asyncio.sleep(0)
        _drive(controller, client, [JobError(job_id=sub.job_id, code="out_of_memory", message="the GPU ran out")])
        assert controller.messages == [f"{sub.job_id}: the GPU ran out"] and doc.cleared == 1
        assert client.tracker.jobs[sub.job_id].state.value == "failed"

    asyncio.run(main())


# ---------------------------------------------------------------------------- reconnect and resume (in memory)


class ScriptedBackend:
    """The server end of in-memory connections, scripted per connection."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[MemoryTransport] = asyncio.Queue()
        self.attempts = 0

    async def connect(self) -> MemoryTransport:
        self.attempts += 1
        if self.attempts == 2:
            raise TransportClosed("refused once")  # exercises the backoff
        client_end, server_end = memory_pair()
        await self.connections.put(server_end)
        return client_end


def welcome(session: str, resumed: bool) -> bytes:
    return encode(
        Welcome(
            version=PROTOCOL_VERSION,
            server="scripted",
            session=session,
            resumed=resumed,
            limits=Limits(
                max_message_bytes=1 << 20, max_pixels=1 << 20, max_batch=1, max_queued_per_editor=4, max_controls=0
            ),
            models=(),
            device="cpu",
        )
    )


@pytest.mark.parametrize("resumed", [True, False])
def test_reconnect_resumes_or_resubmits(resumed: bool) -> None:
    async def main() -> None:
        backend = ScriptedBackend()
        rec = Recorder()
        client = Client(backend.connect, "t", listener=rec, backoff=(0.01, 0.05))
        runner = asyncio.create_task(client.run())
        first = await backend.connections.get()
        hello = decode(await first.recv())
        assert isinstance(hello, Hello) and hello.resume is None
        await first.send(welcome("S1", False))
        job = await client.submit(Submit(job_id="j", task="img2img", model="m", image=pattern_rgba(4, 4)))
        assert isinstance(decode(await first.recv()), Submit)
        await first.send(encode(Started(job_id="j", steps=4, steps_requested=4, width=4, height=4, seeds=(1,))))
        await rec.wait_for(Started, "j")
        await first.close()  # the connection drops mid-job
        second = await backend.connections.get()
        hello = decode(await second.recv())
        assert isinstance(hello, Hello) and hello.resume == "S1"
        assert backend.attempts == 3  # one refused attempt in between, retried after a backoff
        img = pattern_rgba(4, 4)
        if resumed:
            await second.send(welcome("S1", True))
            await second.send(encode(JobStatus(job_id="j", state="done")))
        else:  # a restarted backend: the client must submit the job again
            await second.send(welcome("S2", False))
            again = decode(await second.recv())
            assert isinstance(again, Submit) and again.job_id == "j"
            await second.send(encode(Started(job_id="j", steps=4, steps_requested=4, width=4, height=4, seeds=(1,))))
        await second.send(encode(Result(job_id="j", images=(img,), rect=Rect(x=0, y=0, w=4, h=4), seeds=(1,))))
        result = await rec.wait_for(Result, "j")
        assert job.state.value == "done" and result.images == (img,)  # the listener had it; the tracker
        assert not any(isinstance(v, (Result, Image)) for v in vars(job).values())  # keeps no pixels of it
        await client.close()
        await second.close()
        await asyncio.wait_for(runner, 5)

    asyncio.run(main())


# ---------------------------------------------------------------------------- pixels


def test_bgra_rgba_swap_round_trips() -> None:
    bgra8 = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert pixels.swap_red_blue_8(bgra8) == bytes([3, 2, 1, 4, 7, 6, 5, 8])
    assert pixels.swap_red_blue_8(pixels.swap_red_blue_8(bgra8)) == bgra8


def test_to_rgba8_from_every_format() -> None:
    import struct

    gray = Image(width=2, height=1, format="gray8", data=bytes([0, 200]))
    assert pixels.to_rgba8(gray).data == bytes([0, 0, 0, 255, 200, 200, 200, 255])
    u16 = Image(width=1, height=1, format="rgba16", data=struct.pack("<4H", 0, 32896, 65535, 65535))
    assert pixels.to_rgba8(u16).data == bytes([0, 128, 255, 255])
    f32 = Image(width=1, height=1, format="rgbaf32", data=struct.pack("<4f", 0.0, 0.5, 2.0, 1.0))
    assert pixels.to_rgba8(f32).data == bytes([0, 128, 255, 255])


def test_high_depth_conversions_for_editors_without_numpy() -> None:
    import struct

    bgra16 = struct.pack("<8H", 1, 2, 3, 4, 500, 600, 700, 800)
    assert struct.unpack("<8H", pixels.swap_red_blue_16(bgra16)) == (3, 2, 1, 4, 700, 600, 500, 800)
    assert pixels.swap_red_blue_16(pixels.swap_red_blue_16(bgra16)) == bgra16
    halves = struct.pack("<4e", 0.0, 0.5, 1.0, 0.25)
    as_float = pixels.half_to_float(halves)
    assert struct.unpack("<4f", as_float) == (0.0, 0.5, 1.0, 0.25)
    assert pixels.float_to_half(as_float) == halves
    assert struct.unpack("<4H", pixels.rgba8_to_16(bytes([0, 1, 128, 255]))) == (0, 257, 32896, 65535)
    # a layer longer than one conversion chunk: every sample in place, across the chunk borders
    import numpy as np

    many = (np.arange(2 * pixels.CHUNK_SAMPLES + 3) % 2049 / 2048).astype("<f2")
    assert pixels.half_to_float(many.tobytes()) == many.astype("<f4").tobytes()
    assert pixels.float_to_half(many.astype("<f4").tobytes()) == many.tobytes()
    encoded = struct.unpack("<4f", pixels.rgba8_to_float(bytes([0, 128, 255, 128]), linear=False))
    assert encoded == pytest.approx((0.0, 128 / 255, 1.0, 128 / 255))
    linear = struct.unpack("<4f", pixels.rgba8_to_float(bytes([0, 128, 255, 128]), linear=True))
    assert linear == pytest.approx((0.0, 0.2158605, 1.0, 128 / 255), abs=1e-6)  # alpha is never decoded


def test_a_linear_float_layer_becomes_the_rgba8_map_the_painter_sees() -> None:
    import struct

    mid_grey = struct.pack("<4f", 0.2158605, 0.2158605, 0.2158605, 0.5)  # linear light of sRGB 128
    img = Image(width=1, height=1, format="rgbaf32", data=mid_grey, linear=True)
    assert pixels.to_rgba8(img).data == bytes([128, 128, 128, 128])
    nan = Image(width=1, height=1, format="rgbaf32", data=struct.pack("<4f", float("nan"), 2.0, -1.0, 1.0))
    assert pixels.to_rgba8(nan).data == bytes([0, 255, 0, 255])


def test_status_lines_say_the_state_the_queue_and_the_latest_word() -> None:
    from sfumato.plugin.core.client import ConnectionChanged
    from sfumato.plugin.core.jobs import TrackedJob
    from sfumato.plugin.core.status import connection_line, message_line, progress_of, queue_line
    from sfumato.protocol import JobState, JobStates

    hello = welcome("S", False)
    conn = ClientConnection("x", jobs=JobStates())
    conn.hello()
    conn.receive(hello)
    assert connection_line(ConnectionChanged("connected", welcome=conn.welcome)).startswith("Connected — ")
    assert connection_line(ConnectionChanged("failed", "wrong token")) == "Refused: wrong token"
    sub = build_submit(ListDocument(None), GenerationParams(), "j")
    running = TrackedJob(sub, state=JobState.RUNNING)
    waiting = [TrackedJob(sub, state=JobState.QUEUED, position=p) for p in (4, 2)]
    assert queue_line([]) == "" and queue_line([running]) == "1 job(s) running"
    assert queue_line([running, *waiting]) == "3 job(s); next in queue at position 3"
    running.step, running.total = 3, 12
    assert progress_of([*waiting, running]) == (3, 12, "step 3 of 12")
    assert progress_of(waiting) == (0, 1, "waiting for a job") and progress_of([]) == (0, 1, "idle")
    assert message_line("", []) == "" and message_line("no layer", ["a", "b"]) == "no layer\nb"


def test_a_finished_job_lets_go_of_its_result_and_only_the_newest_finished_jobs_are_remembered() -> None:
    tracker = JobTracker()  # a live painting ends a job every few seconds: nothing may pile up
    layer = pattern_rgba(64, 64)
    n = FINISHED_KEPT + 3
    jobs = [tracker.add(Submit(job_id=f"j{i}", task="img2img", model="m", image=layer)) for i in range(n)]
    running = tracker.add(Submit(job_id="busy", task="img2img", model="m", image=layer))
    for job in jobs:
        tracker.apply(Result(job_id=job.id, images=(layer,), rect=Rect(x=0, y=0, w=64, h=64), seeds=(1,)))
        tracker.settle(job)
        tracker.settle(job)  # (twice: remembered once)
    assert set(tracker.jobs) == {f"j{i}" for i in range(3, n)} | {"busy"}  # the three oldest forgotten
    kept_pixels = [v for j in jobs for v in vars(j).values() if isinstance(v, (Result, Image))]
    assert not kept_pixels and tracker.jobs["j3"].submit is jobs[3].submit  # the request kept, no result
    assert running.submit.image is layer and tracker.jobs["busy"] is running  # an unfinished job: untouched


def test_a_job_is_settled_at_its_last_event_including_an_end_told_only_by_a_resume() -> None:
    from sfumato.plugin.core.client import _last_event

    img = pattern_rgba(4, 4)
    result = Result(job_id="j", images=(img,), rect=Rect(x=0, y=0, w=4, h=4), seeds=(1,))
    assert _last_event(result) and _last_event(Cancelled(job_id="j"))
    assert _last_event(JobStatus(job_id="j", state="cancelled")) and _last_event(JobStatus(job_id="j", state="failed"))
    assert not _last_event(JobStatus(job_id="j", state="done"))  # its result is replayed next
    assert not _last_event(Started(job_id="j", steps=1, steps_requested=1, width=4, height=4, seeds=(1,)))
