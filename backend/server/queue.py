"""A queue that is fair across editors: round-robin, one job per editor per turn."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from .jobs import EditorState, Job


class FairQueue:
    def __init__(self) -> None:
        # editor → its waiting jobs, in the order editors get their next turn
        self._lanes: OrderedDict[EditorState, deque[Job]] = OrderedDict()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def __contains__(self, job: Job) -> bool:
        lane = self._lanes.get(job.owner)
        return lane is not None and job in lane

    def push(self, job: Job) -> None:
        lane = self._lanes.get(job.owner)
        if lane is None:
            lane = self._lanes[job.owner] = deque()
        lane.append(job)
        self._ready.set()

    def remove(self, job: Job) -> bool:
        lane = self._lanes.get(job.owner)
        if lane is None or job not in lane:
            return False
        lane.remove(job)
        if not lane:
            del self._lanes[job.owner]
        return True

    def replace(self, old: Job, new: Job) -> bool:
        """Put ``new`` where ``old`` waits (same owner): a superseding live job keeps its editor's turn."""
        lane = self._lanes.get(old.owner)
        if lane is None or old not in lane or new.owner is not old.owner:
            return False
        lane[lane.index(old)] = new
        return True

    def order(self) -> list[Job]:
        """All waiting jobs in the order they will start."""
        lanes = [list(lane) for lane in self._lanes.values()]
        out: list[Job] = []
        for turn in range(max((len(lane) for lane in lanes), default=0)):
            out.extend(lane[turn] for lane in lanes if turn < len(lane))
        return out

    async def pop(self) -> Job:
        while not self._lanes:
            self._ready.clear()
            await self._ready.wait()
        owner, lane = next(iter(self._lanes.items()))
        job = lane.popleft()
        del self._lanes[owner]
        if lane:
            self._lanes[owner] = lane  # to the back of the round
        return job
