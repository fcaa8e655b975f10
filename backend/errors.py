"""Why the backend cannot run a request: the engine's and the model loaders' failures, not the wire's.

A ``ProtocolError`` (protocol/errors.py) says a frame or a message was wrong; a :class:`JobFailure`
says a well-formed request cannot be run here — an unknown model, missing weights, a LoRA that
does not fit, the GPU out of memory. Both reach the editor the same way, as a ``job_error`` with a
code from ``ErrorCode`` and words the painter can act on.
"""

from __future__ import annotations

from sfumato.protocol import ErrorCode


class JobFailure(Exception):
    def __init__(self, message: str, field: str = "", code: str = ErrorCode.INVALID_REQUEST) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message, self.field, self.code = message, field, code


def is_out_of_memory(exc: BaseException) -> bool:
    """The accelerator ran out of memory (recognised by type; torch raises it for CUDA and for the CPU allocator)."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError)
