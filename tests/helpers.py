"""Shared test helpers: tiny images, a real server on loopback, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from sfumato.protocol import PROTOCOL_VERSION, Hello, Image, Submit, Welcome, decode, encode


def pattern_rgba(w: int, h: int, seed: int = 0, alpha: int | None = 255) -> Image:
    """A deterministic pattern: gradients plus noise, fully opaque unless ``alpha`` is None (varying)."""
    rnd = random.Random(seed)
    data = bytearray(w * h * 4)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 4
            data[i] = (x * 255 // max(1, w - 1) + rnd.randrange(16)) % 256
            data[i + 1] = (y * 255 // max(1, h - 1)) % 256
            data[i + 2] = ((x ^ y) * 8 + rnd.randrange(8)) % 256
            data[i + 3] = alpha if alpha is not None else (0 if x < w // 4 else (128 if x < w // 2 else 255))
    return Image(width=w, height=h, format="rgba8", data=bytes(data))


def rect_mask(w: int, h: int, x0: int, y0: int, x1: int, y1: int, value: int = 255) -> Image:
    data = bytearray(w * h)
    for y in range(y0, y1):
        data[y * w + x0 : y * w + x1] = bytes([value]) * (x1 - x0)
    return Image(width=w, height=h, format="gray8", data=bytes(data))


def submit(job_id: str, size: int = 64, **kw: Any) -> Submit:
    kw.setdefault("task", "img2img")
    kw.setdefault("model", "builtin:tiny")
    kw.setdefault("steps", 4)
    kw.setdefault("strength", 0.5)
    kw.setdefault("seed", 1)
    kw.setdefault("prompt", "a test")
    if "image" not in kw:
        kw["image"] = pattern_rgba(size, size)
    return Submit(job_id=job_id, **kw)


@contextlib.asynccontextmanager
async def running_server(engine: Any, **config: Any) -> AsyncIterator[Any]:
    from sfumato.backend.config import Config
    from sfumato.backend.server.app import Server

    config.setdefault("port", 0)
    server = Server(Config(**config), engine)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=5)


class Recorder:
    """A client listener that records every event and lets tests wait for one."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Any, job: Any) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())
        self._changed.set()

    def of(self, cls: type, job_id: str | None = None) -> list[Any]:
        return [
            e for e in self.events if isinstance(e, cls) and (job_id is None or getattr(e, "job_id", None) == job_id)
        ]

    async def wait_for(self, cls: type, job_id: str | None = None, timeout: float = 60.0, count: int = 1) -> Any:
        async def waiter() -> Any:
            while len(self.of(cls, job_id)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.of(cls, job_id)[count - 1]

        return await asyncio.wait_for(waiter(), timeout)


@contextlib.asynccontextmanager
async def connected_client(url: str, name: str = "test", **kw: Any) -> AsyncIterator[tuple[Any, Recorder]]:
    from sfumato.plugin.core.client import Client
    from sfumato.plugin.core.transport import WebSocketTransport

    rec = Recorder()
    client = Client(lambda: WebSocketTransport.connect(url), name, "test", listener=rec, **kw)
    task = asyncio.create_task(client.run())
    try:
        await client.wait_connected(30)
        yield client, rec
    finally:
        await client.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, with an overall deadline."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 180))

    return run


async def raw_client(url: str, name: str = "raw", **hello: Any) -> Any:
    """A bare websocket that has said hello (for sending what a real client never would)."""
    from websockets.asyncio.client import connect

    ws = await connect(url, max_size=None, compression=None)
    await ws.send(encode(Hello(version=PROTOCOL_VERSION, client=name, kind="test", **hello)))
    welcome = decode(await ws.recv())
    assert isinstance(welcome, Welcome), welcome
    return ws


_READERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


async def recv_message(ws: Any) -> Any:
    """The next whole message on a raw websocket: one frame, or a header and its buffer frames (results
    come so to an editor of protocol 1.2 and later)."""
    from sfumato.protocol.limits import DEFAULT_LIMITS
    from sfumato.protocol.reader import MessageReader

    reader = _READERS.get(ws)
    if reader is None:
        reader = _READERS[ws] = MessageReader(DEFAULT_LIMITS)
        reader.buffers_allowed = reader.chunks_allowed = True
    while (msg := reader.read(await ws.recv())) is None:
        pass
    return msg


async def next_of(ws: Any, cls: type, timeout: float = 30) -> Any:
    """The next message of type ``cls`` on a raw websocket (others are skipped)."""

    async def find() -> Any:
        while True:
            msg = await recv_message(ws)
            if isinstance(msg, cls):
                return msg

    return await asyncio.wait_for(find(), timeout)


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for a state the test cannot be notified of (server internals), checking every 20 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def free_display() -> int:
    """An X display number no X server uses, in any chroot: ``xvfb-run -a`` looks only at its own /tmp,
    but X servers listen on abstract sockets, which the host and its chroots share."""
    for number in random.Random().sample(range(200, 5000), 200):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(f"\0/tmp/.X11-unix/X{number}")
            except OSError:
                continue
        if not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


@contextlib.contextmanager
def backend_process(
    cache: Path, *args: str, env: dict[str, str] | None = None, output: deque[str] | None = None
) -> Iterator[tuple[str, Any]]:
    """``python -m sfumato.backend --port 0 --device cpu ARGS`` in its own process, as a painter runs it.

    Yields its URL and the process once it printed ``listening on``; its output is drained meanwhile, into
    ``output`` when given (a bounded deque: the tail a failing test prints)."""
    import os
    import subprocess
    import sys
    import threading

    full_env = {**os.environ, "SFUMATO_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sfumato.backend", "--port", "0", "--device", "cpu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",  # a stray byte must not end the drain (a full pipe would stall the backend)
        env=full_env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("listening on "):
                break
        else:
            raise RuntimeError("the backend did not start:\n" + "".join(lines))
        sink = output if output is not None else deque(maxlen=0)
        sink.extend(lines)
        drain = threading.Thread(target=sink.extend, args=(proc.stdout,), daemon=True)  # keep the pipe drained
        drain.start()
        yield line.split()[-1], proc
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            if "drain" in locals():
                drain.join(30)  # the pipe ends with the process; closing it under the reader would race
            proc.stdout.close()


class RecordingHooks:
    """Engine hooks that ask for previews and remember what the engine reported; ``cancel_after``
    steps, it asks the engine to stop (the engine's hooks interface, without importing the backend)."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.steps: list[tuple[int, int]] = []
        self.previews: list[Any] = []
        self.started_args: tuple[Any, ...] = ()
        self.cancel_after = cancel_after

    @property
    def started_total(self) -> int:
        """The steps the engine announced it would run."""
        return int(self.started_args[0]) if self.started_args else -1

    def started(self, *args: Any) -> None:
        self.started_args = args

    def progress(self, step: int, total: int) -> None:
        self.steps.append((step, total))

    def wants_preview(self) -> bool:
        return True

    def preview(self, image: Any) -> None:
        self.previews.append(image)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after


class RecordingConnection:
    """What the hub needs of an editor's connection, recording what it is sent (hub tests without sockets)."""

    def __init__(self) -> None:
        self.editor: Any = None
        self.sent: list[Any] = []

    def send(self, message: Any, job_id: str | None = None) -> None:
        self.sent.append(message)

    def send_latest(self, job_id: str, frame: bytes) -> None:
        pass

    def send_result(self, job_id: str) -> None:
        self.sent.append(("result", job_id))

    def close(self, reason: str) -> None:
        pass

    def of(self, cls: type) -> list[Any]:
        return [m for m in self.sent if isinstance(m, cls)]

    @property
    def results(self) -> list[str]:
        """The jobs whose result was handed to this connection."""
        return [m[1] for m in self.sent if isinstance(m, tuple)]
