"""Live painting with the built-in tiny model: bursts of canvas changes through plugin.core's live
painting and the real server, timed against a baseline measured in the same run.

Baseline: the debounce's pause, then one ordinary job of the same canvas with the live (fast) settings
(a painter who stops, waits as long as the debounce and clicks Generate: the backend idles during the
pause in both cases), measured right before and right after each burst (the mean of the two).

(a) a quick burst: 20 changes 20 ms apart (well inside the debounce): jobs sent / superseded /
    finished, and the time from the last change to its picture vs one job time + the debounce
    (goal ≤ 1.0×: the burst costs no more than painting the final canvas once, after the same pause);
(b) a painter's pace: 20 changes, each once the previous change's job has started (so each one
    outdates a running job, stopped at once when it could not finish within the debounce, else
    superseded when the next job is sent): the same figures, and the steps the outdated jobs ran.
(c) two editors painting at that pace plus one ordinary Generate: the Generate's wait vs one job
    time (fair: it waits for at most one live job of each painter).

    python bench/live.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Recorder, pattern_rgba, running_server

from sfumato.plugin.core.client import Client
from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.live import DEBOUNCE_S, LivePainting, LiveTimer, fast_params, live_request
from sfumato.plugin.core.requests import GenerationParams
from sfumato.plugin.core.transport import WebSocketTransport
from sfumato.protocol import Cancelled, Image, Progress, Rect, Result, Started, Submit

SIZE = 128
PARAMS = GenerationParams(prompt="live", strength=1.0, seed=5)


class Canvas:
    """A SIZE² RGBA8 layer that changes colour in a square at each stroke."""

    def __init__(self) -> None:
        self.pixels = bytearray(pattern_rgba(SIZE, SIZE).data)
        self.shown = 0

    def stroke(self, i: int) -> None:
        for y in range(40, 72):
            row = (y * SIZE + 8 + 3 * i) * 4
            self.pixels[row : row + 32 * 4] = bytes(((17 * i) % 256, 90, (250 - 7 * i) % 256, 255)) * 32

    def is_open(self) -> bool:
        return True

    def title(self) -> str:
        return "bench"

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=SIZE, h=SIZE)

    def selection_bounds(self) -> Rect | None:
        return None

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        return Image(width=SIZE, height=SIZE, format="rgba8", data=bytes(self.pixels))

    def read_selection(self, rect: Rect) -> Image:
        raise AssertionError("no selection")

    def show_preview(self, image: Image, rect: Rect) -> None:
        self.shown += 1

    def clear_preview(self) -> None:
        pass

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        pass


class Editor:
    """A connected editor with a controller and a live painting on its own canvas."""

    def __init__(self, url: str, name: str) -> None:
        self.rec = Recorder()
        self.canvas = Canvas()
        self.controller: Controller | None = None
        self.client = Client(lambda: WebSocketTransport.connect(url), name, "test", listener=self._event)
        self.tasks: list[asyncio.Task[Any]] = []

    def _event(self, event: Any, job: Any) -> None:
        self.rec(event, job)
        if self.controller is not None:
            self.controller.handle(event, job)

    async def __aenter__(self) -> Editor:
        self.running = asyncio.create_task(self.client.run())
        await self.client.wait_connected(30)
        self.controller = Controller(self.client, lambda coro: self.tasks.append(asyncio.create_task(coro)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await asyncio.wait_for(self.running, 10)

    def live(self) -> LivePainting:
        assert self.controller is not None
        return LivePainting(self.controller, self.canvas, lambda: PARAMS)

    async def ordinary(self, job_id: str, pause_s: float = 0.0) -> float:
        """One ordinary job of the canvas with the live settings after ``pause_s`` of quiet: seconds from the
        start of the pause to the result (a painter who stops, waits and clicks Generate)."""
        t = time.perf_counter()
        await asyncio.sleep(pause_s)  # the backend idles as it does while a live change's debounce runs
        assert self.controller is not None  # the click reads the canvas, as a live job does when it leaves:
        await self.client.submit(live_request(self.canvas, PARAMS, self.controller, job_id))  # the same job, not live
        await self.rec.wait_for(Result, job_id, timeout=300)
        return time.perf_counter() - t


async def burst(editor: Editor, live: LivePainting, wait_started: bool, gap_s: float = 0.02) -> dict[str, float]:
    """20 strokes, the debounce timed by the real clock. Returns the figures of the burst."""
    c = live.counts
    before = (c.submitted, c.superseded, c.finished, c.stopped)
    results_before = len(editor.rec.of(Result))
    cancelled_before = len(editor.rec.of(Cancelled))
    loop = asyncio.get_running_loop()
    sent: asyncio.Queue[str] = asyncio.Queue()  # the live jobs as they leave (no polling: the worker shares the GIL)
    jobs: list[str] = []

    def fired(fire: Callable[[], Submit | None]) -> None:
        submit = fire()
        if submit is not None:
            jobs.append(submit.job_id)
            sent.put_nowait(submit.job_id)

    timer = LiveTimer(live, lambda s, fire: loop.call_later(s, fired, fire))  # the editor's one-shot timer

    last_change = 0.0
    for i in range(20):
        editor.canvas.stroke(i)
        last_change = time.monotonic()
        live.changed(last_change)
        timer.arm()
        if wait_started:  # the painter's next stroke comes once this one is being painted
            await editor.rec.wait_for(Started, await sent.get(), timeout=300)
        else:
            await asyncio.sleep(gap_s)
    while live.debounce.due_at is not None or not sent.empty():  # until the last change's job has left
        await sent.get()
    final = jobs[-1]
    await editor.rec.wait_for(Result, final, timeout=300)
    latency = time.monotonic() - last_change
    for job_id in jobs[:-1]:  # the outdated jobs' ends may come after the picture
        await editor.rec.wait_for(Cancelled, job_id, timeout=300)
    ended = editor.rec.of(Cancelled)[cancelled_before:]  # superseded, or stopped early by a change
    steps_run = []
    for end in ended:
        progress = editor.rec.of(Progress, end.job_id)
        started = editor.rec.of(Started, end.job_id)
        if started:
            steps_run.append((progress[-1].step if progress else 0, started[0].steps))
    return {
        "sent": c.submitted - before[0],
        "superseded": c.superseded - before[1],
        "stopped": c.stopped - before[3],
        "finished": c.finished - before[2],
        "results": len(editor.rec.of(Result)) - results_before,
        "latency_s": latency,
        "stopped_running": sum(1 for done, total in steps_run if done < total),
    }


async def main(rounds: int) -> None:
    from sfumato.backend.engine import Engine
    from sfumato.backend.models.catalogue import Catalogue

    engine = Engine(Catalogue.scan([], Path(tempfile.gettempdir()) / "sfumato-bench-cache"), device="auto")
    async with running_server(engine) as server, Editor(server.url, "painter") as painter:
        await painter.ordinary("warm")
        fast = fast_params(PARAMS, [])
        print(
            f"device: {engine.device_label()}, tiny model, {SIZE}² canvas, live settings: {fast.steps} steps, "
            f"guidance {fast.guidance}, {fast.scheduler}, strength {PARAMS.strength}; debounce {DEBOUNCE_S} s"
        )
        for pace, wait_started in (("(a) quick burst, 20 ms apart", False), ("(b) painter's pace", True)):
            rows = []
            for r in range(rounds):
                # the baseline before and after the burst: a shared machine's load drifts
                base_s = await painter.ordinary(f"base-{pace[1]}-{r}", DEBOUNCE_S)
                figures = await burst(painter, painter.live(), wait_started)
                base_s = (base_s + await painter.ordinary(f"after-{pace[1]}-{r}", DEBOUNCE_S)) / 2
                figures["ratio"] = figures["latency_s"] / base_s
                figures["job_s"] = base_s - DEBOUNCE_S
                rows.append(figures)
            med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
            ratios = ", ".join(f"{row['ratio']:.2f}" for row in rows)
            print(
                f"{pace}: sent {med['sent']:.0f}, superseded {med['superseded']:.0f}, stopped at a change "
                f"{med['stopped']:.0f} ({med['stopped_running']:.0f} of them ended mid-steps), "
                f"finished {med['finished']:.0f} "
                f"(results {med['results']:.0f}); last change → its picture {med['latency_s']:.2f} s vs debounce "
                f"{DEBOUNCE_S} s + one job {med['job_s']:.2f} s → {med['ratio']:.2f}×   goal ≤ 1.0× "
                f"(ratios {ratios})"
            )
        async with Editor(server.url, "a") as a, Editor(server.url, "b") as b, Editor(server.url, "c") as c:
            job_s = await c.ordinary("c-base")
            painting = [asyncio.create_task(burst(e, e.live(), True)) for e in (a, b)]
            await asyncio.sleep(1.0)  # both painters under way
            wait = await c.ordinary("c-generate")
            figures = await asyncio.gather(*painting)
            print(
                f"(c) two painters live + one Generate: the Generate took {wait:.2f} s vs {job_s:.2f} s alone "
                f"→ {wait / job_s:.2f}× (fair: ≤ 3×: one live job of each painter ahead at most); painters "
                f"finished {figures[0]['finished']:.0f} and {figures[1]['finished']:.0f} of "
                f"{figures[0]['sent']:.0f} and {figures[1]['sent']:.0f} sent"
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(p.parse_args().rounds))
