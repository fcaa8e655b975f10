"""One editor cannot hurt the others: what a hostile or buggy editor sends, and what the backend does.

Each test names a failure seen when the shipped server was attacked (issue 8) and checks the fix
through a real websockets server on loopback.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import aio, connected_client, next_of, pattern_rgba, raw_client, running_server, submit, until

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancelled,
    Error,
    GetStatus,
    Hello,
    Image,
    JobError,
    JobStatus,
    Queued,
    Result,
    Started,
    Status,
    Welcome,
    decode,
    encode,
)

MIB = 1 << 20


def _image_map(side: int, fmt: str = "rgba8", fill: int = 0) -> dict[str, Any]:
    bpp = {"rgba8": 4, "rgbaf32": 16}[fmt]
    return {"w": side, "h": side, "fmt": fmt, "enc": "raw", "data": bytes([fill]) * (side * side * bpp)}


# ---------------------------------------------------------------------------- memory


@aio
async def test_a_refused_frame_is_not_kept_while_its_connection_idles(engine: Any) -> None:
    async with running_server(engine, max_controls=4) as server:
        ws = await raw_client(server.url, "mallory")
        body = msgpack.unpackb(encode(submit("big", size=1024)))
        control = {"type": "canny", "image": _image_map(1024)}
        frame = msgpack.packb({**body, "controls": [control] * 8})  # 36 MiB, 8 controls where 4 are allowed
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await ws.send(frame)
            refused = await next_of(ws, JobError)
            assert (refused.job_id, refused.code, refused.field) == ("big", "too_large", "submit.controls")

            def released() -> bool:
                gc.collect()
                return tracemalloc.get_traced_memory()[0] - before < 4 * MIB

            await until(released, what="the refused frame to be released while the connection idles")
        finally:
            tracemalloc.stop()
        await ws.close()


async def _speaking(url: str, name: str) -> tuple[Any, Any]:
    """A bare websocket and the protocol's editor side, past the handshake (for frames sent one by one)."""
    from sfumato.protocol import ClientConnection

    ws = await connect(url, max_size=None, compression=None)
    editor = ClientConnection(name, kind="test")
    for frame in editor.hello():
        await ws.send(frame)
    while editor.welcome is None:
        editor.receive(await ws.recv())
    return ws, editor


@aio
async def test_buffer_frames_carry_a_submit_and_a_torn_one_keeps_nothing(engine: Any) -> None:
    async with running_server(engine) as server:
        ws, editor = await _speaking(server.url, "buffers")
        assert editor.buffers, "both sides speak 1.2"
        header, layer = editor.send(submit("whole", size=256, steps=2))
        for frame in (header, layer):
            await ws.send(frame)
        assert (await next_of(ws, Result, 60)).job_id == "whole"
        header, layer = editor.send(submit("torn", size=256, steps=2))
        await ws.send(header)
        await ws.send(bytes(layer)[:-1])  # one byte short: since 1.7 a chunk, one byte still due
        await ws.send(bytes(layer))  # far more than that byte: the message is torn
        refused = await next_of(ws, JobError)
        assert (refused.job_id, refused.code, refused.field) == ("torn", "bad_frame", "submit.buffers[0]")
        await ws.send(bytes(layer))  # a buffer no header declared: refused as a frame of its own
        assert (await next_of(ws, Error)).code == "bad_frame"
        budget = server.hub.budget
        await until(lambda: budget.used == 0, what="nothing charged for the torn submit")
        await ws.send(encode(GetStatus()))
        assert (await next_of(ws, Status)).editors == 1  # the session lives on
        await ws.close()


@aio
async def test_the_small_last_chunk_of_a_large_message_is_decoded_off_the_event_loop_the_chunks_before_it_on_it(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sfumato.protocol import ServerConnection

    decoded_on: list[tuple[int, bool, str]] = []  # (frame bytes, completed a message, thread)
    receive = ServerConnection.receive

    def recording(self: ServerConnection, frame: object) -> Any:
        event = receive(self, frame)
        size = len(frame) if isinstance(frame, (bytes, bytearray, memoryview)) else -1
        decoded_on.append((size, event is not None, threading.current_thread().name))
        return event

    monkeypatch.setattr(ServerConnection, "receive", recording)
    async with running_server(engine) as server:
        ws, editor = await _speaking(server.url, "chunks")
        layer = Image(width=1024, height=1025, format="rgba8", data=pattern_rgba(1024, 1025).data)
        frames = editor.send(submit("chunked", image=layer, strength=0.0))  # strength 0: no denoising needed
        assert len(frames[-1]) == 4096 and len(frames) == 6  # the header, 4 × 1 MiB, 4 KiB
        loop_thread = threading.current_thread().name
        for frame in frames:
            await ws.send(frame)
        assert (await next_of(ws, Result, 60)).job_id == "chunked"
        await ws.send(encode(GetStatus()))
        await next_of(ws, Status)
        await ws.close()
    completing = [(size, thread) for size, done, thread in decoded_on if done and size == 4096]
    assert completing and all(thread != loop_thread for _, thread in completing)  # joined and checked on a thread
    kept = [thread for size, done, thread in decoded_on if size == 1 << 20]  # chunks only kept until the last
    assert len(kept) == 4 and set(kept) == {loop_thread}  # no thread hop for them
    assert decoded_on[-1][2] == loop_thread  # a small frame on its own (the get_status) stays on the loop


@aio
async def test_jobs_memory_is_bounded_per_editor_and_overall(engine: Any) -> None:
    # a 256² rgba8 job holds 256 KiB of input and reserves 256 KiB for its result: about 0.5 MiB
    async with (
        running_server(engine, editor_memory_mib=2, job_memory_mib=3) as server,
        connected_client(server.url, "a") as (a, ra),
        connected_client(server.url, "b") as (b, rb),
    ):
        await a.submit(submit("a0", size=256, steps=200, strength=1.0))  # keeps the worker busy
        await ra.wait_for(Started, "a0")
        for j in range(1, 4):
            await a.submit(submit(f"a{j}", size=256))
        own = await ra.wait_for(JobError, "a3")
        assert own.code == "queue_full" and "your waiting jobs" in own.message
        await b.submit(submit("b-huge", size=256, batch_size=8))
        huge = await rb.wait_for(JobError, "b-huge")
        assert huge.code == "too_large" and "one editor may use 2 MiB" in huge.message
        for j in range(3):
            await b.submit(submit(f"b{j}", size=256))
        overall = await rb.wait_for(JobError, "b2")
        assert overall.code == "queue_full" and "the backend is busy" in overall.message
        assert not rb.of(JobError, "b0") and not rb.of(JobError, "b1")
        budget = server.hub.budget
        assert budget.used <= budget.total and budget.held_by(a.tracker) == 0
        await a.cancel("a0")
        for job_id in ("a1", "a2"):
            await ra.wait_for(Result, job_id, timeout=60)
        for job_id in ("b0", "b1"):
            await rb.wait_for(Result, job_id, timeout=60)
        await until(lambda: budget.used == 0, what="every job's memory released once delivered")
        jobs = [j for e in server.hub.editors.values() for j in e.jobs.values()]
        assert jobs and all(j.request is None and j.state.finished for j in jobs), "finished jobs keep no inputs"


@aio
async def test_another_editors_load_cannot_take_a_resuming_editors_result(engine: Any) -> None:
    async with running_server(engine, editor_memory_mib=2, job_memory_mib=64) as server:
        ws = await raw_client(server.url, "away")
        await ws.send(encode(submit("mine", size=256, steps=8)))
        await next_of(ws, Started)
        editor = next(e for e in server.hub.editors.values() if "mine" in e.jobs)
        await ws.close()
        async with connected_client(server.url, "busy") as (b, rb):
            for j in range(12):  # results of 0.25 MiB each, far beyond what the old global budget kept
                await b.submit(submit(f"b{j}", size=256, steps=4))
            await until(lambda: editor.jobs["mine"].state.finished, timeout=60, what="the away editor's job")
            for j in range(12):
                assert rb.of(Result, f"b{j}") or rb.of(JobError, f"b{j}") or await rb.wait_for(Result, f"b{j}", 120)
        ws2 = await connect(server.url, max_size=None, compression=None)
        await ws2.send(encode(Hello(version=PROTOCOL_VERSION, client="away", resume=editor.session_id)))
        assert (await next_of(ws2, Welcome)).resumed
        assert (await next_of(ws2, JobStatus)).state == "done"
        result = await next_of(ws2, Result)
        assert result.job_id == "mine" and result.images[0].size == (256, 256)
        await ws2.close()


# ---------------------------------------------------------------------------- the event loop


@aio
async def test_large_frames_are_decoded_off_the_event_loop(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfumato.protocol import ServerConnection

    threads: list[tuple[int, str]] = []
    real_receive = ServerConnection.receive

    def spy(self: ServerConnection, raw: Any) -> Any:
        threads.append((len(raw), threading.current_thread().name))
        return real_receive(self, raw)

    monkeypatch.setattr(ServerConnection, "receive", spy)
    async with running_server(engine) as server:
        ws = await raw_client(server.url)
        await ws.send(encode(submit("big", size=512, steps=2)))  # 1 MiB
        await ws.send(encode(GetStatus()))
        await next_of(ws, Result, 60)
        await ws.close()
    big = [name for size, name in threads if size > MIB]
    small = [name for size, name in threads if size < 1024]
    assert big and all(name.startswith("sfumato-decode") for name in big), threads
    assert small and all(name == "MainThread" for name in small), threads


@aio
async def test_a_frame_of_empty_maps_is_refused_from_its_headers(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url, "honest") as (c, rec):
        ws = await raw_client(server.url, "mallory")
        maps = b"\xdc\x10\x00" + (b"\xdc\x04\x00" + b"\x80" * 1024) * 4096  # 4 M empty maps in 4 MiB
        await ws.send(maps)
        err = await next_of(ws, Error)
        assert err.code == "bad_frame" and "values in one frame" in err.message
        await c.submit(submit("after", steps=4))
        assert (await rec.wait_for(Result, "after", timeout=60)).job_id == "after"
        await ws.close()


@aio
async def test_an_editor_that_stops_reading_is_cut_off_and_does_not_delay_others(engine: Any) -> None:
    async with (
        running_server(engine, send_timeout_s=1.0, outbox_mib=64) as server,
        connected_client(server.url, "honest") as (c, rec),
    ):
        stalled = await connect(server.url, max_size=None, compression=None, max_queue=1)
        await stalled.send(encode(Hello(version=PROTOCOL_VERSION, client="stalled")))
        big = pattern_rgba(512, 512)
        for j in range(12):  # strength 0: no model call, 1 MiB results the stalled editor never reads
            await stalled.send(encode(submit(f"s{j}", image=big, strength=0.0)))
        stalled.transport.pause_reading()  # stop reading at the TCP level
        await until(lambda: any(s.editor and s.editor.name == "stalled" for s in server.connections), what="session")
        session = next(s for s in server.connections if s.editor and s.editor.name == "stalled")
        await c.submit(submit("h0", steps=8, strength=1.0))
        await rec.wait_for(Result, "h0", timeout=60)
        await until(lambda: session not in server.connections, timeout=30, what="the stalled session to end")
        assert session.ws.transport.is_closing(), "the socket itself is closed, not left to the peer"
        editor = next(e for e in server.hub.editors.values() if e.name == "stalled")
        assert editor.connection is None and editor.undelivered, "its unsent results wait for a resume"
        assert sum(r.size for r in editor.undelivered.values()) <= 12 * (1 << 20) + 12 * 4096  # kept, not copied
        stalled.transport.resume_reading()
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(stalled.recv(), 10)


# ---------------------------------------------------------------------------- connections stay alive


@aio
async def test_a_denormal_strength_is_refused_and_the_session_lives_on(engine: Any) -> None:
    async with running_server(engine) as server:
        ws = await raw_client(server.url)
        await ws.send(encode(submit("tiny", strength=5e-324, steps=200)))
        refused = await next_of(ws, JobError)
        assert (refused.job_id, refused.code, refused.field) == ("tiny", "invalid_request", "submit.steps")
        await ws.send(encode(GetStatus()))
        assert (await next_of(ws, Status)).editors == 1
        await ws.send(encode(submit("fine", steps=4)))
        assert (await next_of(ws, Result, 60)).job_id == "fine"
        await ws.close()


@aio
async def test_an_unexpected_failure_answers_internal_and_is_logged(
    engine: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sfumato.backend.server.hub import Hub

    real_submit = Hub.submit

    def buggy(self: Hub, editor: Any, req: Any) -> None:
        if req.prompt == "trip":
            raise ZeroDivisionError("a bug")
        real_submit(self, editor, req)

    monkeypatch.setattr(Hub, "submit", buggy)
    async with running_server(engine) as server:
        ws = await raw_client(server.url)
        with caplog.at_level(logging.ERROR, logger="sfumato.backend.server.connection"):
            await ws.send(encode(submit("t1", prompt="trip")))
            failed = await next_of(ws, JobError)
        assert (failed.job_id, failed.code) == ("t1", "internal") and "ZeroDivisionError" in failed.message
        assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records), "the bug is logged"
        await ws.send(encode(submit("t2", steps=4)))
        assert (await next_of(ws, Result, 60)).job_id == "t2"
        await ws.close()


@aio
async def test_requests_that_cannot_run_are_refused_up_front(engine: Any) -> None:
    async with running_server(engine) as server:
        ws = await raw_client(server.url)
        body = msgpack.unpackb(encode(submit("ctl", size=64)))
        control = {"type": "canny", "image": _image_map(64), "start": 0.5, "end": 0.5}
        await ws.send(msgpack.packb({**body, "controls": [control]}))
        refused = await next_of(ws, JobError)
        assert (refused.job_id, refused.code, refused.field) == ("ctl", "invalid_request", "submit.controls[0].end")
        await ws.send(encode(submit("turbo", size=128, steps=2, strength=1.0)))  # refine would get 0 steps
        started = await next_of(ws, Started)
        assert started.steps == 2
        result = await next_of(ws, Result, 60)
        assert result.job_id == "turbo" and "refine" not in result.timings
        await ws.close()


# ---------------------------------------------------------------------------- what a job tracker needs


@aio
async def test_queue_positions_are_exact_and_follow_the_states(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("a", steps=40, strength=1.0))
        await c.submit(submit("b", steps=4))
        await c.submit(submit("c", steps=4))
        await rec.wait_for(Result, "c", timeout=120)
        waiting: dict[str, int] = {}
        for event in rec.events:
            if isinstance(event, Queued):
                waiting[event.job_id] = event.position
            elif isinstance(event, (Started, Cancelled, JobError, Result)):
                waiting.pop(event.job_id, None)
            assert len(set(waiting.values())) == len(waiting), f"two waiting jobs share a place: {waiting} at {event}"
        assert [e.position for e in rec.of(Queued, "c")] == [2, 1, 0]


@aio
async def test_a_duplicate_id_is_an_error_that_leaves_the_original_running(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("same", steps=30, strength=1.0))
        await rec.wait_for(Started, "same")
        assert c._transport is not None
        await c._transport.send(encode(submit("same", steps=4)))  # the same id again, behind the tracker's back
        err = await rec.wait_for(Error)
        assert (err.code, err.job_id, err.fatal) == ("duplicate_job", "same", False)
        assert c.tracker.jobs["same"].state.value == "running"
        await rec.wait_for(Result, "same", timeout=60)
        assert c.tracker.jobs["same"].state.value == "done"


@aio
async def test_a_second_connection_resuming_a_session_replaces_the_first(engine: Any) -> None:
    async with running_server(engine) as server:
        first = await connect(server.url, max_size=None, compression=None)
        await first.send(encode(Hello(version=PROTOCOL_VERSION, client="twin")))
        session = (await next_of(first, Welcome)).session
        second = await connect(server.url, max_size=None, compression=None)
        await second.send(encode(Hello(version=PROTOCOL_VERSION, client="twin", resume=session)))
        assert (await next_of(second, Welcome)).resumed
        replaced = await next_of(first, Error)
        assert (replaced.code, replaced.fatal) == ("session_replaced", True)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(first.recv(), 10)
        await second.send(encode(submit("still-mine", steps=4)))
        assert (await next_of(second, Result, 60)).job_id == "still-mine"
        await second.close()


# ---------------------------------------------------------------------------- the door and the logs


@aio
async def test_wrong_tokens_are_logged_and_slowed(engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    from sfumato.backend.server.auth import FREE_FAILURES

    token = "a-strong-token-of-32-characters!"
    async with running_server(engine, token=token) as server:
        with caplog.at_level(logging.WARNING, logger="sfumato.backend.server.auth"):
            for _ in range(FREE_FAILURES + 1):
                ws = await connect(server.url)
                await ws.send(encode(Hello(version=PROTOCOL_VERSION, client="guesser", token="guess")))
                assert decode(await ws.recv()).code == "unauthorized"
                await ws.close()
        assert [r for r in caplog.records if "127.0.0.1" in r.getMessage() and "token" in r.getMessage()]
        assert server.gate.delay_for("127.0.0.1") > 0, "the next guess from this peer waits"
        assert server.gate.delay_for("10.0.0.9") == 0, "other peers are not slowed"
        async with connected_client(server.url, token=token) as (c, _):
            assert c.welcome is not None
        assert server.gate.delay_for("127.0.0.1") == 0, "a right token clears the record"


@aio
async def test_editor_strings_cannot_forge_log_lines_or_crash_the_handler(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(engine) as server:
        with caplog.at_level(logging.INFO, logger="sfumato.backend.server"):
            ws = await raw_client(server.url, "krita\nERROR forged line")
            await ws.send(msgpack.packb({"type": "t" * 60_000}))
            err = await next_of(ws, Error)
            assert err.code == "bad_frame" and len(err.message) < 200
            await ws.send(encode(GetStatus()))
            assert isinstance(await next_of(ws, Status), Status)  # still served (no 1011)
            await ws.close()
        lines = [r.getMessage() for r in caplog.records]
        assert any("krita\\nERROR forged line" in line for line in lines), lines
        assert not any("\n" in line for line in lines)


@aio
async def test_duplicate_origin_headers_are_refused_cleanly(engine: Any) -> None:
    async with running_server(engine, allowed_origins=["http://my-tool.local"]) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Origin: http://my-tool.local\r\nOrigin: http://evil.example\r\n\r\n"
        )
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 403"), status_line


def test_nan_in_float_layers_reads_as_black_not_poison(engine: Any) -> None:
    side = 64
    pixels = np.full((side, side, 4), 0.5, np.float32)
    pixels[:8, :8, :3] = np.nan
    pixels[8:16, :8, :3] = np.inf
    image = Image(width=side, height=side, format="rgbaf32", data=pixels.tobytes())
    out = engine.run(submit("nan", image=image, steps=4, strength=0.5), seed=1).images[0]
    got = np.frombuffer(out.data, np.float32).reshape(side, side, 4)
    assert np.isfinite(got).all() and got.min() >= 0.0 and got.max() <= 1.0
