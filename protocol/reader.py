"""Whole websocket messages in → protocol messages out, for one connection.

A message is one frame, or (since 1.2, once negotiated) a header frame followed by the buffer
frames it declared. Nothing is kept from a message that fails: a malformed, missing or extra
buffer frame drops the header and every buffer received with it.
"""

from __future__ import annotations

from .buffers import BUFFERS
from .codec import Header, Unknown, decode_header, load
from .errors import BadFrame
from .limits import DecodeLimits
from .messages import Message
from .schema import describe


class MessageReader:
    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.buffers_allowed = False  # set once both sides speak 1.2
        self._header: Header | Unknown | None = None
        self._buffers: list[bytes] = []

    def read(self, frame: object) -> Message | Unknown | None:
        """The message ``frame`` completes, or ``None`` while its buffer frames are still arriving."""
        if self._header is None:
            return self._start(frame)
        return self._take(self._header, frame)

    def _start(self, frame: object) -> Message | Unknown | None:
        header = decode_header(frame, self.limits)
        if not header.buffers:
            return header if isinstance(header, Unknown) else load(header)
        if not self.buffers_allowed:
            exc = BadFrame("expected every payload inline (buffer frames need version 1.2 on both sides)", BUFFERS)
            raise header.refused(exc) if isinstance(header, Header) else exc
        self._header = header
        return None

    def _take(self, header: Header | Unknown, frame: object) -> Message | Unknown | None:
        index = len(self._buffers)
        expected = header.buffers[index]
        if not isinstance(frame, (bytes, bytearray, memoryview)) or len(frame) != expected:
            self._header, self._buffers = None, []
            path = f"{header.cls.PATH}.{BUFFERS}[{index}]" if isinstance(header, Header) else "frame"
            exc = BadFrame(f"expected buffer frame {index} of {expected} bytes, got {describe(frame)}", path)
            raise header.refused(exc) if isinstance(header, Header) else exc
        self._buffers.append(frame if isinstance(frame, bytes) else bytes(frame))  # websockets gives bytes
        if len(self._buffers) < len(header.buffers):
            return None
        buffers, self._header, self._buffers = self._buffers, None, []
        return header if isinstance(header, Unknown) else load(header, buffers)
