"""The websockets server: security checks on the upgrade, a Connection per websocket, a worker per device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from sfumato.protocol import Error, ErrorCode

from ..config import Config
from .auth import Gate
from .connection import Connection
from .hub import EngineLike, Hub
from .worker import Worker
from .workers import Renew, Workers

log = logging.getLogger(__name__)

FRAME_SLACK_BYTES = 64 << 10  # frames a little over the limit get a typed `too_large`; larger ones close 1009
DECODER_THREADS = 2


class Server:
    def __init__(
        self,
        config: Config,
        engines: EngineLike | Sequence[EngineLike],
        renew: Renew | None = None,
        worker: type[Worker] = Worker,
    ) -> None:
        """``engines``: one per device, each run by its own ``worker``; ``renew`` replaces a failed worker's engine."""
        config.check()
        self.config = config
        self.engines = list(engines) if isinstance(engines, Sequence) else [engines]
        self.renew = renew
        self.worker = worker
        self.hub = Hub(config, self.engines[0])
        self.gate = Gate(config.token)
        self.decoder = ThreadPoolExecutor(DECODER_THREADS, thread_name_prefix="sfumato-decode")
        self.connections: set[Connection] = set()
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.workers: Workers | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port}"

    def _check_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse browser pages (any Origin header, even ``null``, unless allow-listed) and connection floods."""
        origins = request.headers.get_all("Origin")
        if origins and (len(origins) > 1 or origins[0] not in self.config.allowed_origins):
            log.warning("refused a websocket upgrade from origin %s", ", ".join(repr(o[:100]) for o in origins[:4]))
            return ws.respond(HTTPStatus.FORBIDDEN, "Browser origins are not allowed.\n")
        if len(self.connections) >= self.config.max_editors:
            log.warning("refused a connection: %d editors are connected (max_editors)", len(self.connections))
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Too many editors are connected.\n")
        return None

    async def start(self) -> None:
        self.workers = self.hub.devices = Workers(self.hub, self.engines, self.renew, self.worker)
        self._tasks = [asyncio.create_task(self.workers.run()), asyncio.create_task(self._reaper())]
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._check_request,
            max_size=(self.config.max_message_mib << 20) + FRAME_SLACK_BYTES,
            compression=None,  # pixels are incompressible by deflate at speed; zlib is opt-in per image
            max_queue=1,  # at most one received frame waits per editor; TCP holds the rest back
            ping_interval=20,
            ping_timeout=60,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def _handle(self, ws: ServerConnection) -> None:
        connection = Connection(self.hub, ws, self.gate, self.decoder)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.resume_ttl_s / 4))
            self.hub.expire()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Graceful shutdown: cancel every job, wait for every worker, tell every editor, then close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self.hub.shutdown()
        if self.workers is not None:
            await self.workers.idle(grace_s)
        bye = Error(code=ErrorCode.SHUTTING_DOWN, message="the server is shutting down", fatal=True)
        connections = list(self.connections)
        for connection in connections:
            connection.send(bye)
            connection.close("server shutdown")  # after what is queued: the last `cancelled` and the goodbye
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            self._server.close(close_connections=False)
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                for connection in list(self.connections):  # editors that would not take their last frames
                    connection.abort()
        if self.workers is not None:
            await self.workers.stop(max(0.1, deadline - loop.time()))
        self.decoder.shutdown(wait=False, cancel_futures=True)
