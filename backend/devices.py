"""The devices the backend runs workers on: one worker per entry of ``--device`` (see server/workers.py).

Also what a worker's thread sets up for its device, how the CPU's cores are shared between CPU
workers, and which failures mean a device (not a request) is broken.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

DEVICE_NAMES = "auto, all, cpu, cuda, cuda:N or mps"


class DeviceLost(Exception):
    """The device can no longer be trusted to run jobs: its worker fails the job and is replaced."""


def expand(names: Sequence[str]) -> list[str]:
    """``--device`` entries → one device per worker. ``all``: every CUDA GPU, else the one best device."""
    from .engine import pick_device

    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(_cuda_devices() or [pick_device("auto")])
        else:
            out.append(pick_device(name))
    return out or [pick_device("auto")]


def _cuda_devices() -> list[str]:
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def share_cpu(devices: Sequence[str]) -> int | None:
    """Give each CPU worker an equal share of the cores; the intra-op thread count it set, or None.

    torch's intra-op thread pool is per process, not per thread (``torch.set_num_threads`` on a
    worker thread changes it for every thread), so "one share each" is made true by sizing that one
    pool: with N CPU workers each op runs on cores // N threads, and N ops at once fill the cores.
    With one CPU worker torch's own default stays."""
    workers = sum(1 for d in devices if d == "cpu")
    if workers < 2:
        return None
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


def bind_thread(device: str) -> None:
    """On a worker's thread: make its device the thread's current CUDA device (torch keeps one per thread),
    so code that allocates on "cuda" without an index lands on this worker's GPU."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(device)


def is_device_lost(exc: BaseException) -> bool:
    """A failure after which the device cannot run more jobs (not one that only this request caused).

    CUDA reports an illegal memory access or a device-side assert once and then fails every later
    call on that context ("sticky" errors); torch raises them as ``torch.AcceleratorError`` (2.8+)
    or a ``RuntimeError`` whose text starts with "CUDA error". The chain of causes is searched too: a
    model load that failed this way is reported as the job's ``JobFailure``, raised from the loss."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DeviceLost) or type(cause).__name__ == "AcceleratorError":
            return True
        if isinstance(cause, RuntimeError) and str(cause).startswith("CUDA error"):
            return True
        cause = cause.__cause__ or cause.__context__  # ``from None`` hides the context, but keeps it
    return False
