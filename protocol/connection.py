"""The rules of one connection, Sans-I/O: frames in → events out, messages in → frames out.

Both sides of the wire use these objects — the backend's connection a :class:`ServerConnection`, the
editor's client a :class:`ClientConnection` — so the handshake (hello → welcome), version
negotiation, capabilities, resume and which message is legal when are written once. Nothing here
reads a socket, sleeps or knows about asyncio: the caller moves the bytes.

A peer that breaks a rule raises a :class:`ProtocolError` from :meth:`receive` (the typed error
the caller answers with); this side breaking one raises :class:`ProtocolViolation` from
:meth:`send`.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import ClassVar

from .buffers import BUFFERS_SINCE, CHUNKS_SINCE, Frame
from .codec import Encoded, Unknown, encode, encode_frames
from .errors import ErrorCode, ProtocolError, ProtocolViolation, VersionMismatch
from .jobs import JobStates
from .limits import DecodeLimits
from .messages import (
    CLIENT_MESSAGES,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    Cancelled,
    DeviceStatus,
    Error,
    Hello,
    JobError,
    JobStatus,
    Limits,
    Message,
    ModelInfo,
    Status,
    Submit,
    Welcome,
)
from .reader import MessageReader

Event = Message | Unknown

# What an editor accepts from a backend: results may be larger than anything an editor sends.
EDITOR_LIMITS = DecodeLimits(max_message_bytes=1 << 30, max_pixels=1 << 26)

# Since 1.3 a welcome lists LoRAs, embeddings, VAEs and unusable entries, and a submit may carry
# loras and vae; an older peer would refuse the new model kinds and silently ignore the new fields.
DETAILS_SINCE = (1, 3)
KINDS_BEFORE_DETAILS = ("checkpoint", "controlnet")

# Since 1.4 welcome and status list each device's worker, and a job may fail with worker_failed;
# an older editor gets neither (it would ignore the list, and read the code as internal anyway).
DEVICES_SINCE = (1, 4)

# Since 1.5 a welcome lists upscalers and a submit may ask for the upscale task; an older editor
# would refuse the unknown model kind, and an older backend the unknown task.
UPSCALE_SINCE = (1, 5)

# Since 1.6 a welcome lists IP-Adapters and CLIP vision encoders and a submit may carry references;
# an older editor would refuse the unknown model kinds, and an older backend ignore the references.
REFERENCES_SINCE = (1, 6)
KINDS_SINCE_REFERENCES = ("ipadapter", "clip_vision")

# Since 1.6 a submit may be live (a newer live job of the same session supersedes it) and a
# cancelled may say which job superseded it; an older backend would run every live job to the end.
LIVE_SINCE = (1, 6)

# Errors after which reconnecting with the same settings cannot help (or would fight another connection).
NO_RECONNECT = frozenset((ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.SESSION_REPLACED))


class ConnectionState(str, Enum):
    AWAITING_HELLO = "awaiting_hello"  # nothing exchanged yet
    AWAITING_WELCOME = "awaiting_welcome"  # the hello is out (editor) or in (backend); no welcome yet
    OPEN = "open"  # welcomed: jobs may be submitted
    CLOSED = "closed"  # a fatal error was sent or received: nothing more is exchanged


def negotiate(ours: tuple[int, ...], theirs: tuple[int, ...], field: str) -> tuple[int, int]:
    """The version both sides speak: the same major, the lower minor (minors only add)."""
    if theirs[0] != ours[0]:
        raise VersionMismatch(f"expected protocol major version {ours[0]}, got {theirs[0]}.{theirs[1]}", field)
    return ours[0], min(ours[1], theirs[1])


class Connection:
    """What both sides share: decoding within limits, who may send what, the closed state."""

    SENDS: ClassVar[tuple[type[Message], ...]] = ()
    PEER: ClassVar[str] = ""  # the other side, for error messages

    def __init__(self, limits: DecodeLimits, version: tuple[int, int]) -> None:
        self.limits = limits
        self.speaks = version  # the newest version this side offers (PROTOCOL_VERSION unless told older)
        self.state = ConnectionState.AWAITING_HELLO
        self.version: tuple[int, int] | None = None  # negotiated: set by _negotiated()
        self._reader = MessageReader(limits)
        self.compress = False  # zlib images on the way out: the receiver asked for them and the link wants them
        self.closed_by: Error | None = None  # the fatal error that closed the connection, either way

    @property
    def buffers(self) -> bool:
        """Whether large payloads travel as buffer frames (both sides speak 1.2)."""
        return self._speaks(BUFFERS_SINCE)

    @property
    def assembling(self) -> bool:
        """Whether a message's buffer frames are still due: the frame that completes it, however small,
        joins its buffers and validates the whole message."""
        return self._reader.assembling

    def appends_only(self, size: int) -> bool:
        """Whether a binary frame of ``size`` bytes would only be kept as a chunk (see ``MessageReader``)."""
        return self._reader.appends_only(size)

    def receive(self, frame: object) -> Event | None:
        """One websocket message from the peer → the event it completes (``None``: buffer frames still due).

        Raises :class:`ProtocolError` for a frame that does not decode within the limits or breaks a rule."""
        if self.state is ConnectionState.CLOSED:
            raise ProtocolViolation("expected nothing after the connection closed, got a frame", "frame")
        message = self._reader.read(frame)
        if message is None:
            return None
        if isinstance(message, Unknown):
            return self._unknown(message)
        if isinstance(message, self.SENDS):  # a message of our own side's kind
            raise ProtocolViolation(f"expected a message {self.PEER} may send, got {message.TYPE!r}", "type")
        return self._received(message)

    def send(self, message: Message) -> list[Frame]:
        """The frames that carry ``message``, to be sent in order with nothing between; none once closed."""
        if not isinstance(message, self.SENDS):
            raise ProtocolViolation(f"expected a message this side may send, got {message.TYPE!r}", "type")
        if self.state is ConnectionState.CLOSED:
            return []  # the connection is ending: nothing more goes out
        self._sending(message)
        message = self._for_peer(message)
        if isinstance(message, Error) and message.fatal:
            self._close(message)
        if not self.buffers:
            return [encode(message, self.compress)]
        return encode_frames(message, self.compress, chunks=self._speaks(CHUNKS_SINCE))

    def _for_peer(self, message: Message) -> Message:
        """``message`` as the negotiated version knows it."""
        return message

    def _speaks(self, since: tuple[int, int]) -> bool:
        """Whether the negotiated version includes what ``since`` added."""
        return self.version is not None and self.version >= since

    def _negotiated(self, theirs: tuple[int, ...], field: str) -> None:
        self.version = negotiate(self.speaks, theirs, field)
        self._reader.buffers_allowed = self.buffers
        self._reader.chunks_allowed = self._speaks(CHUNKS_SINCE)

    def _close(self, error: Error) -> None:
        self.state = ConnectionState.CLOSED
        self.closed_by = error

    def _unknown(self, message: Unknown) -> Event:
        return message  # from a newer minor version: skipped, never fatal

    def _received(self, message: Message) -> Event:
        raise NotImplementedError

    def _sending(self, message: Message) -> None:
        raise NotImplementedError


class ServerConnection(Connection):
    """The backend's side: expects a hello, answers with :meth:`welcome` or :meth:`refuse`."""

    SENDS = SERVER_MESSAGES
    PEER = "an editor"

    def __init__(
        self,
        limits: DecodeLimits,
        server: str,
        capabilities: tuple[str, ...],
        version: tuple[int, int] = PROTOCOL_VERSION,
    ) -> None:
        super().__init__(limits, version)
        self.server, self.capabilities = server, capabilities
        self.hello: Hello | None = None

    def result_frames(self, encoded: Encoded) -> list[Frame]:
        """A result encoded on a worker's thread (:func:`~.codec.encode_once`), framed the way this editor
        takes it: buffer frames, chunked since 1.7; all inline for a 1.1 editor. Framed even once the
        connection is closing: it was queued before the goodbye, as every frame ahead of it was."""
        return encoded.frames(self.buffers, self._speaks(CHUNKS_SINCE))

    def _unknown(self, message: Unknown) -> Event:
        if self.state is ConnectionState.AWAITING_HELLO:
            raise ProtocolViolation(f"expected a hello message first, got {message.type[:64]!r}", "type")
        return message

    def _received(self, message: Message) -> Event:
        if self.state is ConnectionState.AWAITING_HELLO:
            if not isinstance(message, Hello):
                raise ProtocolViolation(f"expected a hello message first, got {message.TYPE!r}", "type")
            self._negotiated(message.version, "hello.version")
            self.hello, self.state = message, ConnectionState.AWAITING_WELCOME
        elif self.state is ConnectionState.AWAITING_WELCOME:
            raise ProtocolViolation(f"expected nothing before the welcome, got {message.TYPE!r}", "type")
        elif isinstance(message, Hello):
            raise ProtocolViolation("expected one hello per connection, got a second", "type")
        elif isinstance(message, Submit) and message.references and not self._speaks(REFERENCES_SINCE):
            refused = ProtocolViolation("expected no references before protocol 1.6, got some", "submit.references")
            refused.job_id = message.job_id  # the refusal names the job; it never enters a state
            raise refused
        elif isinstance(message, Submit) and message.task == "upscale" and not self._speaks(UPSCALE_SINCE):
            refused = ProtocolViolation("expected img2img or inpaint before protocol 1.5, got upscale", "submit.task")
            refused.job_id = message.job_id  # the refusal names the job; it never enters a state
            raise refused
        elif isinstance(message, Submit) and message.live and not self._speaks(LIVE_SINCE):
            refused = ProtocolViolation("expected no live job before protocol 1.6, got one", "submit.live")
            refused.job_id = message.job_id
            raise refused
        return message

    def welcome(
        self,
        session: str,
        resumed: bool,
        limits: Limits,
        models: tuple[ModelInfo, ...],
        device: str,
        compress: bool = False,
        devices: tuple[DeviceStatus, ...] = (),
    ) -> list[Frame]:
        """Accept the hello. ``compress``: this link wants zlib images (it is not loopback-only)."""
        if self.state is not ConnectionState.AWAITING_WELCOME or self.hello is None:
            raise ProtocolViolation(f"expected to welcome after a hello, in state {self.state.value}", "state")
        if not self._speaks(DETAILS_SINCE):
            models = tuple(m for m in models if m.kind in KINDS_BEFORE_DETAILS and not m.problem)
        if not self._speaks(DEVICES_SINCE):
            devices = ()
        if not self._speaks(UPSCALE_SINCE):
            models = tuple(m for m in models if m.kind != "upscaler")
        if not self._speaks(REFERENCES_SINCE):
            models = tuple(m for m in models if m.kind not in KINDS_SINCE_REFERENCES)
        welcome = Welcome(
            version=self.speaks,
            server=self.server,
            session=session,
            resumed=resumed,
            limits=limits,
            models=models,
            device=device,
            capabilities=self.capabilities,
            devices=devices,
        )
        self.compress = compress and "zlib" in self.hello.capabilities
        self.state = ConnectionState.OPEN
        return [encode(welcome)]

    def refuse(self, error: ProtocolError) -> list[Frame]:
        """End the handshake with a fatal error (every handshake error is fatal)."""
        return self.send(Error(code=error.code, message=error.message, field=error.field, fatal=True))

    def _for_peer(self, message: Message) -> Message:
        if isinstance(message, Cancelled) and message.superseded_by is not None and not self._speaks(LIVE_SINCE):
            return dataclasses.replace(message, superseded_by=None)  # never sent: such an editor sends no live job
        if self._speaks(DEVICES_SINCE):
            return message
        if isinstance(message, Status) and message.devices:
            return dataclasses.replace(message, devices=())
        if isinstance(message, JobError) and message.code == ErrorCode.WORKER_FAILED:
            return dataclasses.replace(message, code=ErrorCode.INTERNAL)
        return message

    def _sending(self, message: Message) -> None:
        if isinstance(message, Welcome):
            raise ProtocolViolation("expected welcome() to send the welcome", "type")
        if self.state is not ConnectionState.OPEN and not isinstance(message, Error):
            raise ProtocolViolation(f"expected only errors before the welcome, got {message.TYPE!r}", "type")


class ClientConnection(Connection):
    """The editor's side: says :meth:`hello`, then follows its jobs' states through ``jobs``.

    ``resume`` is the session id of an earlier welcome; ``jobs`` the session's job states, kept
    across connections: a welcome that resumes keeps them, any other clears them."""

    SENDS = CLIENT_MESSAGES
    PEER = "a backend"

    def __init__(
        self,
        client: str,
        kind: str = "other",
        token: str | None = None,
        resume: str | None = None,
        jobs: JobStates | None = None,
        capabilities: tuple[str, ...] = ("zlib",),
        limits: DecodeLimits = EDITOR_LIMITS,
        version: tuple[int, int] = PROTOCOL_VERSION,
    ) -> None:
        super().__init__(limits, version)
        self._hello = Hello(
            version=version, client=client, kind=kind, token=token, capabilities=capabilities, resume=resume
        )
        self.jobs = jobs if jobs is not None else JobStates()
        self.welcome: Welcome | None = None
        self.resumed = False

    @property
    def may_reconnect(self) -> bool:
        """Whether connecting again with the same settings can succeed."""
        return self.closed_by is None or self.closed_by.code not in NO_RECONNECT

    def hello(self) -> list[Frame]:
        if self.state is not ConnectionState.AWAITING_HELLO:
            raise ProtocolViolation(f"expected one hello per connection, in state {self.state.value}", "state")
        self.state = ConnectionState.AWAITING_WELCOME
        return [encode(self._hello)]

    def _received(self, message: Message) -> Event:
        if self.state is ConnectionState.AWAITING_HELLO:
            raise ProtocolViolation(f"expected the editor to speak first, got {message.TYPE!r}", "type")
        if isinstance(message, Error):
            if message.fatal or self.state is ConnectionState.AWAITING_WELCOME:  # a refused handshake ends it
                self._close(message)
        elif self.state is ConnectionState.AWAITING_WELCOME:
            if not isinstance(message, Welcome):
                raise ProtocolViolation(f"expected a welcome first, got {message.TYPE!r}", "type")
            self._welcomed(message)
        elif isinstance(message, Welcome):
            raise ProtocolViolation("expected one welcome per connection, got a second", "type")
        elif isinstance(message, JobStatus) and not self.resumed:
            raise ProtocolViolation("expected job_status only after a resumed welcome", "type")
        else:
            self.jobs.apply(message)
        return message

    def _welcomed(self, welcome: Welcome) -> None:
        self._negotiated(welcome.version, "welcome.version")
        self.welcome = welcome
        self.resumed = welcome.resumed and welcome.session == self._hello.resume
        if not self.resumed:
            self.jobs.clear()  # a new session: the backend knows none of the earlier jobs
        self.state = ConnectionState.OPEN

    def _sending(self, message: Message) -> None:
        if isinstance(message, Hello):
            raise ProtocolViolation("expected hello() to send the hello", "type")
        if self.state is not ConnectionState.OPEN:
            raise ProtocolViolation(f"expected to send {message.TYPE!r} after the welcome", "state")
        if isinstance(message, Submit):
            if (message.loras or message.vae) and not self._speaks(DETAILS_SINCE):
                raise ProtocolViolation(
                    "the backend speaks an older protocol that cannot apply LoRAs or a VAE; update the backend",
                    "submit.loras" if message.loras else "submit.vae",
                )
            if message.task == "upscale" and not self._speaks(UPSCALE_SINCE):
                raise ProtocolViolation(
                    "the backend speaks an older protocol that cannot upscale; update the backend", "submit.task"
                )
            if message.references and not self._speaks(REFERENCES_SINCE):
                raise ProtocolViolation(
                    "the backend speaks an older protocol that cannot use reference images; update the backend",
                    "submit.references",
                )
            if message.live and not self._speaks(LIVE_SINCE):
                raise ProtocolViolation(
                    "the backend speaks an older protocol that cannot paint live; update the backend", "submit.live"
                )
            self.jobs.submitted(message.job_id)
