"""The shared backend, tested as editors use it: a real websockets server on loopback, real clients."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import itertools

from helpers import Recorder, aio, connected_client, next_of, raw_client, running_server, submit, until

from sfumato.backend.config import Config, ConfigError
from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancelled,
    Error,
    Hello,
    JobError,
    JobStatus,
    PreviewSettings,
    Progress,
    Queued,
    Result,
    Started,
    Status,
    Welcome,
    decode,
    encode,
)

# ---------------------------------------------------------------------------- sharing


@pytest.mark.parametrize("editors", [2, 8])
@aio
async def test_concurrent_editors_each_get_only_their_own_events(engine: Any, editors: int) -> None:
    async with (
        running_server(engine) as server,
        contextlib_group([connected_client(server.url, f"editor-{i}") for i in range(editors)]) as clients,
    ):
        for i, (client, _) in enumerate(clients):
            for j in range(2):
                await client.submit(submit(f"e{i}-{j}", seed=i * 10 + j))
        for i, (_, rec) in enumerate(clients):
            for j in range(2):
                result = await rec.wait_for(Result, f"e{i}-{j}", timeout=120)
                assert result.seeds == (i * 10 + j,)
        for i, (_, rec) in enumerate(clients):
            ids = {getattr(e, "job_id", None) for e in rec.events} - {None}
            assert ids == {f"e{i}-0", f"e{i}-1"}, f"editor {i} saw {ids}"
            assert rec.of(Status), "server status is broadcast to every editor"


@aio
async def test_queue_is_fair_across_editors(engine: Any) -> None:
    async with (
        running_server(engine) as server,
        connected_client(server.url, "busy") as (a, ra),
        connected_client(server.url, "light") as (b, rb),
    ):
        for j in range(6):
            await a.submit(submit(f"a{j}", steps=8, strength=1.0))
        await ra.wait_for(Queued, "a5")
        await b.submit(submit("b0", steps=8, strength=1.0))
        queued = await rb.wait_for(Queued, "b0")
        assert queued.position <= 1, "the light editor waits for at most one job of the busy one"
        await rb.wait_for(Result, "b0", timeout=120)
        finished_a = {e.job_id for e in ra.of(Result)}
        assert len(finished_a) <= 2, f"b0 finished after {sorted(finished_a)}"
        await ra.wait_for(Result, "a5", timeout=120)
        positions = [e.position for e in ra.of(Queued, "a5")]
        # kept up to date as the line moves (b0 arriving pushes a5 back one place: that is the fairness)
        assert positions[0] == 5 and positions[-1] == 0 and len(positions) >= 6, positions
        assert all(abs(x - y) == 1 for x, y in itertools.pairwise(positions)), positions


@aio
async def test_per_editor_cap(engine: Any) -> None:
    async with running_server(engine, max_queued_per_editor=2) as server, connected_client(server.url) as (c, rec):
        for j in range(3):
            await c.submit(submit(f"j{j}", steps=8, strength=1.0))
        err = await rec.wait_for(JobError, "j2")
        assert err.code == "queue_full"
        await rec.wait_for(Result, "j1", timeout=60)


# ---------------------------------------------------------------------------- cancel


@aio
async def test_cancel_queued_and_running_jobs(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("long", steps=200, strength=1.0))
        await c.submit(submit("waiting", steps=4))
        await rec.wait_for(Progress, "long")
        await c.cancel("waiting")
        await rec.wait_for(Cancelled, "waiting", timeout=5)
        assert not rec.of(Started, "waiting")
        await c.cancel("long")
        await rec.wait_for(Cancelled, "long", timeout=10)
        progress = rec.of(Progress, "long")
        assert progress[-1].step < progress[-1].total
        assert not rec.of(Result, "long")
        await c.submit(submit("after", steps=4))  # the worker is free again
        await rec.wait_for(Result, "after", timeout=60)
        assert c.tracker.jobs["long"].state.value == "cancelled"


@aio
async def test_an_editor_cannot_cancel_another_editors_job(engine: Any) -> None:
    async with (
        running_server(engine) as server,
        connected_client(server.url, "a") as (a, ra),
        connected_client(server.url, "b") as (b, rb),
    ):
        await a.submit(submit("mine", steps=30, strength=1.0))
        await ra.wait_for(Started, "mine")
        b.tracker.add(submit("mine"))  # b pretends to know the id
        await b.cancel("mine")
        refusal = await rb.wait_for(JobError, "mine")
        assert refusal.code == "not_found"
        result = await ra.wait_for(Result, "mine", timeout=60)
        assert result.job_id == "mine" and not ra.of(Cancelled)


# ---------------------------------------------------------------------------- resume


@aio
async def test_disconnect_mid_job_then_resume_receives_the_result(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        session = c.session
        await c.submit(submit("survivor", steps=40, strength=1.0))
        await rec.wait_for(Progress, "survivor")
        assert c._transport is not None
        await c._transport.close()  # the connection drops; the client reconnects by itself
        status = await rec.wait_for(JobStatus, "survivor", timeout=30)
        assert c.session == session and status.state in ("running", "done")
        result = await rec.wait_for(Result, "survivor", timeout=60)
        assert result.seeds == (1,)
        assert c.tracker.jobs["survivor"].state.value == "done"


@aio
async def test_results_finished_while_away_are_replayed(engine: Any) -> None:
    async with running_server(engine) as server:
        ws = await raw_client(server.url)
        await ws.send(encode(submit("away", steps=4)))
        await next_of(ws, Started)
        await ws.close()
        editor = next(e for e in server.hub.editors.values() if "away" in e.jobs)
        session = editor.session_id
        await until(lambda: "away" in editor.undelivered, 10, "the away editor's result to be kept")
        ws2 = await connect(server.url, max_size=None, compression=None)
        await ws2.send(encode(Hello(version=PROTOCOL_VERSION, client="raw", resume=session)))
        welcome = await next_of(ws2, Welcome)
        assert welcome.resumed and welcome.session == session
        assert (await next_of(ws2, JobStatus)).state == "done"
        assert (await next_of(ws2, Result)).job_id == "away"
        await ws2.close()
        await until(lambda: "away" not in editor.undelivered, 10, "the delivered result to be forgotten")


@aio
async def test_unknown_session_is_a_fresh_start_and_the_client_resubmits(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        c.session = "expired-session"
        job = await c.submit(submit("again", steps=4))
        assert c._transport is not None
        await c._transport.close()
        await rec.wait_for(Result, "again", timeout=60)
        assert job.state.value == "done"


# ---------------------------------------------------------------------------- slow and bad editors


@aio
async def test_bad_input_gets_typed_errors_while_an_honest_editor_is_served(engine: Any) -> None:
    async with running_server(engine, max_message_mib=1) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("honest", steps=20, strength=1.0))
        ws = await raw_client(server.url, "mallory")
        good = msgpack.unpackb(encode(submit("x")))
        cases = [
            (b"\x00\x01garbage", "bad_frame"),
            (b"\xc1", "bad_frame"),
            (msgpack.packb([1, 2, 3]), "bad_frame"),
            (b"\x00" * (1 << 20) + b"x" * 1000, "too_large"),
        ]
        for frame, code in cases:
            await ws.send(frame)
            err = await next_of(ws, Error)
            assert err.code == code and not err.fatal, (code, err)
            assert "expected" in err.message
        # a refused submit that names a new job fails that job, so a client with several in flight knows which
        for frame, code in [
            (msgpack.packb({**good, "strength": "very"}), "bad_message"),
            (msgpack.packb({**good, "image": {**good["image"], "w": 99}}), "bad_message"),
        ]:
            await ws.send(frame)
            failed = await next_of(ws, JobError)
            assert (failed.job_id, failed.code) == ("x", code) and "expected" in failed.message
        await ws.send("a text frame")
        assert (await next_of(ws, Error)).code == "bad_frame"
        await ws.send(encode(submit("m1", model="../../etc/passwd")))
        unknown = await next_of(ws, JobError)
        assert (unknown.code, unknown.field) == ("unknown_model", "submit.model")
        await ws.send(msgpack.packb({"type": "not_in_v1", "x": 1}))  # skipped silently
        await ws.send(encode(Hello(version=PROTOCOL_VERSION, client="again")))
        assert (await next_of(ws, Error)).code == "protocol_violation"
        await ws.send(encode(submit("m2", steps=4)))
        assert (await next_of(ws, Result, 60)).job_id == "m2"  # still served after all that
        await ws.close()
        assert (await rec.wait_for(Result, "honest", timeout=60)).job_id == "honest"


@aio
async def test_fuzzed_frames_never_crash_the_server(engine: Any) -> None:
    rnd = random.Random(2024)
    seeds = [encode(m) for m in (submit("f", model="nope"), Hello(version=PROTOCOL_VERSION, client="x"))]
    seeds += [msgpack.packb({"type": t, "job_id": "q"}) for t in ("cancel", "get_status", "submit", "result")]
    async with running_server(engine, max_message_mib=1) as server:
        sockets = [await raw_client(server.url, f"fuzz{i}") for i in range(4)]
        replies = 0

        async def drain(ws: Any) -> None:
            nonlocal replies
            try:
                async for _ in ws:
                    replies += 1
            except ConnectionClosed:
                pass

        drains = [asyncio.create_task(drain(ws)) for ws in sockets]
        for n in range(6000):
            kind = rnd.random()
            if kind < 0.25:
                frame = rnd.randbytes(rnd.randrange(1, 200))
            elif kind < 0.5:
                f = rnd.choice(seeds)
                frame = f[: rnd.randrange(1, len(f))]
            else:
                f = bytearray(rnd.choice(seeds))
                for _ in range(rnd.randrange(1, 8)):
                    f[rnd.randrange(len(f))] = rnd.randrange(256)
                frame = bytes(f)
            await sockets[n % 4].send(frame)
        async with connected_client(server.url, "after-fuzz") as (c, rec):
            await c.submit(submit("alive", steps=4))
            assert (await rec.wait_for(Result, "alive", timeout=60)).job_id == "alive"
        assert replies > 1000  # the server answered the garbage with errors
        for ws in sockets:
            await ws.close()
        for t in drains:
            await t


# ---------------------------------------------------------------------------- security


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
@aio
async def test_browser_origins_are_rejected(engine: Any, origin: str) -> None:
    async with running_server(engine) as server:
        with pytest.raises(InvalidStatus) as err:
            await connect(server.url, origin=origin)  # type: ignore[arg-type]
        assert err.value.response.status_code == 403
    async with running_server(engine, allowed_origins=["http://my-tool.local"]) as server:
        ws = await connect(server.url, origin="http://my-tool.local")  # type: ignore[arg-type]
        await ws.close()


@aio
async def test_token_and_version_are_checked_in_the_handshake(engine: Any) -> None:
    async with running_server(engine, token="s3cret") as server:
        for hello, code in [
            (Hello(version=PROTOCOL_VERSION, client="x", token="wrong"), "unauthorized"),
            (Hello(version=PROTOCOL_VERSION, client="x"), "unauthorized"),
            (Hello(version=(2, 0), client="x", token="s3cret"), "unsupported_version"),
        ]:
            ws = await connect(server.url)
            await ws.send(encode(hello))
            err = decode(await ws.recv())
            assert isinstance(err, Error) and err.code == code and err.fatal
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        async with connected_client(server.url, token="s3cret") as (c, _):
            assert c.welcome is not None
        rec = Recorder()
        from sfumato.plugin.core.client import Client
        from sfumato.plugin.core.transport import WebSocketTransport

        refused = Client(lambda: WebSocketTransport.connect(server.url), "x", token="nope", listener=rec)
        await asyncio.wait_for(refused.run(), 10)  # gives up: retrying a wrong token is pointless
        assert refused.state == "failed"


def test_non_loopback_bind_without_token_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token"):
        Config(host="0.0.0.0").check()
    with pytest.raises(ConfigError, match="at least 16 characters"):
        Config(host="0.0.0.0", token="t").check()  # a guessable token protects nothing off loopback
    Config(host="0.0.0.0", token="k" * 16).check()
    Config(host="::1").check()
    res = subprocess.run(
        [sys.executable, "-m", "sfumato.backend", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin"},
    )
    assert res.returncode == 2 and "refusing to listen on 0.0.0.0" in res.stderr


def test_config_layers_flags_over_env_over_file(tmp_path: Path) -> None:
    from sfumato.backend.config import load_config

    f = tmp_path / "config.toml"
    f.write_text('[server]\nport = 9000\nmax_batch = 3\nmodel_dirs = ["/a", "/b"]\n')
    cfg = load_config(f, env={"SFUMATO_PORT": "9100", "SFUMATO_MAX_BATCH": "5"}, port=9200)
    assert (cfg.port, cfg.max_batch, cfg.model_dirs) == (9200, 5, [Path("/a"), Path("/b")])
    with pytest.raises(ConfigError, match="unknown setting"):
        f.write_text("[server]\nporrt = 1\n")
        load_config(f, env={})


@aio
async def test_graceful_shutdown_cancels_jobs_and_tells_editors(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("running", steps=200, strength=1.0))
        await c.submit(submit("queued", steps=4))
        await rec.wait_for(Progress, "running")
        await server.stop(grace_s=10)
        await rec.wait_for(Cancelled, "queued", timeout=10)
        await rec.wait_for(Cancelled, "running", timeout=10)
        bye = await rec.wait_for(Error, timeout=10)
        assert bye.code == "shutting_down" and bye.fatal


@aio
async def test_previews_are_throttled_and_latest_wins(engine: Any) -> None:
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("p", steps=60, strength=1.0, preview=PreviewSettings(max_per_second=2.0)))
        await c.submit(submit("q", steps=60, strength=1.0, preview=PreviewSettings(enabled=False)))
        await rec.wait_for(Result, "q", timeout=120)
        with_preview = [e for e in rec.of(Progress, "p") if e.preview is not None]
        assert with_preview, "previews were sent"
        assert not [e for e in rec.of(Progress, "q") if e.preview is not None]
        started = rec.of(Started, "p")[0]
        when = {id(e): t for e, t in zip(rec.events, rec.times)}
        duration = when[id(rec.of(Result, "p")[0])] - when[id(started)]
        assert len(with_preview) <= 2 * duration + 2, (len(with_preview), duration)  # ≤ 2 per second
        assert with_preview[0].preview.width <= 256 and started.steps == 60


class contextlib_group:
    """Enter several async context managers at once (editors connecting side by side)."""

    def __init__(self, managers: list[Any]) -> None:
        self.managers = managers

    async def __aenter__(self) -> list[Any]:
        return [await m.__aenter__() for m in self.managers]

    async def __aexit__(self, *exc: Any) -> None:
        for m in reversed(self.managers):
            await m.__aexit__(*exc)


@aio
async def test_a_failing_job_fails_alone_and_the_next_one_runs(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sfumato.backend.tasks import passes

    real_pass = passes.run_pass

    def flaky(runtime: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        if job.req.prompt == "boom":
            raise RuntimeError("a library bug")
        if job.req.prompt == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_pass(runtime, job, *args, **kwargs)

    monkeypatch.setattr(passes, "run_pass", flaky)
    async with running_server(engine) as server, connected_client(server.url) as (c, rec):
        await c.submit(submit("boom", prompt="boom"))
        await c.submit(submit("oom", prompt="oom"))
        await c.submit(submit("fine", steps=4))
        boom, oom = await rec.wait_for(JobError, "boom"), await rec.wait_for(JobError, "oom")
        assert boom.code == "internal" and "a library bug" in boom.message
        assert oom.code == "out_of_memory" and "smaller" in oom.message
        assert (await rec.wait_for(Result, "fine", timeout=60)).job_id == "fine"


@aio
async def test_a_dropped_editor_expires_after_the_ttl(engine: Any) -> None:
    async with running_server(engine, resume_ttl_s=0.4) as server:
        ws = await raw_client(server.url)
        await ws.send(encode(submit("busy", steps=200, strength=1.0)))
        await ws.send(encode(submit("later", steps=4)))
        await next_of(ws, Started)
        editor = next(e for e in server.hub.editors.values() if "busy" in e.jobs)
        await ws.close()
        await until(lambda: editor.session_id not in server.hub.editors, 10, "the dropped editor to expire")
        assert editor.jobs["later"].state.value == "cancelled"  # queued: removed at once
        assert editor.jobs["busy"].cancel.is_set()  # running: stops at its next step
        ws2 = await connect(server.url)
        await ws2.send(encode(Hello(version=PROTOCOL_VERSION, client="raw", resume=editor.session_id)))
        assert not (await next_of(ws2, Welcome)).resumed
        await ws2.close()


def test_the_terminal_says_what_to_do_next_and_nothing_else(tmp_path: Path) -> None:
    env = {**os.environ, "SFUMATO_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    for key in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(key, None)  # the backend must quiet the libraries itself
    proc = subprocess.Popen(
        [sys.executable, "-m", "sfumato.backend", "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:  # the first start also writes the built-in model: the noisiest moment
            lines.append(line.rstrip("\n"))
            if line.startswith("  stop:"):
                break
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
    start = next(i for i, line in enumerate(lines) if line.startswith("listening on ws://"))
    assert start == 0, f"noise before the first line: {lines[:start]}"
    banner = "\n".join(lines)
    assert "builtin:tiny" in banner and "paints noise" in banner and "--models" in banner
    assert "Settings > Dockers > Sfumato" in banner
    assert "websockets.server" not in banner
