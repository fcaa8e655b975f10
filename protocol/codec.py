"""Bytes ⇄ messages. The only module that touches msgpack.

``decode`` never raises anything but :class:`ProtocolError` subclasses, whatever the input.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import BadFrame, InvalidMessage, LimitExceeded, VersionMismatch
from .images import compress_images
from .limits import DEFAULT_LIMITS, DecodeLimits
from .messages import BY_TYPE, PROTOCOL_VERSION, Message
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


def decode(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Message | Unknown:
    """Parse and validate one frame."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadFrame(f"expected a binary frame, got {describe(data)}", "frame")
    if len(data) > limits.max_message_bytes:
        raise LimitExceeded(f"expected a frame of at most {limits.max_message_bytes} bytes, got {len(data)}", "frame")
    body = _unpack(bytes(data), limits)
    if not isinstance(body, dict):
        raise BadFrame(f"expected a map at the top level, got {describe(body)}", "frame")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise BadFrame(f"expected a string 'type' key, got {describe(kind)}", "type")
    cls = BY_TYPE.get(kind)
    if cls is None:
        return Unknown(kind)
    return cls.load(body, cls.PATH, limits)


def _unpack(data: bytes, limits: DecodeLimits) -> Any:
    try:
        body = msgpack.unpackb(
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
    except Exception as exc:  # msgpack raises many types (ValueError, StackError, RecursionError, ...)
        raise BadFrame(
            f"expected one msgpack value, got undecodable bytes ({type(exc).__name__}: {exc})", "frame"
        ) from None
    _check_depth(body, limits.max_depth)
    return body


def _check_depth(value: Any, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise BadFrame(f"expected nesting of at most {max_depth} levels, got deeper", "frame")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def check_version(version: tuple[int, ...]) -> None:
    """Raise unless ``version`` can talk to this implementation (same major; minors only add)."""
    if version[0] != PROTOCOL_VERSION[0]:
        raise VersionMismatch(
            f"expected protocol major version {PROTOCOL_VERSION[0]}, got {version[0]}.{version[1]}", "hello.version"
        )


__all__ = ["InvalidMessage", "Unknown", "check_version", "decode", "encode"]
