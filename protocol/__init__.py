"""Sfumato's wire protocol, v1: Sans-I/O (no sockets, no asyncio, no clock), stdlib + msgpack.

Runs unchanged in the backend and inside an editor's embedded Python (3.10+). See SPEC.md.
"""

from .codec import Encoded, Unknown, decode, encode, encode_once
from .connection import ClientConnection, ConnectionState, ServerConnection, negotiate
from .defaults import *  # noqa: F403
from .defaults import __all__ as _defaults_all
from .errors import (
    BadFrame,
    ErrorCode,
    IllegalTransition,
    InvalidMessage,
    LimitExceeded,
    ProtocolError,
    ProtocolViolation,
    VersionMismatch,
)
from .images import BYTES_PER_PIXEL, Image, PixelFormat
from .jobs import JobStates
from .limits import DEFAULT_LIMITS, DecodeLimits
from .messages import *  # noqa: F403
from .messages import __all__ as _messages_all
from .reader import decode_encoded
from .regions import Point, Rect, context_rect
from .states import JobEvent, JobState, advance

__all__ = [
    *_defaults_all,
    *_messages_all,
    "BYTES_PER_PIXEL",
    "DEFAULT_LIMITS",
    "BadFrame",
    "ClientConnection",
    "ConnectionState",
    "DecodeLimits",
    "Encoded",
    "ErrorCode",
    "IllegalTransition",
    "Image",
    "InvalidMessage",
    "JobEvent",
    "JobState",
    "JobStates",
    "LimitExceeded",
    "PixelFormat",
    "Point",
    "ProtocolError",
    "ProtocolViolation",
    "Rect",
    "ServerConnection",
    "Unknown",
    "VersionMismatch",
    "advance",
    "context_rect",
    "decode",
    "decode_encoded",
    "encode",
    "encode_once",
    "negotiate",
]
