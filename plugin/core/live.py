"""Live painting, editor-neutral: while it is on, each change of the canvas — once the painter pauses
for the debounce — sends a *live* job that supersedes the previous one (the backend drops or stops
it: protocol/SPEC.md, Live painting). The newest picture is shown in the preview layer and becomes
a real layer only when the painter applies it, without a new generation.

The editor drives it: it says when it noticed a change (:meth:`LivePainting.changed`, its own way of
noticing: Krita compares a cheap fingerprint of the layer on a timer) and lends :class:`LiveTimer` its
one-shot timer, which sends the live job when the debounce ends — on time, not at the next poll.
Nothing here waits, sleeps or knows about Qt or GLib.

A change also ends the running live job early when it would still be running once the debounce is
over: that job's picture would be superseded unseen anyway, and stopping it now frees the device
before the change's own job is sent (the time from the last change to its picture stays one job
plus the debounce). A job that can finish within the debounce runs on: its picture is shown.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sfumato.protocol import (
    Cancelled,
    ErrorCode,
    Image,
    JobError,
    JobState,
    JobStatus,
    LoraWeight,
    ModelInfo,
    PreviewSettings,
    Rect,
    Result,
    Started,
    Submit,
    arch_family,
)

from .controller import Controller, result_layer_name
from .editor import DocumentLike
from .pixels import to_rgba8
from .requests import GenerationParams, build_submit, new_job_id

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.25  # the pause after a change before its live job is sent

# A model or LoRA distilled for few steps, recognised by its name (as painters' files are named).
_FAST = re.compile(r"lcm|turbo|lightning|hyper", re.IGNORECASE)


@dataclass(frozen=True)
class FastPreset:
    """Few steps and low guidance: a live picture every second or so instead of every ten."""

    steps: int
    guidance: float
    scheduler: str
    lora: str | None = None  # an LCM/Turbo/Lightning LoRA to add, by catalogue id


PLAIN = FastPreset(steps=8, guidance=4.0, scheduler="dpmpp_2m")  # any checkpoint: converges in few steps
DISTILLED = FastPreset(steps=4, guidance=1.5, scheduler="euler_a")  # a Turbo/Lightning/Hyper checkpoint
LCM = FastPreset(steps=4, guidance=1.5, scheduler="lcm")  # an LCM checkpoint, or any with an LCM LoRA


def fast_preset(model: str, models: Sequence[ModelInfo]) -> FastPreset:
    """The fast settings for ``model``, using what the backend's catalogue offers for it."""
    entry = next((m for m in models if m.id == model), None)
    name = f"{model} {entry.label if entry else ''}"
    if _FAST.search(name):
        return LCM if "lcm" in name.lower() else DISTILLED
    family = arch_family(entry.arch) if entry else ""
    for m in models:
        if m.kind == "lora" and m.arch == family and "lcm" in f"{m.id} {m.label}".lower():
            return dataclasses.replace(LCM, lora=m.id)
    for m in models:
        if m.kind == "lora" and m.arch == family and _FAST.search(f"{m.id} {m.label}"):
            return dataclasses.replace(DISTILLED, lora=m.id)
    return PLAIN


def fast_params(params: GenerationParams, models: Sequence[ModelInfo]) -> GenerationParams:
    """The painter's settings with the fast preset applied (prompt, strength, seed, model kept)."""
    preset = fast_preset(params.model, models)
    loras = params.loras
    if preset.lora is not None and all(lora.id != preset.lora for lora in loras):
        loras = (*loras, LoraWeight(id=preset.lora, weight=1.0))
    return dataclasses.replace(
        params, steps=preset.steps, guidance=preset.guidance, scheduler=preset.scheduler, loras=loras, batch_size=1
    )


class Debounce:
    """Due once the changes have paused for ``delay_s`` (times are the editor's clock, in seconds)."""

    def __init__(self, delay_s: float = DEBOUNCE_S) -> None:
        self.delay_s = delay_s
        self.due_at: float | None = None

    def changed(self, now: float) -> None:
        self.due_at = now + self.delay_s

    def due(self, now: float) -> bool:
        if self.due_at is None or now < self.due_at:
            return False
        self.due_at = None
        return True


@dataclass
class LivePicture:
    """The newest live result: shown in the preview layer until it is applied or replaced."""

    job_id: str
    image: Image
    rect: Rect
    name: str  # the layer name Apply gives it (like every result)


@dataclass
class LiveCounts:
    submitted: int = 0
    superseded: int = 0  # ended by the backend when a newer live job came
    stopped: int = 0  # stopped at a change, being unable to finish before the change's own job leaves
    finished: int = 0  # ran to the end: a picture arrived


@dataclass(frozen=True)
class RunningJob:
    """The live job the backend is painting now, timed on the live painting's clock."""

    job_id: str
    started_at: float


def live_request(doc: DocumentLike, params: GenerationParams, controller: Controller, job_id: str) -> Submit:
    """The request a live job of ``doc`` sends (not yet marked live): the fast preset where the backend has a
    fast model, and no previews (they would flicker over the last picture)."""
    welcome = controller.client.welcome
    fast = fast_params(params, welcome.models if welcome is not None else ())
    return dataclasses.replace(build_submit(doc, fast, job_id), preview=PreviewSettings(enabled=False))


class LivePainting:
    """One document's live painting. Runs on the editor's GUI thread, like the controller it sends through."""

    def __init__(
        self,
        controller: Controller,
        doc: DocumentLike,
        params: Callable[[], GenerationParams],
        debounce_s: float = DEBOUNCE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.controller, self.doc, self.params = controller, doc, params
        self.debounce = Debounce(debounce_s)
        self.clock = clock  # times the running job (the debounce keeps the editor's own times)
        self.job_s: float | None = None  # how long a live job runs, started → picture (the newest one's)
        self.running: RunningJob | None = None
        self.outdated: set[str] = set()  # live jobs stopped early by a change, until their end arrives
        self.unfinished: set[str] = set()  # live jobs sent whose end has not come (the tracker learns of a
        # submit only once the network thread sent it)
        self.on = True
        self.latest: str | None = None  # the newest live job sent; only its picture is shown
        self.picture: LivePicture | None = None
        self.counts = LiveCounts()
        controller.live = self

    def changed(self, now: float) -> None:
        """The editor noticed a change of the canvas."""
        if self.on:
            self.debounce.changed(now)
            self._stop_outdated()

    def next_tick_in(self, now: float) -> float | None:
        """Seconds until :meth:`tick` should be called (the editor's one-shot timer), None when nothing is due."""
        due = self.debounce.due_at
        return None if due is None or not self.on else max(0.0, due - now)

    def _stop_outdated(self) -> None:
        """Stop the running live job now if it would still be running when the debounce ends."""
        job = self.running
        if job is None or job.job_id != self.latest or job.job_id in self.outdated:
            return
        ran = self.clock() - job.started_at
        if self.job_s is not None and ran < self.job_s <= ran + self.debounce.delay_s:
            return  # its picture comes before the change's own job leaves: it is shown meanwhile
        self.outdated.add(job.job_id)  # (an overdue job's end is unknown: it is stopped too)
        self.controller.cancel(job.job_id)

    def tick(self, now: float) -> Submit | None:
        """Called from the editor's timer: sends the live job once the changes paused; returns it."""
        if not self.on or not self.debounce.due(now) or not self.doc.is_open():
            return None
        return self.send()

    def send(self) -> Submit:
        """A live job for the canvas as it is now; it supersedes the previous one on the backend."""
        job_id = new_job_id(f"{self.controller.job_prefix}-live")
        submit = dataclasses.replace(live_request(self.doc, self.params(), self.controller, job_id), live=True)
        self.latest = submit.job_id
        self.unfinished.add(submit.job_id)
        self.counts.submitted += 1
        self.controller.schedule(self.controller.client.submit(submit, self.doc))
        return submit

    def handle(self, event: Any, job: Any) -> None:
        """An event of a live job (the controller routes them here)."""
        if isinstance(event, Started):
            self.running = RunningJob(job.id, self.clock())
        if isinstance(event, JobError) and event.code == ErrorCode.NOT_FOUND and event.field == "cancel.job_id":
            return  # our cancel came after the job had ended: nothing failed
        if isinstance(event, JobStatus) and JobState(event.state).finished:  # ended while we were away
            self._ended(job.id)
        if not isinstance(event, (Result, Cancelled, JobError)):
            return
        if self.running is not None and self.running.job_id == job.id:
            ran = self.clock() - self.running.started_at
            if isinstance(event, Result):
                self.job_s = ran
            elif self.job_s is not None:
                self.job_s = max(self.job_s, ran)  # stopped unfinished: a live job takes at least this long
        stopped_early = job.id in self.outdated
        self._ended(job.id)
        if isinstance(event, Result):
            self.counts.finished += 1
            if job.id == self.latest and self.doc.is_open():
                image, seed = event.images[0], event.seeds[0]
                self.picture = LivePicture(job.id, image, event.rect, result_layer_name(job.submit, seed))
                self.doc.show_preview(to_rgba8(image), event.rect)  # the same size: shown pixel for pixel
        elif isinstance(event, Cancelled):
            if event.superseded_by is not None:
                self.counts.superseded += 1  # the picture before stays shown until the new one arrives
            elif stopped_early:
                self.counts.stopped += 1
            elif job.id == self.latest:
                self.latest = None
        else:
            self.controller.messages.append(f"live: {event.message}")
            if job.id == self.latest:
                self.latest = None

    def _ended(self, job_id: str) -> None:
        if self.running is not None and self.running.job_id == job_id:
            self.running = None
        self.outdated.discard(job_id)
        self.unfinished.discard(job_id)

    def apply(self) -> str | None:
        """The newest live picture becomes a real layer (undoable, named like every result); its name."""
        picture = self.picture
        if picture is None or not self.doc.is_open():
            return None
        self.picture = None
        self.doc.clear_preview()
        self.doc.insert_result(picture.image, picture.rect, picture.name)
        return picture.name

    def stop(self) -> None:
        """Live off: the pending change is forgotten and the running live job cancelled; the last
        picture stays shown, so Apply still works."""
        self.on = False
        self.debounce.due_at = None
        if self.latest is not None and self.latest in self.unfinished:
            self.controller.cancel(self.latest)

    def discard(self) -> None:
        """Forget the live picture and clear the preview layer."""
        self.picture = None
        if self.doc.is_open():
            self.doc.clear_preview()


StartTimer = Callable[[float, Callable[[], object]], object]  # (seconds, callback): the editor's one-shot timer


class LiveTimer:
    """Sends a live painting's job when its debounce ends, through the editor's one-shot timer."""

    def __init__(self, painting: LivePainting, start_timer: StartTimer, clock: Callable[[], float] = time.monotonic):
        self.painting, self.start_timer, self.clock = painting, start_timer, clock
        self.armed = False  # a timer is pending

    def arm(self) -> None:
        """Called after the editor told the painting of a change. One timer at a time: a change only
        moves the debounce's end later, and a timer that comes before the end sets itself again."""
        wait = self.painting.next_tick_in(self.clock())
        if wait is not None and not self.armed:
            self.armed = True
            self.start_timer(wait, self.fire)

    def fire(self) -> Submit | None:
        """The timer's callback: the live job if the debounce has ended, else the timer is set again."""
        self.armed = False
        submit = self.painting.tick(self.clock())
        if submit is None:
            self.arm()
        return submit


class LivePoll:
    """What every editor's live painting does alike: a poll on the editor's timer compares a
    fingerprint of the painter's layer (how the editor notices a change: neither Krita nor GIMP tells
    a plug-in that pixels changed), a one-shot timer sends the job when the debounce ends, and a
    failure stops live painting in plain words instead of raising from a timer. The editor's adapter
    gives the fingerprint (:meth:`look`) and its timers."""

    def __init__(self, painting: LivePainting, start_timer: StartTimer, on_error: Callable[[str], None]) -> None:
        self.painting, self.on_error = painting, on_error
        self.seen: object = None  # None: the first poll counts as a change (paints at once)
        self.slowest_tick_s = 0.0  # the longest a poll or a send held the editor's loop
        self.send_timer = LiveTimer(painting, lambda seconds, _fire: start_timer(seconds, self.send))

    def look(self) -> object:
        """The fingerprint of the painter's layer now; None when there is none to watch."""
        raise NotImplementedError

    def poll(self) -> None:
        """The editor's poll timer: a changed fingerprint is a change of the canvas."""
        started = time.monotonic()
        try:
            now = self.look()
            if now is not None and now != self.seen:
                self.seen = now
                self.painting.changed(started)
            self.send_timer.arm()
        except Exception as exc:  # plain words in the editor's panel, never a dialog from a timer
            self.failed(exc)
        self.slowest_tick_s = max(self.slowest_tick_s, time.monotonic() - started)

    def send(self) -> None:
        """The live job of the layer as it is now, once the changes paused (a turn of the editor's loop
        of its own, even when due at once: the loop runs between the poll that noticed and the send)."""
        started = time.monotonic()
        try:
            if self.painting.on:
                self.send_timer.fire()
        except Exception as exc:
            self.failed(exc)
        self.slowest_tick_s = max(self.slowest_tick_s, time.monotonic() - started)

    def failed(self, exc: Exception) -> None:
        log.exception("live painting stopped")
        self.stop()
        self.on_error(f"Live painting stopped: {exc}")

    def stop(self) -> None:
        """Live off: no more jobs; the last live picture stays in the preview layer for Apply."""
        self.painting.stop()

    def apply(self) -> str | None:
        """The newest live picture becomes a layer (one undo step, named like every result); its name."""
        return self.painting.apply()
