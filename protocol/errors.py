"""The protocol's error tree.

Every error carries a machine-readable ``code`` (it travels on the wire), the ``field`` it concerns
(a dotted path such as ``submit.mask.width``, or ``""``) and a human message saying what was
expected and what arrived.
"""

from __future__ import annotations


class ErrorCode:
    """Codes that travel in ``error`` and ``job_error`` messages. Clients must accept unknown codes."""

    BAD_FRAME = "bad_frame"  # not msgpack, not a map, no type
    BAD_MESSAGE = "bad_message"  # a known message with a wrong or missing field
    TOO_LARGE = "too_large"  # a negotiated limit was exceeded
    UNSUPPORTED_VERSION = "unsupported_version"
    UNAUTHORIZED = "unauthorized"  # missing or wrong token
    PROTOCOL_VIOLATION = "protocol_violation"  # a valid message at the wrong time
    UNKNOWN_MODEL = "unknown_model"
    INVALID_REQUEST = "invalid_request"  # well-formed but not runnable (engine-level checks)
    QUEUE_FULL = "queue_full"
    DUPLICATE_JOB = "duplicate_job"
    NOT_FOUND = "not_found"  # no such job among the caller's own jobs
    OUT_OF_MEMORY = "out_of_memory"
    MISSING_WEIGHTS = "missing_weights"
    INTERNAL = "internal"
    WORKER_FAILED = "worker_failed"  # since 1.4: the worker running the job failed and was replaced
    SHUTTING_DOWN = "shutting_down"
    SESSION_REPLACED = "session_replaced"  # a newer connection resumed this session


class ProtocolError(Exception):
    """Base of every error this package raises.

    ``job_id`` is set by the decoder when a refused frame names a job (so a server can answer the
    submit it refused by its id)."""

    code = ErrorCode.BAD_MESSAGE
    job_id: str | None = None

    def __init__(self, message: str, field: str = "", code: str | None = None) -> None:
        self.field = field
        self.message = message
        if code is not None:
            self.code = code
        super().__init__(f"{field}: {message}" if field else message)


class InvalidMessage(ProtocolError):
    """Remote garbage: bytes or values that do not form a valid message of this version.

    Also raised when a message is constructed locally with invalid values, so a bad request is
    caught before it leaves the editor.
    """


class BadFrame(InvalidMessage):
    code = ErrorCode.BAD_FRAME


class LimitExceeded(InvalidMessage):
    code = ErrorCode.TOO_LARGE


class VersionMismatch(ProtocolError):
    code = ErrorCode.UNSUPPORTED_VERSION


class ProtocolViolation(ProtocolError):
    """A valid message at the wrong time or from the wrong side (by the peer, or by this side when sending)."""

    code = ErrorCode.PROTOCOL_VIOLATION


class IllegalTransition(ProtocolError):
    """A job event that the job's current state does not allow (local misuse or a confused peer)."""

    code = ErrorCode.PROTOCOL_VIOLATION

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"event '{event}' is not allowed in state '{state}'", field="state")
