"""plugin.core's live painting: the debounce, the fast preset, and a burst of 20 changes through a
real backend process — exactly one live job runs to the end, its picture is the last change's, and
Apply turns it into one layer without a new generation."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import Recorder, aio, backend_process, until

from sfumato.plugin.core.client import Client
from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.live import DISTILLED, LCM, PLAIN, Debounce, LivePainting, fast_params, fast_preset
from sfumato.plugin.core.pixels import to_rgba8
from sfumato.plugin.core.requests import GenerationParams
from sfumato.plugin.core.transport import WebSocketTransport
from sfumato.protocol import Cancelled, Image, JobState, LoraWeight, ModelInfo, Rect, Result

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

            jobs_before = len(client.tracker.jobs)
            name = live.apply()
            assert name == "live [seed 1234]" and canvas.layers == [(picture, results[0].rect, name)]
            assert canvas.cleared >= 1 and len(client.tracker.jobs) == jobs_before  # no new generation
            assert live.apply() is None  # applied once
        finally:
            await client.close()
            await asyncio.wait_for(running, 10)
