"""Bytes ⇄ messages. The only module that touches msgpack.

``decode`` never raises anything but :class:`ProtocolError` subclasses, whatever the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from .buffers import BUFFERS, Frame, attach, check_references, chunked, sizes, split
from .errors import BadFrame, InvalidMessage, LimitExceeded, ProtocolError
from .images import compress_images
from .limits import DEFAULT_LIMITS, DecodeLimits
from .messages import BY_TYPE, JOB_ID, MAX_TYPE_CHARS, Message
from .scan import scan
from .schema import describe


class Unknown:
    """A well-formed frame whose type this version does not know: skip it (and its buffers), do not fail."""

    __slots__ = ("buffers", "type")

    def __init__(self, type_: str, buffers: tuple[int, ...] = ()) -> None:
        self.type = type_
        self.buffers = buffers  # sizes of the buffer frames that follow it, to be skipped too

    def __repr__(self) -> str:
        return f"Unknown({self.type!r})"


@dataclass(frozen=True)
class Header:
    """A decoded header frame whose declared sizes passed every limit; ``buffers``: the frames it waits for."""

    cls: type[Message]
    body: dict[str, Any]
    buffers: tuple[int, ...]
    limits: DecodeLimits

    def refused(self, exc: ProtocolError) -> ProtocolError:
        """``exc``, naming this header's job."""
        return _named(self.body, exc)


def encode(message: Message, compress: bool = False) -> bytes:
    """Serialise a message as one frame. ``compress`` zlib-compresses image payloads (for remote links)."""
    return _pack(_body(message, compress))


def encode_frames(message: Message, compress: bool = False, chunks: bool = False) -> list[Frame]:
    """Since 1.2: a header frame, then each large image payload as its own frame (the payload itself, no
    copy); since 1.7 (``chunks``) each payload cut into frames of at most CHUNK_BYTES."""
    header, buffers = split(_body(message, compress))
    return Encoded(_pack(header), tuple(buffers)).frames(True, chunks)


@dataclass(frozen=True)
class Encoded:
    """A message encoded before it is known how its receiver takes large payloads (a result, on the worker's
    thread): the header map with buffer references, and the payloads themselves (not copied)."""

    header: bytes
    buffers: tuple[memoryview, ...]

    @property
    def size(self) -> int:
        return len(self.header) + sum(len(b) for b in self.buffers)

    def frames(self, buffers: bool, chunks: bool) -> list[Frame]:
        """The frames for a peer that takes buffer frames (since 1.2) and chunks (since 1.7), or not."""
        if not self.buffers:
            return [self.header]  # nothing was large: the header is the whole message
        if buffers:
            return [self.header, *(chunked(self.buffers) if chunks else self.buffers)]
        body = msgpack.unpackb(self.header, raw=False)  # a 1.1 peer: every payload inline again (a copy)
        attach(body, self.buffers)  # type: ignore[arg-type]
        del body[BUFFERS]
        return [_pack(body)]


def encode_once(message: Message) -> Encoded:
    """``message`` with its large payloads moved out, for :meth:`Encoded.frames` to frame for any peer."""
    header, buffers = split(_body(message, False))
    return Encoded(_pack(header), tuple(buffers))


def decode(data: object, limits: DecodeLimits = DEFAULT_LIMITS) -> Message | Unknown:
    """Parse and validate one frame holding a whole message (no buffer frames)."""
    header = decode_header(data, limits)
    if isinstance(header, Unknown) or not header.buffers:
        return header if isinstance(header, Unknown) else load(header)
    path = f"{header.cls.PATH}.{BUFFERS}"
    raise _named(header.body, BadFrame("expected one frame with every payload inline, got buffer frames", path))


def decode_header(data: object, limits: DecodeLimits = DEFAULT_LIMITS) -> Header | Unknown:
    """Parse a frame and check everything its header declares, before any payload is taken in.

    Order matters for memory: frame size, then the msgpack headers (depth, entries, objects) before
    anything is unpacked, then the declared sizes (pixels, bytes after inflating, batch, controls,
    buffer frames) before any image is inflated or any buffer frame accepted. A refused frame that
    names a job carries its id in ``ProtocolError.job_id``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadFrame(f"expected a binary frame, got {describe(data)}", "frame")
    if len(data) > limits.max_message_bytes:
        raise LimitExceeded(f"expected a frame of at most {limits.max_message_bytes} bytes, got {len(data)}", "frame")
    body = _unpack(bytes(data), limits)
    if not isinstance(body, dict):
        raise BadFrame(f"expected a map at the top level, got {describe(body)}", "frame")
    kind = body.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_TYPE_CHARS:
        raise BadFrame(f"expected a 'type' string of 1..{MAX_TYPE_CHARS} characters, got {describe(kind)}", "type")
    cls = BY_TYPE.get(kind)
    if cls is None:
        return Unknown(kind, sizes(body, len(data), limits, "frame"))
    try:
        size = cls.declared_bytes(body, cls.PATH, limits)
        if size > limits.max_decoded_bytes:
            raise LimitExceeded(
                f"expected at most {limits.max_decoded_bytes} bytes of images per message, got {size}", cls.PATH
            )
        declared = sizes(body, len(data), limits, cls.PATH)
        check_references(body, declared, cls.PATH)
    except ProtocolError as exc:
        raise _named(body, exc) from None
    return Header(cls, body, declared, limits)


def load(header: Header, buffers: Sequence[bytes] = ()) -> Message:
    """The message of a header, with the buffer frames it declared (their bytes become image data)."""
    try:
        attach(header.body, buffers)
        return header.cls.load(header.body, header.cls.PATH, header.limits)
    except ProtocolError as exc:
        raise _named(header.body, exc) from None


def _named(body: dict[str, Any], exc: ProtocolError) -> ProtocolError:
    """Name the job of a refused frame, so a server can answer the submit it refused by its id."""
    job_id = body.get("job_id")
    if isinstance(job_id, str) and JOB_ID.accepts(job_id):
        exc.job_id = job_id
    return exc


def _body(message: Message, compress: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"type": message.TYPE, **message.dump()}
    return compress_images(body) if compress else body


def _pack(body: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))


def _unpack(data: bytes, limits: DecodeLimits) -> Any:
    scan(data, limits)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str_bytes,
            max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types (ValueError, UnicodeDecodeError, ...)
        raise BadFrame(
            f"expected one msgpack value, got undecodable bytes ({type(exc).__name__}: {str(exc)[:200]})", "frame"
        ) from None


__all__ = [
    "Encoded",
    "Header",
    "InvalidMessage",
    "Unknown",
    "decode",
    "decode_header",
    "encode",
    "encode_frames",
    "encode_once",
    "load",
]
