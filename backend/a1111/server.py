"""The A1111 API's HTTP server: aiohttp on the backend's own event loop, beside the websocket server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from . import access
from .clients import Clients
from .fields import FieldError
from .routes import Routes, field_error

if TYPE_CHECKING:
    from ..server.app import Server

log = logging.getLogger(__name__)

IMAGE_THREADS = 2  # decoding, resizing and PNG encoding; also bounds the memory that work holds at once
SHUTDOWN_S = 5.0  # the hub has cancelled every job by then: requests in flight are answering

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class A1111Api:
    def __init__(self, server: Server) -> None:
        self.config = server.config
        self.hub = server.hub
        self.gate = server.gate
        self.limit = self.config.max_message_mib << 20
        self.pool = ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="sfumato-a1111")
        self.clients = Clients(self.hub, self.config.max_editors)
        self.routes = Routes(self.config, self.hub, self.clients, self.pool)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard, self._errors], client_max_size=self.limit)
        self.routes.add_to(app, self._expect)
        # lingering_time=0: a refused body is never read to its end; the connection is closed instead
        self._runner = web.AppRunner(app, access_log=None, lingering_time=0, shutdown_timeout=SHUTDOWN_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.a1111_port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse an oversized body before the client sends it."""
        refusal = access.size_refusal(request, self.limit)
        if refusal is not None:
            return refusal
        if request.headers.get("Expect", "").lower() != "100-continue":
            return access.refuse(417, "Only Expect: 100-continue is understood.")
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim answer is not part of the response's size
        return None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Origin, then auth, then size: all before the body is read."""
        refusal = access.origin_refusal(request, self.config.allowed_origins)
        if refusal is not None:
            return refusal
        if request.method == "OPTIONS" and "Origin" in request.headers:
            return access.preflight(request)
        refusal = await access.auth_refusal(request, self.gate) or access.size_refusal(request, self.limit)
        if refusal is not None:
            return refusal
        response = await handler(request)
        response.headers.update(access.cors_headers(request))
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except FieldError as exc:
            return field_error(exc)
