"""The websockets server: security checks on the upgrade, a session per connection, one worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from sfumato.protocol import Cancelled, Error, ErrorCode, JobEvent, encode

from ..config import Config
from .hub import EngineLike, Hub
from .session import Session
from .worker import Worker

log = logging.getLogger(__name__)


class Server:
    def __init__(self, config: Config, engine: EngineLike) -> None:
        config.check()
        self.config = config
        self.hub = Hub(config, engine)
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.worker: Worker | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port}"

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse browser pages: any Origin header (even ``null``) unless allow-listed."""
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.config.allowed_origins:
            log.warning("refused a websocket upgrade from origin %r", origin)
            return connection.respond(HTTPStatus.FORBIDDEN, "Browser origins are not allowed.\n")
        return None

    async def start(self) -> None:
        self.worker = Worker(self.hub)
        self._tasks = [asyncio.create_task(self.worker.run()), asyncio.create_task(self._reaper())]
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._check_request,
            max_size=2 * (self.config.max_message_mib << 20),  # larger frames: typed error from the decoder
            compression=None,  # pixels are incompressible by deflate at speed; zlib is opt-in per image
            max_queue=4,
            ping_interval=20,
            ping_timeout=60,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def _handle(self, ws: ServerConnection) -> None:
        await Session(self.hub, ws).run()

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.resume_ttl_s / 4))
            self.hub.expire()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Graceful shutdown: cancel every job, tell every editor, then close."""
        hub = self.hub
        hub.closing = True
        for editor in list(hub.editors.values()):
            for job in editor.active_jobs:
                job.cancel.set()
                if hub.queue.remove(job):
                    job.advance(JobEvent.CANCELLED)
                    hub.emit(job, Cancelled(job_id=job.id))
        if self.worker is not None and self.worker.current is not None:
            deadline = asyncio.get_running_loop().time() + grace_s
            while self.worker.current is not None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        bye = encode(Error(code=ErrorCode.SHUTTING_DOWN, message="the server is shutting down", fatal=True))
        sessions = [e.session for e in hub.editors.values() if e.session is not None]
        for session in sessions:
            session.send_frame(bye)
        await asyncio.sleep(0.2)  # let the senders flush the last events
        for session in sessions:
            session.close("server shutdown")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), grace_s)
        if self.worker is not None:
            self.worker.shutdown()
