"""Whole websocket messages in → protocol messages out, for one connection.

A message is one frame, or (since 1.2, once negotiated) a header frame followed by the buffer
frames it declared — since 1.7 each buffer possibly in several chunks. Nothing is kept from a
message that fails: a malformed, missing or extra buffer frame drops the header and every buffer
received with it.
"""

from __future__ import annotations

from .buffers import BUFFERS, MIN_CHUNK_BYTES
from .codec import Encoded, Header, Unknown, decode_header, load
from .errors import BadFrame
from .limits import DecodeLimits
from .messages import Message
from .schema import describe


class MessageReader:
    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.buffers_allowed = False  # set once both sides speak 1.2
        self.chunks_allowed = False  # set once both sides speak 1.7: a buffer may span several frames
        self._header: Header | Unknown | None = None
        self._buffers: list[bytes] = []
        self._chunks: list[bytes] = []  # the part received so far of the buffer now due
        self._chunk_bytes = 0

    @property
    def assembling(self) -> bool:
        """Whether a header's buffer frames are still due (the frame that completes them joins and loads it all)."""
        return self._header is not None

    def appends_only(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes would only be kept as a chunk of the buffer now due (no join, no
        load: cheap wherever it runs); ``False`` for a frame that may complete a buffer or start a message."""
        header = self._header
        return header is not None and size < header.buffers[len(self._buffers)] - self._chunk_bytes

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
        missing = expected - self._chunk_bytes
        size = len(frame) if isinstance(frame, (bytes, bytearray, memoryview)) else None
        if size is None or not (size == missing or (self.chunks_allowed and MIN_CHUNK_BYTES <= size < missing)):
            self._header, self._buffers, self._chunks, self._chunk_bytes = None, [], [], 0
            path = f"{header.cls.PATH}.{BUFFERS}[{index}]" if isinstance(header, Header) else "frame"
            due = f"buffer frame {index} of {expected} bytes"
            if self.chunks_allowed and missing > MIN_CHUNK_BYTES:
                due = f"{due}: its {missing} bytes still due, or a chunk of {MIN_CHUNK_BYTES}..{missing - 1} of them"
            exc = BadFrame(f"expected {due}, got {describe(frame)}", path)
            raise header.refused(exc) if isinstance(header, Header) else exc
        assert isinstance(frame, (bytes, bytearray, memoryview))
        # an unknown message's buffers are counted, never kept; websockets gives bytes
        data = b"" if isinstance(header, Unknown) else frame if isinstance(frame, bytes) else bytes(frame)
        if size < missing or self._chunk_bytes:  # a chunk: the buffer is joined once its last chunk is in
            self._chunks.append(data)
            self._chunk_bytes += size
            if size < missing:
                return None
            data, self._chunks, self._chunk_bytes = b"".join(self._chunks), [], 0
        self._buffers.append(data)
        if len(self._buffers) < len(header.buffers):
            return None
        buffers, self._header, self._buffers = self._buffers, None, []
        return header if isinstance(header, Unknown) else load(header, buffers)


def decode_encoded(encoded: Encoded, limits: DecodeLimits) -> Message | Unknown:
    """An :class:`Encoded` message read back, checked like any received one."""
    reader = MessageReader(limits)
    reader.buffers_allowed = True
    message = reader.read(encoded.header)
    for buffer in encoded.buffers:
        message = reader.read(buffer)
    assert message is not None, "an Encoded message holds all its buffers"
    return message
