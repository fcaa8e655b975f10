"""plugin.core's live painting: the debounce, the fast preset, when a change stops the running live job,
and a burst of 20 changes through a real backend process — exactly one live job runs to the end, its
picture is the last change's, and Apply turns it into one layer without a new generation."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import Recorder, aio, backend_process, until

from sfumato.plugin.core.client import Client
from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.live import (
    DISTILLED,
    LCM,
    PLAIN,
    Debounce,
    LivePainting,
    LiveTimer,
    fast_params,
    fast_preset,
)
from sfumato.plugin.core.pixels import to_rgba8
from sfumato.plugin.core.requests import GenerationParams
from sfumato.plugin.core.transport import WebSocketTransport
from sfumato.protocol import (
    Cancelled,
    Image,
    JobError,
    JobState,
    JobStatus,
    LoraWeight,
    ModelInfo,
    Rect,
    Result,
    Started,
)

# ---------------------------------------------------------------------------- the parts alone


def test_the_debounce_is_due_once_after_the_changes_pause() -> None:
    d = Debounce(0.25)
    assert not d.due(0.0)
    d.changed(1.0)
    d.changed(1.2)  # a change within the pause starts it again
    assert not d.due(1.4)
    assert d.due(1.45) and not d.due(1.5)  # once per pause


def test_the_fast_preset_uses_an_lcm_or_turbo_model_or_lora_where_the_backend_has_one() -> None:
    ckpt = ModelInfo(id="sd/dream", kind="checkpoint", arch="sd15", label="dream")
    turbo = ModelInfo(id="sdxl/sdxl-turbo", kind="checkpoint", arch="sdxl", label="sdxl-turbo")
    lcm_xl = ModelInfo(id="Lora/lcm-lora-sdxl", kind="lora", arch="sdxl", label="lcm-lora-sdxl")
    lcm_15 = ModelInfo(id="Lora/lcm-lora-sdv1-5", kind="lora", arch="sd15", label="lcm-lora-sdv1-5")
    assert fast_preset("sd/dream", [ckpt]) == PLAIN
    assert fast_preset("sd/dream", [ckpt, lcm_xl]) == PLAIN  # a LoRA of another family does not fit
    assert fast_preset("sd/dream", [ckpt, lcm_xl, lcm_15]) == dataclasses.replace(LCM, lora="Lora/lcm-lora-sdv1-5")
    assert fast_preset("sdxl/sdxl-turbo", [turbo, lcm_xl]) == DISTILLED  # distilled already: no LoRA
    params = GenerationParams(model="sd/dream", prompt="p", strength=0.4, seed=3, steps=30, guidance=9.0, batch_size=4)
    fast = fast_params(params, [ckpt, lcm_15])
    assert (fast.steps, fast.guidance, fast.scheduler, fast.batch_size) == (4, 1.5, "lcm", 1)
    assert fast.loras == (LoraWeight(id="Lora/lcm-lora-sdv1-5", weight=1.0),)
    assert (fast.prompt, fast.strength, fast.seed, fast.model) == ("p", 0.4, 3, "sd/dream")  # the painter's own


class Desk:
    """What a live painting sends through, recorded: submits, cancels; and a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.submitted: list[Any] = []
        self.cancelled: list[str] = []
        self.client = SimpleNamespace(welcome=None, submit=self._submit)
        self.job_prefix, self.live, self.messages = "t", None, []

    async def _submit(self, submit: Any, doc: Any) -> None:
        self.submitted.append(submit)

    def schedule(self, coro: Any) -> None:
        asyncio.run(coro)  # the submit is recorded at once

    def cancel(self, job_id: str) -> list[str]:
        self.cancelled.append(job_id)
        return [job_id]

    def active_jobs(self) -> list[Any]:
        return []

    def event(self, live: LivePainting, submit: Any, event: Any, at: float) -> None:
        self.now = at
        live.handle(event, SimpleNamespace(id=submit.job_id, submit=submit))


def _started(submit: Any) -> Started:
    return Started(job_id=submit.job_id, steps=8, steps_requested=8, width=64, height=64, seeds=(1,))


def _result(submit: Any) -> Result:
    image = Image(width=64, height=64, format="rgba8", data=bytes(64 * 64 * 4))
    return Result(job_id=submit.job_id, images=(image,), rect=Rect(x=0, y=0, w=64, h=64), seeds=(1,))


def _painting(desk: Desk) -> LivePainting:
    params = GenerationParams(prompt="live", strength=0.5, seed=1)
    return LivePainting(desk, Canvas(), lambda: params, debounce_s=0.25, clock=lambda: desk.now)  # type: ignore[arg-type]


def test_a_change_stops_the_running_live_job_at_once_when_nothing_says_it_could_finish_within_the_debounce() -> None:
    desk = Desk()
    live = _painting(desk)
    live.changed(0.0)
    first = live.tick(0.25)
    assert first is not None and desk.submitted == [first]
    live.changed(0.3)  # sent, not started yet: the backend drops it in place when the next one comes
    assert desk.cancelled == []
    desk.event(live, first, _started(first), 0.32)
    desk.now = 0.4
    live.changed(0.4)  # no live job has finished yet: its length is unknown, so it is stopped now
    live.changed(0.45)
    assert desk.cancelled == [first.job_id]  # once
    desk.event(live, first, Cancelled(job_id=first.job_id), 0.5)
    assert live.counts.stopped == 1 and live.counts.superseded == 0 and live.outdated == set()
    assert live.latest == first.job_id  # the next one is still due; the picture before stays
    second = live.tick(0.7)
    assert second is not None and live.latest == second.job_id


def test_an_early_stop_that_crosses_the_jobs_picture_shows_the_picture_and_no_error() -> None:
    desk = Desk()
    live = _painting(desk)
    job = _started_job(desk, live)
    desk.now = 0.35
    live.changed(0.35)
    assert desk.cancelled == [job.job_id]
    desk.event(live, job, _result(job), 0.36)  # it ended before the cancel arrived: the backend answers
    not_found = JobError(job_id=job.job_id, code="not_found", message="no such job", field="cancel.job_id")
    desk.event(live, job, not_found, 0.37)
    assert live.picture is not None and live.picture.job_id == job.job_id  # shown, ready for Apply
    assert desk.messages == [] and live.latest == job.job_id  # no false error for the painter
    assert (live.counts.finished, live.counts.stopped) == (1, 0)


def test_live_off_right_after_a_send_cancels_that_job_and_a_cancel_that_crosses_its_picture_is_no_error() -> None:
    desk = Desk()
    live = _painting(desk)
    live.changed(0.0)
    job = live.tick(0.25)
    assert job is not None
    live.stop()  # the tracker may not know the job yet (the network thread sends it): it is cancelled anyway
    assert desk.cancelled == [job.job_id]
    desk.event(live, job, _result(job), 0.4)  # it had finished: the picture arrives, then the cancel's answer
    not_found = JobError(job_id=job.job_id, code="not_found", message="no such job", field="cancel.job_id")
    desk.event(live, job, not_found, 0.41)
    assert desk.messages == [] and live.picture is not None and live.unfinished == set()


def _started_job(desk: Desk, live: LivePainting) -> Any:
    """A change, its live job sent once the debounce ended, and started on the backend."""
    live.changed(desk.now)
    submit = live.tick(desk.now + 0.25)
    assert submit is not None
    desk.event(live, submit, _started(submit), desk.now + 0.3)
    return submit


def _timed(desk: Desk, live: LivePainting, job_s: float) -> None:
    """One live job that ran ``job_s`` from its start to its picture: the length the next ones are judged by."""
    submit = _started_job(desk, live)
    desk.event(live, submit, _result(submit), desk.now + job_s)


def test_a_running_live_job_known_to_finish_within_the_debounce_runs_on_and_its_picture_is_shown() -> None:
    desk = Desk()
    live = _painting(desk)
    _timed(desk, live, 0.2)
    job = _started_job(desk, live)
    desk.now += 0.06
    live.changed(desk.now)  # it ends 0.14 s from now, before this change's job leaves in 0.25 s: it runs on
    assert desk.cancelled == []
    desk.event(live, job, _result(job), desk.now + 0.14)
    assert live.picture is not None and live.picture.job_id == job.job_id and live.counts.finished == 2


def test_a_running_live_job_known_to_end_after_the_debounce_is_stopped_at_the_change() -> None:
    desk = Desk()
    live = _painting(desk)
    _timed(desk, live, 0.4)
    job = _started_job(desk, live)
    desk.now += 0.1
    live.changed(desk.now)  # it would end 0.3 s from now, after this change's job leaves in 0.25 s
    assert desk.cancelled == [job.job_id]


def test_a_live_job_running_past_its_expected_length_is_stopped_and_the_length_learnt_again() -> None:
    desk = Desk()
    live = _painting(desk)
    _timed(desk, live, 0.2)  # live jobs took 0.2 s: short enough to run on through a change...
    job = _started_job(desk, live)
    desk.now += 1.5  # ...but this one (a larger region) is still running after 1.5 s: its end is unknown
    live.changed(desk.now)
    assert desk.cancelled == [job.job_id]
    desk.event(live, job, Cancelled(job_id=job.job_id), desk.now + 0.05)
    assert live.job_s is not None and live.job_s >= 1.5  # the next ones are judged by at least that


def test_a_live_job_that_ended_while_the_editor_was_away_is_not_cancelled_at_the_next_change() -> None:
    desk = Desk()
    live = _painting(desk)
    job = _started_job(desk, live)
    desk.event(live, job, JobStatus(job_id=job.job_id, state="failed"), 2.0)  # after a resume
    desk.now = 2.1
    live.changed(2.1)
    assert desk.cancelled == [] and live.running is None


def test_the_editor_is_told_when_to_tick_next() -> None:
    live = _painting(Desk())
    assert live.next_tick_in(0.0) is None  # nothing changed
    live.changed(1.0)
    assert live.next_tick_in(1.1) == pytest.approx(0.15)
    assert live.next_tick_in(2.0) == 0.0  # overdue: at once
    live.stop()
    assert live.next_tick_in(2.0) is None


def test_the_live_timer_keeps_one_timer_while_the_painter_strokes_and_sends_once_they_pause() -> None:
    desk = Desk()
    live = _painting(desk)
    pending: list[tuple[float, Any]] = []  # (when it fires, its callback): the editor's one-shot timers
    timer = LiveTimer(live, lambda s, fire: pending.append((desk.now + s, fire)), clock=lambda: desk.now)

    def run_until(t: float) -> None:
        while pending and min(pending, key=lambda p: p[0])[0] <= t:
            when, fire = min(pending, key=lambda p: p[0])
            pending.remove((when, fire))
            desk.now = when
            fire()
        desk.now = t

    most = 0
    for i in range(200):  # ten seconds of a continuous stroke, noticed at every 50 ms poll
        run_until(i * 0.05)
        live.changed(desk.now)
        timer.arm()
        most = max(most, len(pending))
    assert most == 1 and desk.submitted == []  # one pending timer all along, not one per poll
    run_until(20.0)  # the painter pauses
    assert len(desk.submitted) == 1 and pending == []


def test_the_live_timer_sets_itself_again_when_the_end_moved_and_sends_when_it_ends() -> None:
    desk = Desk()
    live = _painting(desk)
    timers: list[tuple[float, Any]] = []
    timer = LiveTimer(live, lambda s, fire: timers.append((s, fire)), clock=lambda: desk.now)
    live.changed(0.0)
    timer.arm()
    timer.arm()  # the editor's poll notices nothing new: no second timer
    desk.now = 0.1
    live.changed(0.1)  # a change moves the end to 0.35
    timer.arm()
    assert [s for s, _ in timers] == [0.25]
    desk.now = 0.25
    assert timers[0][1]() is None and desk.submitted == []  # nothing due yet: set again for the rest
    assert len(timers) == 2 and timers[1][0] == pytest.approx(0.1)
    desk.now = 0.35
    sent = timers[1][1]()
    assert sent is not None and desk.submitted == [sent] and sent.live
    timer.arm()
    assert len(timers) == 2  # nothing pending: nothing set


# ---------------------------------------------------------------------------- a burst through a real backend


class Canvas:
    """A 64×64 RGBA8 layer the test paints on; records what live painting shows and inserts."""

    def __init__(self) -> None:
        gradient = ((x * 4, y * 4, 128, 255) for y in range(64) for x in range(64))
        self.pixels = bytearray(value for pixel in gradient for value in pixel)
        self.previews: list[tuple[Image, Rect]] = []
        self.cleared = 0
        self.layers: list[tuple[Image, Rect, str]] = []

    def paint(self, colour: tuple[int, int, int]) -> None:
        """A stroke: a 24×24 square of ``colour`` in the middle."""
        for y in range(20, 44):
            for x in range(20, 44):
                self.pixels[(y * 64 + x) * 4 : (y * 64 + x) * 4 + 3] = bytes(colour)

    def is_open(self) -> bool:
        return True

    def title(self) -> str:
        return "canvas"

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=64, h=64)

    def selection_bounds(self) -> Rect | None:
        return None

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        assert rect == self.canvas()
        return Image(width=64, height=64, format="rgba8", data=bytes(self.pixels))

    def read_selection(self, rect: Rect) -> Image:
        raise AssertionError("no selection")

    def show_preview(self, image: Image, rect: Rect) -> None:
        self.previews.append((image, rect))

    def clear_preview(self) -> None:
        self.cleared += 1

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        self.layers.append((image, rect, name))


@aio
async def test_a_burst_of_20_changes_finishes_exactly_one_live_job_showing_the_last_change(model_cache: Path) -> None:
    with backend_process(model_cache) as (url, _):
        rec = Recorder()
        controller: Controller | None = None

        def listener(event: Any, job: Any) -> None:
            rec(event, job)
            if controller is not None:
                controller.handle(event, job)

        client = Client(lambda: WebSocketTransport.connect(url), "live-test", "test", listener=listener)
        running = asyncio.create_task(client.run())
        tasks: list[asyncio.Task[Any]] = []
        try:
            await client.wait_connected(30)
            controller = Controller(client, lambda coro: tasks.append(asyncio.create_task(coro)), job_prefix="t")
            canvas = Canvas()
            params = GenerationParams(prompt="live", strength=0.75, seed=1234)
            live = LivePainting(controller, canvas, lambda: params, debounce_s=0.25)
            sent = []
            for i in range(20):  # each change pauses past the debounce: 20 live jobs, each superseding the last
                canvas.paint((10 * i, 255 - 10 * i, (77 * i) % 256))
                live.changed(float(i))
                assert live.tick(i + 0.1) is None  # within the pause: nothing yet
                submit = live.tick(i + 0.25)
                assert submit is not None and submit.live
                sent.append(submit)
                await asyncio.sleep(0)  # the editor's loop turns: the submit goes out
            last = sent[-1]
            await rec.wait_for(Result, last.job_id, timeout=120)
            await until(lambda: all(client.tracker.jobs[s.job_id].state.finished for s in sent), 60, "every job ended")
            results = rec.of(Result)
            assert [r.job_id for r in results] == [last.job_id]  # exactly one ran to the end: the newest
            cancelled = rec.of(Cancelled)
            assert len(cancelled) == 19 and all(c.superseded_by is not None for c in cancelled)
            assert all(client.tracker.jobs[s.job_id].state is JobState.CANCELLED for s in sent[:-1])
            assert (live.counts.submitted, live.counts.superseded, live.counts.finished) == (20, 19, 1)

            # the live picture is the last change's: bit-identical to an ordinary job on the last canvas,
            # and unlike one on the canvas before it (the same seed and settings in both)
            async def ordinary(submit: Any, job_id: str) -> Image:
                await client.submit(dataclasses.replace(submit, job_id=job_id, live=False))
                result: Result = await rec.wait_for(Result, job_id, timeout=120)
                return result.images[0]

            picture = results[0].images[0]
            assert picture == await ordinary(last, "reference-last")
            assert picture != await ordinary(sent[-2], "reference-before")
            assert canvas.previews[-1] == (to_rgba8(picture), results[0].rect)  # shown in the preview layer
            assert canvas.layers == []  # not a layer until Apply

            scheduled = len(tasks)  # a new generation would be scheduled at once, on this thread
            name = live.apply()
            assert name == "live [seed 1234]" and canvas.layers == [(picture, results[0].rect, name)]
            assert canvas.cleared >= 1 and len(tasks) == scheduled  # no new generation
            assert live.apply() is None  # applied once
        finally:
            await client.close()
            await asyncio.wait_for(running, 10)
