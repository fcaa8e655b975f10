"""Bytes ⇄ messages. The only module that touches msgpack.

``decode`` never raises anything but :class:`ProtocolError` subclasses, whatever the input.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import BadFrame, InvalidMessage, LimitExceeded, ProtocolError
from .images import compress_images
from .limits import DEFAULT_LIMITS, DecodeLimits
from .messages import BY_TYPE, JOB_ID, MAX_TYPE_CHARS, Message
from .scan import scan
from .schema import describe


class Unknown:
    """A well-formed frame whose type this version does not know: skip it, do not fail."""

    __slots__ = ("type",)

    def __init__(self, type_: str) -> None:
        self.type = type_

    def __repr__(self) -> str:
        return f"Unknown({self.type!r})"


def encode(message: Message, compress: bool = False) -> bytes:
    """Serialise a message. ``compress`` zlib-compresses image payloads (for remote links)."""
    body: dict[str, Any] = {"type": message.TYPE, **message.dump()}
    if compress:
        body = compress_images(body)
    return bytes(msgpack.packb(body, use_bin_type=True))


def decode(data: object, limits: DecodeLimits = DEFAULT_LIMITS) -> Message | Unknown:
    """Parse and validate one frame.

    Order matters for memory: frame size, then the msgpack headers (depth, entries, objects) before
    anything is unpacked, then the declared image sizes (pixels, bytes after inflating, batch,
    controls) before any image is inflated, then the fields. A refused frame that names a job
    carries its id in ``ProtocolError.job_id``.
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
        return Unknown(kind)
    try:
        size = cls.declared_bytes(body, cls.PATH, limits)
        if size > limits.max_decoded_bytes:
            raise LimitExceeded(
                f"expected at most {limits.max_decoded_bytes} bytes of images per message, got {size}", cls.PATH
            )
        return cls.load(body, cls.PATH, limits)
    except ProtocolError as exc:
        job_id = body.get("job_id")
        if isinstance(job_id, str) and JOB_ID.accepts(job_id):
            exc.job_id = job_id
        raise


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


__all__ = ["InvalidMessage", "Unknown", "decode", "encode"]
