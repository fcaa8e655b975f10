"""The transport seam: bytes in, bytes out. A real websocket, or an in-memory pair for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class TransportClosed(Exception):
    """The connection is gone (by either side); ``reason`` says why if known."""


class Transport(Protocol):
    async def send(self, data: bytes | memoryview) -> None: ...
    async def recv(self) -> bytes: ...
    async def close(self) -> None: ...


Connector = Callable[[], Awaitable[Transport]]


class WebSocketTransport:
    """A client websocket. Works with websockets ≥ 13 (asyncio API) and the legacy API of 10.x–12.x."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    @classmethod
    async def connect(cls, url: str, max_size: int = 1 << 30, open_timeout: float = 10.0) -> WebSocketTransport:
        try:
            from websockets.asyncio.client import connect
        except ImportError:  # websockets < 13 (e.g. Debian 12's 10.4 inside Krita)
            from websockets.client import connect  # type: ignore[no-redef,attr-defined]
        try:
            ws = await asyncio.wait_for(connect(url, max_size=max_size, compression=None), open_timeout)
        except Exception as exc:
            raise TransportClosed(f"cannot connect to {url}: {exc}") from None
        return cls(ws)

    async def send(self, data: bytes | memoryview) -> None:
        try:
            await self._ws.send(data)
        except Exception as exc:
            raise TransportClosed(str(exc) or type(exc).__name__) from None

    async def recv(self) -> bytes:
        try:
            data = await self._ws.recv()
        except Exception as exc:
            raise TransportClosed(str(exc) or type(exc).__name__) from None
        return data if isinstance(data, bytes) else data.encode()

    async def close(self) -> None:
        try:
            await self._ws.close()
        except Exception:
            pass


class MemoryTransport:
    """One end of an in-memory pipe; make both with :func:`memory_pair`."""

    def __init__(self, inbox: asyncio.Queue[bytes | None], peer: asyncio.Queue[bytes | None]) -> None:
        self._inbox, self._peer = inbox, peer
        self.closed = False

    async def send(self, data: bytes | memoryview) -> None:
        if self.closed:
            raise TransportClosed("closed")
        await self._peer.put(bytes(data))

    async def recv(self) -> bytes:
        if self.closed:
            raise TransportClosed("closed")
        data = await self._inbox.get()
        if data is None:
            self.closed = True
            raise TransportClosed("peer closed")
        return data

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._peer.put(None)


def memory_pair() -> tuple[MemoryTransport, MemoryTransport]:
    a: asyncio.Queue[bytes | None] = asyncio.Queue()
    b: asyncio.Queue[bytes | None] = asyncio.Queue()
    return MemoryTransport(a, b), MemoryTransport(b, a)
