"""The editor-side connection: automatic reconnect with backoff, resubmission, job tracking.

The rules (hello/welcome, resume, which message when, job states) are the protocol's
:class:`ClientConnection`; this module moves its frames over a transport.

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
    Cancel,
    Cancelled,
    ClientConnection,
    ConnectionState,
    Error,
    GetStatus,
    JobError,
    JobState,
    JobStatus,
    Message,
    ProtocolError,
    Result,
    Submit,
    Unknown,
    VersionMismatch,
    Welcome,
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


def _last_event(msg: Message) -> bool:
    """Whether ``msg`` ends its job for the editor: a resumed ``done`` is followed by its result; a job
    cancelled or failed while the editor was away is told only by its ``job_status``."""
    if isinstance(msg, JobStatus):
        return msg.state != JobState.DONE.value
    return isinstance(msg, (Result, Cancelled, JobError))


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
        self._connection: ClientConnection | None = None
        self._sending = asyncio.Lock()  # the frames of one message go out together
        self._connected = asyncio.Event()
        self._stopping = False

    # ------------------------------------------------------------------ public API

    async def wait_connected(self, timeout: float | None = None) -> Welcome:
        await asyncio.wait_for(self._connected.wait(), timeout)
        assert self.welcome is not None
        return self.welcome

    async def submit(self, submit: Submit, document: object = None) -> TrackedJob:
        job = self.tracker.add(submit, document)
        if self._transport is not None:  # otherwise it goes out on (re)connect
            with contextlib.suppress(TransportClosed):
                await self._send(submit)
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
                assert self._connection is not None
                await self._receive(transport, self._connection)
                detail = "connection closed"
            except (FatalConnectionError, VersionMismatch) as exc:  # retrying cannot help
                self._connected.clear()
                self._set_state("failed", str(exc))
                return
            except (TransportClosed, OSError, asyncio.TimeoutError, ProtocolError) as exc:
                detail = str(exc) or type(exc).__name__
            self._connected.clear()
            self._transport = self._connection = None
            if self.closing():
                break
            self._set_state("disconnected", detail)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])
        self._set_state("disconnected", "closed")

    async def _handshake(self, transport: Transport) -> None:
        conn = ClientConnection(
            self.name, self.kind, self.token, resume=self.session, jobs=self.tracker.states, capabilities=("zlib",)
        )
        await self._write(transport, conn.hello())
        while conn.state is ConnectionState.AWAITING_WELCOME:
            event = conn.receive(await asyncio.wait_for(transport.recv(), 30.0))
            if isinstance(event, Error):
                raise (TransportClosed if conn.may_reconnect else FatalConnectionError)(event.message)
        assert conn.welcome is not None
        self.welcome, self._transport, self._connection = conn.welcome, transport, conn
        self.session = conn.welcome.session
        self._connected.set()
        self._set_state("connected", "resumed" if conn.resumed else "", conn.welcome)
        for job in self.tracker.active():
            if conn.resumed and job.extra.get("sent"):
                continue  # the backend still has it and replays its state
            # never sent, or a new backend (restart or expiry) that knows nothing of it: submit again
            job.extra["resubmitted"] = bool(job.extra.get("sent"))
            await self._write(transport, conn.send(job.submit))
            self.tracker.restarted(job)
            job.extra["sent"] = True

    async def _receive(self, transport: Transport, conn: ClientConnection) -> None:
        while True:
            raw = await transport.recv()
            try:
                msg = conn.receive(raw)
            except ProtocolError as exc:  # a bad frame, or an event its job's state does not allow
                log.warning("ignored a frame from the backend: %s", exc)
                continue
            if msg is None or isinstance(msg, Unknown):  # buffer frames still due, or from a newer minor
                continue
            job = self.tracker.apply(msg)
            self.listener(msg, job)
            if job is not None and job.state.finished and _last_event(msg):
                self.tracker.settle(job)
            if conn.state is ConnectionState.CLOSED:
                reason = conn.closed_by.message if conn.closed_by is not None else "closed"
                # e.g. another connection took this session: do not fight it
                raise (TransportClosed if conn.may_reconnect else FatalConnectionError)(reason)

    async def _send(self, message: Message) -> None:
        transport, conn = self._transport, self._connection
        if transport is None or conn is None:
            raise TransportClosed("not connected to the backend")
        with contextlib.suppress(TransportClosed):
            await self._write(transport, conn.send(message))

    async def _write(self, transport: Transport, frames: list[bytes | memoryview]) -> None:
        async with self._sending:
            for frame in frames:
                await transport.send(frame)

    def _set_state(self, state: str, detail: str = "", welcome: Welcome | None = None) -> None:
        self.state = state
        self.listener(ConnectionChanged(state, detail, welcome), None)
