"""One editor's connection: the handshake, then a receive loop and a bounded send loop."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Any

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    DecodeLimits,
    Error,
    ErrorCode,
    GetStatus,
    Hello,
    Message,
    ProtocolError,
    Submit,
    Unknown,
    Welcome,
    check_version,
    decode,
    encode,
)

from .hub import Hub
from .jobs import EditorState
from .outbox import Outbox, ResultRef

log = logging.getLogger(__name__)

SERVER_NAME = "sfumato-backend/0.1"
CAPABILITIES = ("zlib", "resume", "previews")


class Session:
    def __init__(self, hub: Hub, ws: Any) -> None:
        self.hub, self.ws = hub, ws
        cfg = hub.config
        self.limits = DecodeLimits(max_message_bytes=cfg.max_message_mib << 20, max_pixels=cfg.max_pixels)
        self.outbox = Outbox(cfg.outbox_mib << 20)
        self.editor: EditorState | None = None
        self.compress = False
        self._close_reason = ""

    # ------------------------------------------------------------------ sending (non-blocking)

    def send(self, message: Message, job_id: str | None = None) -> None:
        self.send_frame(encode(message, compress=self.compress), job_id)

    def send_frame(self, frame: bytes, job_id: str | None = None) -> None:
        self.outbox.put(frame, job_id)

    def send_latest(self, job_id: str, frame: bytes) -> None:
        self.outbox.put_latest(job_id, frame)

    def send_result(self, job_id: str) -> None:
        self.outbox.put_result(job_id)

    def close(self, reason: str) -> None:
        self._close_reason = reason
        self.outbox.close()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            hello = await self._handshake()
        except ProtocolError as exc:
            await self._send_now(Error(code=exc.code, message=exc.message, field=exc.field, fatal=True))
            await self.ws.close(1008, exc.code)
            return
        except (asyncio.TimeoutError, ConnectionError, OSError):
            await self.ws.close(1008, "no hello")
            return
        except Exception:  # the websocket closed during the handshake
            return
        editor, resumed = self.hub.attach(hello, self)
        self.compress = "zlib" in hello.capabilities and not self.hub.config.is_loopback()
        self.send(
            Welcome(
                version=PROTOCOL_VERSION,
                server=SERVER_NAME,
                session=editor.session_id,
                resumed=resumed,
                limits=self.hub.limits,
                models=tuple(self.hub.engine.models()),
                device=self.hub.engine.device_label(),
                capabilities=CAPABILITIES,
            )
        )
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
            for task in (sender, receiver):
                with contextlib.suppress(BaseException):
                    await task
            self.hub.detach(self)
            reason = self._close_reason or ("too slow: outbox overflow" if self.outbox.overflowed else "")
            if reason:
                log.info("closing %s: %s", editor.name, reason)
            with contextlib.suppress(Exception):
                await self.ws.close(1008 if reason else 1000, reason[:120])

    async def _handshake(self) -> Hello:
        raw = await asyncio.wait_for(self.ws.recv(), self.hub.config.hello_timeout_s)
        msg = decode(raw, self.limits)
        if not isinstance(msg, Hello):
            got = msg.type if isinstance(msg, Unknown) else msg.TYPE
            raise ProtocolError(
                f"expected a hello message first, got {got!r}",
                "type",
                ErrorCode.PROTOCOL_VIOLATION,
            )
        check_version(msg.version)
        expected = self.hub.config.token
        if expected and not hmac.compare_digest((msg.token or "").encode(), expected.encode()):
            raise ProtocolError("wrong or missing token", "hello.token", ErrorCode.UNAUTHORIZED)
        if self.hub.closing:
            raise ProtocolError("the server is shutting down", "", ErrorCode.SHUTTING_DOWN)
        return msg

    async def _send_now(self, message: Message) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.send(encode(message)), self.hub.config.send_timeout_s)

    async def _receiver(self) -> None:
        async for raw in self.ws:
            try:
                msg = decode(raw, self.limits)
            except ProtocolError as exc:
                self.send(Error(code=exc.code, message=exc.message, field=exc.field))
                continue
            self._dispatch(msg)

    def _dispatch(self, msg: Message | Unknown) -> None:
        editor = self.editor
        assert editor is not None
        if isinstance(msg, Submit):
            self.hub.submit(editor, msg)
        elif isinstance(msg, Cancel):
            self.hub.cancel(editor, msg.job_id)
        elif isinstance(msg, GetStatus):
            self.send(self.hub.status())
        elif isinstance(msg, Unknown):
            log.debug("skipping unknown message type %r", msg.type)
        else:
            self.send(
                Error(
                    code=ErrorCode.PROTOCOL_VIOLATION, message=f"a client may not send {msg.TYPE!r} here", field="type"
                )
            )

    async def _sender(self) -> None:
        timeout = self.hub.config.send_timeout_s
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            if isinstance(item, ResultRef):
                editor = self.editor
                frame = editor.undelivered.get(item.job_id) if editor else None
                if editor is None or frame is None:
                    continue
                await asyncio.wait_for(self.ws.send(frame), timeout)
                editor.undelivered.pop(item.job_id, None)  # delivered: now it may be forgotten
            else:
                await asyncio.wait_for(self.ws.send(item), timeout)
