"""Many editors flooding the backend with the largest legal payloads: its memory stays within its budgets.

The backend runs in its own process, as a painter runs it, so its peak resident memory (VmHWM) is
its own. The bound is the one the README's "Reliability" section states:

    peak RSS ≤ RSS when idle + job_memory_mib + editors × (outbox_mib + FRAME_COPIES × max_message_mib)
                + the engine's working set for one job
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import aio, backend_process, raw_client, recv_message, submit

from sfumato.protocol import Image, JobError, Queued, Result, encode

MIB = 1 << 20
EDITORS = 8
SUBMITS_PER_EDITOR = 12
SIDE_W, SIDE_H = 1024, 960  # an rgbaf32 image of 15 MiB: the largest a 16 MiB frame carries
SETTINGS = {
    "max_message_mib": 16,
    "max_pixels": 1024 * 1024,
    "job_memory_mib": 160,  # five such jobs (input + room for the result: 30 MiB each)
    "editor_memory_mib": 64,  # two per editor
    "outbox_mib": 4,
}
FRAME_COPIES = 4  # per editor: one read by the socket, one queued, one being decoded, its decoded images
ENGINE_WORKING_SET_MIB = 192  # float copies of one 1024² job's image, mask and result while it runs


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture
def backend(model_cache: Path) -> Iterator[tuple[str, int]]:
    settings = {f"SFUMATO_{k.upper()}": str(v) for k, v in SETTINGS.items()}
    with backend_process(model_cache, env=settings) as (url, proc):
        yield url, proc.pid


def _largest_submit_frame() -> bytes:
    image = Image(width=SIDE_W, height=SIDE_H, format="rgbaf32", data=bytes(SIDE_W * SIDE_H * 16))
    frame = encode(submit("job-00-00", image=image, steps=200, strength=1.0))
    assert len(frame) <= SETTINGS["max_message_mib"] * MIB
    return frame


@aio
async def test_a_flood_of_the_largest_payloads_stays_within_the_memory_budgets(backend: tuple[str, int]) -> None:
    url, pid = backend
    warm = await raw_client(url, "warm-up")
    await warm.send(encode(submit("warm", steps=2)))
    while not isinstance(await recv_message(warm), Result):
        pass
    await warm.close()
    idle = _status(pid)["VmRSS"]

    frame = _largest_submit_frame()
    answers: dict[str, list[Any]] = {}

    async def editor(i: int) -> None:
        ws = await raw_client(url, f"flood-{i}")
        pending = set()
        for j in range(SUBMITS_PER_EDITOR):
            job_id = f"job-{i:02d}-{j:02d}"
            pending.add(job_id)
            await ws.send(frame.replace(b"job-00-00", job_id.encode(), 1))
        while pending:  # every submit is answered: queued, or refused
            msg = await recv_message(ws)
            if isinstance(msg, (Queued, JobError)) and msg.job_id in pending:
                pending.discard(msg.job_id)
                answers.setdefault(type(msg).__name__, []).append(msg)
        for j in range(SUBMITS_PER_EDITOR):
            await ws.send(msgpack.packb({"type": "cancel", "job_id": f"job-{i:02d}-{j:02d}"}))
        await ws.close()

    await asyncio.gather(*(editor(i) for i in range(EDITORS)))
    peak = _status(pid)["VmHWM"]

    accepted, refused = answers.get("Queued", []), answers.get("JobError", [])
    assert len(accepted) + len(refused) == EDITORS * SUBMITS_PER_EDITOR
    assert {e.code for e in refused} == {"queue_full"}, {e.code for e in refused}
    assert len(refused) > len(accepted), "the budgets, not the machine, decided how much was taken"
    bound = idle + MIB * (
        SETTINGS["job_memory_mib"]
        + EDITORS * (SETTINGS["outbox_mib"] + FRAME_COPIES * SETTINGS["max_message_mib"])
        + ENGINE_WORKING_SET_MIB
    )
    sent = EDITORS * SUBMITS_PER_EDITOR * len(frame)
    print(
        f"\nflood: {EDITORS} editors sent {sent / MIB:.0f} MiB in {EDITORS * SUBMITS_PER_EDITOR} submits; "
        f"accepted {len(accepted)}, refused {len(refused)}; RSS idle {idle / MIB:.0f} MiB, "
        f"peak {peak / MIB:.0f} MiB (+{(peak - idle) / MIB:.0f}), bound {bound / MIB:.0f} MiB"
    )
    assert peak <= bound, f"peak RSS {peak / MIB:.0f} MiB over the bound {bound / MIB:.0f} MiB"
