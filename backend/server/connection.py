"""One editor's connection: the handshake, then a receive loop and a bounded send loop.

The protocol's rules (hello first, versions, which message when) are the :class:`ServerConnection`'s;
this module moves its frames and hands what it receives to the hub.

Nothing an editor sends can stop this connection from answering, or slow down another editor's:
frames are decoded within the negotiated limits (large ones on a decoder thread, never on the
event loop), every unexpected failure while handling one is answered with ``internal`` and logged,
and a peer that stops reading is cut off (the socket is aborted, not politely closed) once a send
has waited ``send_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor
from typing import Any

from sfumato.protocol import (
    Cancel,
    Error,
    ErrorCode,
    GetStatus,
    Hello,
    JobError,
    Message,
    ProtocolError,
    ServerConnection,
    Submit,
    Unknown,
)
from sfumato.protocol.buffers import Frame
from sfumato.protocol.connection import Event

from .auth import Gate
from .hub import Hub
from .jobs import EditorState
from .outbox import Outbox, ResultRef

log = logging.getLogger(__name__)

SERVER_NAME = "sfumato-backend/0.1"
CAPABILITIES = ("zlib", "resume", "previews")
INLINE_DECODE_BYTES = 64 << 10  # larger frames are decoded on a thread: the event loop never waits on them
CLOSE_GRACE_S = 2.0  # a polite close that takes longer than this is an abort


class Connection:
    """The I/O side of one websocket: frames in and out, the protocol's rules in ``self.protocol``."""

    def __init__(self, hub: Hub, ws: Any, gate: Gate, decoder: Executor) -> None:
        self.hub, self.ws, self.gate, self.decoder = hub, ws, gate, decoder
        self.protocol = ServerConnection(hub.decode_limits, SERVER_NAME, CAPABILITIES)
        self.outbox = Outbox(hub.config.outbox_mib << 20)
        self.editor: EditorState | None = None
        self._close_reason = ""
        self._abort_on_close = False

    @property
    def peer(self) -> str:
        address = getattr(self.ws, "remote_address", None)
        return str(address[0]) if address else "?"

    # ------------------------------------------------------------------ sending (non-blocking)

    def send(self, message: Message, job_id: str | None = None) -> None:
        for frame in self.protocol.send(message):
            self.send_frame(frame, job_id)

    def send_frame(self, frame: Frame, job_id: str | None = None) -> None:
        self.outbox.put(frame, job_id)

    def send_latest(self, job_id: str, frame: bytes) -> None:
        self.outbox.put_latest(job_id, frame)

    def send_result(self, job_id: str) -> None:
        self.outbox.put_result(job_id)

    def close(self, reason: str) -> None:
        """End the connection once what is already queued for the editor has been sent."""
        self._close_reason = reason
        self.outbox.close()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            hello = await self._handshake()
        except ProtocolError as exc:
            for frame in self.protocol.refuse(exc):
                with contextlib.suppress(Exception):
                    await self._send_guarded(frame)
            await self._close(1008, exc.code)
            return
        except (asyncio.TimeoutError, ConnectionError, OSError):
            await self._close(1008, "no hello")
            return
        except Exception:  # the websocket closed during the handshake
            return
        editor, resumed = self.hub.attach(hello, self)
        log.info("editor %r connected from %s%s", hello.client[:64], self.peer, " (resumed)" if resumed else "")
        welcome = self.protocol.welcome(
            session=editor.session_id,
            resumed=resumed,
            limits=self.hub.limits,
            models=tuple(self.hub.engine.models()),
            device=self.hub.engine.device_label(),
            compress=not self.hub.config.is_loopback(),
            devices=self.hub.device_status(),
        )
        for frame in welcome:
            self.send_frame(frame)
        if resumed:
            self.hub.replay(editor)
        self.hub.broadcast_status()
        sender = asyncio.create_task(self._sender())
        receiver = asyncio.create_task(self._receiver())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            self.hub.detach(self)
            reason = self._close_reason or ("too slow: outbox overflow" if self.outbox.overflowed else "")
            if reason:
                log.info("closing %r from %s: %s", editor.name[:64], self.peer, reason)
            await self._close(1008 if reason else 1000, reason[:120])

    async def _handshake(self) -> Hello:
        raw = await asyncio.wait_for(self.ws.recv(), self.hub.config.hello_timeout_s)
        hello = self.protocol.receive(raw)
        assert isinstance(hello, Hello)  # receive() raises unless the first message is a hello
        await self.gate.check(self.peer, hello.token)
        if self.hub.closing:
            raise ProtocolError("the server is shutting down", "", ErrorCode.SHUTTING_DOWN)
        return hello

    async def _send_result(self, job_id: str) -> None:
        """A result kept by the hub, framed for this editor; forgotten once sent (a disconnect keeps it)."""
        editor = self.editor
        result = self.hub.result_frame(editor, job_id) if editor else None
        if editor is None or result is None:
            return
        if self.protocol.buffers:  # the header and the pixels themselves, cut into chunks since 1.7
            frames = self.protocol.result_frames(result)
        else:  # a 1.1 editor: one frame with the pixels copied in, made off the event loop
            loop = asyncio.get_running_loop()
            frames = await loop.run_in_executor(self.decoder, self.protocol.result_frames, result)
        for frame in frames:  # one after the other, nothing between: this task is the only sender
            await self._send_guarded(frame)
        self.hub.result_sent(editor, job_id)

    async def _send_guarded(self, frame: Frame) -> None:
        """Send, aborting the connection if the peer has not taken the frame within the send timeout."""
        watchdog = asyncio.get_running_loop().call_later(self.hub.config.send_timeout_s, self._stalled)
        try:
            await self.ws.send(frame)
        finally:
            watchdog.cancel()

    def _stalled(self) -> None:
        self._close_reason = self._close_reason or f"too slow: a send waited {self.hub.config.send_timeout_s:g} s"
        self._abort_on_close = True
        self.abort()

    def abort(self) -> None:
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()  # a peer that does not read cannot hold the socket (or its buffers) open

    async def _close(self, code: int, reason: str) -> None:
        if self._abort_on_close:
            self.abort()
            return
        watchdog = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.abort)
        try:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)
        finally:
            watchdog.cancel()

    # ------------------------------------------------------------------ receiving

    async def _receiver(self) -> None:
        while await self._receive_one():
            pass

    async def _receive_one(self) -> bool:
        """Receive, decode and handle one frame; nothing of it outlives this call."""
        try:
            raw = await self.ws.recv()
        except Exception:  # closed, cleanly or not
            return False
        msg: Event | None
        # a small frame is decoded here, unless it may complete a message of buffer frames (the join and
        # the checks of the whole message would then run on the event loop); so is a chunk that is only kept
        # until its buffer's last one comes; a text frame is refused at once
        inline = (
            isinstance(raw, str)
            or self.protocol.appends_only(len(raw))
            or (len(raw) <= INLINE_DECODE_BYTES and not self.protocol.assembling)
        )
        try:
            if inline:
                msg = self.protocol.receive(raw)
            else:
                msg = await asyncio.get_running_loop().run_in_executor(self.decoder, self.protocol.receive, raw)
        except ProtocolError as exc:
            self._refuse(exc)
            msg = None
        except Exception:
            log.exception("decoding a frame from %s failed unexpectedly", self.peer)
            self.send(Error(code=ErrorCode.INTERNAL, message="the backend failed to read this message"))
            msg = None
        if not inline and not self.protocol.assembling:  # once per message, not per chunk
            await self._release_last_frame()
        del raw
        if msg is None:
            return True
        try:
            self._dispatch(msg)
        except Exception as exc:  # a bug: answer, log, and keep the connection usable
            log.exception("handling a %s from %s failed", type(msg).__name__, self.peer)
            job_id = getattr(msg, "job_id", None)
            text = f"the backend failed on this message: {type(exc).__name__}"
            if isinstance(msg, Submit) and self._is_new_job(msg.job_id):
                self.send(JobError(job_id=msg.job_id, code=ErrorCode.INTERNAL, message=text))
            else:
                self.send(Error(code=ErrorCode.INTERNAL, message=text, job_id=job_id))
        return True

    async def _release_last_frame(self) -> None:
        """websockets' parser keeps the last frame it read until the next one arrives: ask for a pong,
        which is a next one, so a large frame is not held while the editor stays quiet."""
        with contextlib.suppress(Exception):
            await self.ws.ping()

    def _refuse(self, exc: ProtocolError) -> None:
        """A frame that did not decode: a submit that names a new job fails that job; anything else is an error."""
        if exc.job_id is not None and exc.field.startswith("submit") and self._is_new_job(exc.job_id):
            self.send(JobError(job_id=exc.job_id, code=exc.code, message=exc.message, field=exc.field))
        else:
            self.send(Error(code=exc.code, message=exc.message, field=exc.field, job_id=exc.job_id))

    def _is_new_job(self, job_id: str) -> bool:
        job = self.editor.jobs.get(job_id) if self.editor is not None else None
        return job is None or job.state.finished

    def _dispatch(self, msg: Event) -> None:
        editor = self.editor
        if editor is None:  # replaced by a newer connection: nothing more is accepted here
            return
        if isinstance(msg, Submit):
            self.hub.submit(editor, msg)
        elif isinstance(msg, Cancel):
            self.hub.cancel(editor, msg.job_id)
        elif isinstance(msg, GetStatus):
            self.send(self.hub.status())
        elif isinstance(msg, Unknown):
            log.debug("skipping unknown message type %r", msg.type)

    # ------------------------------------------------------------------ sending loop

    async def _sender(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            if isinstance(item, ResultRef):
                await self._send_result(item.job_id)
            else:
                await self._send_guarded(item)
