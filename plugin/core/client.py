"""The editor-side connection: handshake, automatic reconnect with backoff, resume, job tracking.

Runs on an asyncio loop (a network thread inside Krita, the main thread in the CLI). Everything the
UI needs arrives through ``listener(event)``: protocol messages, plus :class:`ConnectionChanged`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    DecodeLimits,
    Error,
    ErrorCode,
    GetStatus,
    Hello,
    JobState,
    Message,
    ProtocolError,
    Submit,
    Unknown,
    Welcome,
    check_version,
    decode,
    encode,
)

from .jobs import JobTracker, TrackedJob
from .transport import Connector, Transport, TransportClosed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionChanged:
    state: str  # "connecting" | "connected" | "disconnected" | "failed"
    detail: str = ""
    welcome: Welcome | None = None


Event = Message | ConnectionChanged
Listener = Callable[[Event, "TrackedJob | None"], None]


class FatalConnectionError(Exception):
    """The backend refused us for good (wrong token, incompatible version): do not retry."""


class Client:
    def __init__(
        self,
        connector: Connector,
        name: str,
        kind: str = "other",
        token: str | None = None,
        listener: Listener | None = None,
        backoff: tuple[float, float] = (0.25, 10.0),
    ) -> None:
        self.connector, self.name, self.kind, self.token = connector, name, kind, token
        self.listener = listener or (lambda event, job: None)
        self.backoff = backoff
        self.tracker = JobTracker()
        self.welcome: Welcome | None = None
        self.session: str | None = None
        self.state = "disconnected"
        self._transport: Transport | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self._limits = DecodeLimits(max_message_bytes=1 << 30, max_pixels=1 << 26)

    # ------------------------------------------------------------------ public API

    async def wait_connected(self, timeout: float | None = None) -> Welcome:
        await asyncio.wait_for(self._connected.wait(), timeout)
        assert self.welcome is not None
        return self.welcome

    async def submit(self, submit: Submit, document: object = None) -> TrackedJob:
        job = self.tracker.add(submit, document)
        if self._transport is not None:  # otherwise it goes out on (re)connect
            with contextlib.suppress(TransportClosed):
                await self._transport.send(encode(submit))
                job.extra["sent"] = True
        return job

    async def cancel(self, job_id: str) -> None:
        await self._send(Cancel(job_id=job_id))

    async def request_status(self) -> None:
        await self._send(GetStatus())

    def closing(self) -> bool:
        """Whether :meth:`close` was called (a method: the flag changes while run() awaits)."""
        return self._stopping

    async def close(self) -> None:
        self._stopping = True
        if self._transport is not None:
            await self._transport.close()

    # ------------------------------------------------------------------ connection loop

    async def run(self) -> None:
        """Connect, serve, and reconnect with exponential backoff until :meth:`close`."""
        delay = self.backoff[0]
        while not self._stopping:
            self._set_state("connecting")
            try:
                transport = await self.connector()
                await self._handshake(transport)
                delay = self.backoff[0]
                await self._receive(transport)
                detail = "connection closed"
            except FatalConnectionError as exc:
                self._connected.clear()
                self._set_state("failed", str(exc))
                return
            except (TransportClosed, OSError, asyncio.TimeoutError, ProtocolError) as exc:
                detail = str(exc) or type(exc).__name__
            self._connected.clear()
            self._transport = None
            if self.closing():
                break
            self._set_state("disconnected", detail)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])
        self._set_state("disconnected", "closed")

    async def _handshake(self, transport: Transport) -> None:
        hello = Hello(
            version=PROTOCOL_VERSION,
            client=self.name,
            kind=self.kind,
            token=self.token,
            capabilities=("zlib",),
            resume=self.session,
        )
        await transport.send(encode(hello))
        while True:
            msg = decode(await asyncio.wait_for(transport.recv(), 30.0), self._limits)
            if isinstance(msg, Error):
                if msg.code in (ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION):
                    raise FatalConnectionError(msg.message)
                raise TransportClosed(msg.message)
            if isinstance(msg, Welcome):
                break
        check_version(msg.version)
        self.welcome, self._transport = msg, transport
        resumed = msg.resumed and msg.session == self.session
        self.session = msg.session
        self._connected.set()
        self._set_state("connected", "resumed" if resumed else "", msg)
        for job in self.tracker.active():
            if resumed and job.extra.get("sent"):
                continue  # the backend still has it and replays its state
            # never sent, or a new backend (restart or expiry) that knows nothing of it: submit again
            job.extra["resubmitted"] = bool(job.extra.get("sent"))
            job.state, job.step, job.position = JobState.QUEUED, 0, None
            await transport.send(encode(job.submit))
            job.extra["sent"] = True

    async def _receive(self, transport: Transport) -> None:
        while True:
            raw = await transport.recv()
            try:
                msg = decode(raw, self._limits)
            except ProtocolError as exc:
                log.warning("ignored a bad frame from the backend: %s", exc)
                continue
            if isinstance(msg, Unknown):
                continue
            job = None
            if hasattr(msg, "job_id"):
                try:
                    job = self.tracker.apply(msg)
                except ProtocolError as exc:
                    log.warning("ignored an out-of-order event: %s", exc)
                    continue
            self.listener(msg, job)
            if isinstance(msg, Error) and msg.fatal:
                if msg.code == ErrorCode.SESSION_REPLACED:  # another connection took this session: do not fight it
                    raise FatalConnectionError(msg.message)
                raise TransportClosed(msg.message)

    async def _send(self, message: Message) -> None:
        transport = self._transport
        if transport is None:
            raise TransportClosed("not connected to the backend")
        with contextlib.suppress(TransportClosed):
            await transport.send(encode(message))

    def _set_state(self, state: str, detail: str = "", welcome: Welcome | None = None) -> None:
        self.state = state
        self.listener(ConnectionChanged(state, detail, welcome), None)
