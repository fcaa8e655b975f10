"""plugin.gimp's pure parts on the host, without GIMP or ``gi``: arguments, formats, and a whole job.

``job.generate_and_wait`` runs here exactly as inside GIMP, on a small stand-in for GLib's main
loop, against a real backend; the document is a plain-bytes fake that records which thread touched it.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "portable"))
from core_checks import ListDocument

from sfumato.plugin.core.jobs import TrackedJob
from sfumato.plugin.core.references import DEFAULT_REFERENCE_WEIGHT, ReferenceSpec
from sfumato.plugin.core.requests import ControlSpec
from sfumato.plugin.gimp import formats, params
from sfumato.plugin.gimp.job import Outcome, generate_and_wait
from sfumato.plugin.gimp.params import INPAINT, RESTYLE, BadArguments, request_from
from sfumato.plugin.gimp.settings import Settings
from sfumato.protocol import (
    DEFAULT_MODEL,
    DEFAULT_REFERENCE_MODE,
    DEFAULT_STRENGTH,
    INPAINT_STRENGTH,
    SCHEDULERS,
    Image,
    PixelFormat,
    Rect,
)

ROOT = Path(__file__).resolve().parents[2]
GIMP_PACKAGE = ROOT / "plugin" / "gimp"

# ---------------------------------------------------------------------------- arguments


def test_defaults_give_the_protocol_defaults_and_a_random_seed() -> None:
    r = request_from(RESTYLE, {})
    assert (r.task, r.server_url, r.token) == (RESTYLE, params.DEFAULT_SERVER, "")
    p = r.params
    assert (p.model, p.strength, p.seed, p.batch_size, p.preview.enabled) == (
        DEFAULT_MODEL,
        DEFAULT_STRENGTH,
        None,
        1,
        True,
    )
    assert request_from(INPAINT, {}).params.strength == INPAINT_STRENGTH  # a selection to repaint: a new picture


def test_every_argument_reaches_the_request() -> None:
    values = {
        "server-url": " ws://10.0.0.2:9000 ",
        "token": "t" * 20,
        "model": "Stable-diffusion/x",
        "prompt": "a fox",
        "negative-prompt": "blur",
        "strength": 0.35,
        "steps": 12,
        "guidance": 4.5,
        "sampler": "ddim",
        "seed": 42,
        "batch": 3,
        "reference-layer": "Look ",
        "reference-weight": 1.25,
        "reference-mode": "composition",
        "control-type": "depth",
        "control-layer": "Sketch",
        "control-strength": 0.7,
        "control-is-map": 1,
    }
    r = request_from(RESTYLE, values, previews=False)
    p = r.params
    assert (r.server_url, r.token) == ("ws://10.0.0.2:9000", "t" * 20)
    assert (p.model, p.prompt, p.negative_prompt, p.strength, p.steps, p.guidance) == (
        "Stable-diffusion/x",
        "a fox",
        "blur",
        0.35,
        12,
        4.5,
    )
    assert (p.scheduler, p.seed, p.batch_size, p.preview.enabled) == ("ddim", 42, 3, False)
    assert p.references == (ReferenceSpec(layer="Look ", weight=1.25, mode="composition"),)  # names are exact
    assert p.controls == (ControlSpec(type="depth", layer="Sketch", strength=0.7, preprocess=False),)


def test_a_reference_is_sent_only_when_a_layer_is_named() -> None:
    assert request_from(RESTYLE, {}).params.references == ()
    # GIMP's dialog hands an empty text argument back as None: no reference (nor a layer named 'None')
    untouched = request_from(RESTYLE, {"reference-layer": None, "negative-prompt": None, "token": None})
    assert untouched.params.references == () and untouched.params.negative_prompt == "" and untouched.token == ""
    assert request_from(RESTYLE, {"reference-layer": "  ", "reference-weight": 2.0}).params.references == ()
    (ref,) = request_from(INPAINT, {"reference-layer": "Look"}).params.references
    assert (ref.weight, ref.mode, ref.adapter) == (DEFAULT_REFERENCE_WEIGHT, DEFAULT_REFERENCE_MODE, None)


def test_a_control_is_sent_only_when_its_type_is_named_and_reads_this_layer_unless_told() -> None:
    assert request_from(RESTYLE, {"control-layer": "Sketch", "control-strength": 2.0}).params.controls == ()
    (control,) = request_from(RESTYLE, {"control-type": " canny ", "control-layer": " "}).params.controls
    assert control == ControlSpec(type="canny", layer=None, strength=1.0, preprocess=True)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"sampler": "nope"}, "sampler: expected one of " + ", ".join(SCHEDULERS)),
        ({"server-url": "http://x"}, "server-url: expected ws://HOST:PORT"),
        ({"steps": 0}, "steps: expected 1..200"),
        ({"batch": 9}, "batch: expected 1..8"),
        ({"strength": 1.5}, "strength: expected 0..1"),
        ({"reference-mode": "colour"}, "reference-mode: expected one of style, full, composition"),
        ({"reference-weight": 2.5}, "reference-weight: expected 0..2"),
        ({"control-type": "edges"}, "control-type: expected one of canny, depth"),
        ({"control-is-map": 2}, "control-is-map: expected 0..1"),
    ],
)
def test_bad_arguments_are_refused_in_plain_words(values: dict[str, object], words: str) -> None:
    with pytest.raises(BadArguments, match=words.replace(".", r"\.")):
        request_from(RESTYLE, values)


def test_the_procedures_share_one_argument_table() -> None:
    restyle, inpaint = params.arguments(RESTYLE), params.arguments(INPAINT)
    assert [a.name for a in restyle] == [a.name for a in inpaint]
    assert [a.name for a in restyle] == [
        "server-url",
        "token",
        "model",
        "prompt",
        "negative-prompt",
        "strength",
        "steps",
        "guidance",
        "sampler",
        "seed",
        "batch",
        "reference-layer",
        "reference-weight",
        "reference-mode",
        "control-type",
        "control-layer",
        "control-strength",
        "control-is-map",
    ]
    for a in restyle:
        assert a.kind in ("string", "int", "double")
        assert a.kind == "string" or a.lo <= a.default <= a.hi, a


def test_window_settings_survive_a_round_trip_and_a_broken_file(tmp_path: Path) -> None:
    assert Settings.load(tmp_path) == Settings()  # no file yet
    s = Settings(server_url="ws://h:1", token="t", strength=0.3, steps=12, guidance=5, batch_size=2)
    s.save(tmp_path)
    assert Settings.load(tmp_path) == s
    (tmp_path / "sfumato.json").write_text('{"steps": "many", "strength": 1, "unknown": 3, "token": null}')
    loaded = Settings.load(tmp_path)
    assert (loaded.steps, loaded.strength, loaded.token) == (Settings().steps, 1.0, "")  # what is wrong is default
    (tmp_path / "sfumato.json").write_text("{not json")
    assert Settings.load(tmp_path) == Settings()


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("precision", "wire"),
    [
        (100, PixelFormat.RGBA8),  # u8 linear
        (150, PixelFormat.RGBA8),  # u8 non-linear (GIMP's default)
        (175, PixelFormat.RGBA8),
        (200, PixelFormat.RGBA16),
        (250, PixelFormat.RGBA16),
        (300, PixelFormat.RGBAF32),  # u32: more than rgba16 holds
        (500, PixelFormat.RGBAF32),  # half
        (650, PixelFormat.RGBAF32),  # float
        (750, PixelFormat.RGBAF32),  # double
    ],
)
def test_each_precision_travels_in_its_own_format(precision: int, wire: str) -> None:
    assert formats.wire_format(precision) == wire
    assert formats.BABL[wire].startswith("R'G'B'A ")  # perceptual: what the models were trained on


def test_indexed_images_are_refused_with_what_to_do() -> None:
    formats.check_base_type(formats.RGB)
    formats.check_base_type(formats.GRAY)
    with pytest.raises(formats.UnsupportedImage, match=r"Image > Mode > RGB"):
        formats.check_base_type(formats.INDEXED)
    with pytest.raises(formats.UnsupportedImage):
        formats.wire_format(400)


# ---------------------------------------------------------------------------- a whole job


class Loop:
    """What GLib's main loop does for job.py: callbacks from any thread, timers, run/quit, on one thread."""

    def __init__(self, limit_s: float = 90.0) -> None:
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()
        self.timers: list[list[object]] = []
        self.thread: threading.Thread | None = None
        self.deadline = time.monotonic() + limit_s
        self.running = False

    def post(self, fn: Callable[[], None]) -> None:
        self.calls.put(fn)

    def every(self, seconds: float, fn: Callable[[], bool]) -> None:
        self.timers.append([time.monotonic() + seconds, seconds, fn])

    def run(self) -> None:
        self.thread, self.running = threading.current_thread(), True
        while self.running:
            assert time.monotonic() < self.deadline, "the job never ended"
            try:
                self.calls.get(timeout=0.02)()
            except queue.Empty:
                pass
            now = time.monotonic()
            for timer in list(self.timers):
                due, every, fn = timer
                if now >= due:  # type: ignore[operator]
                    if fn():  # type: ignore[operator]
                        timer[0] = now + every  # type: ignore[operator]
                    else:
                        self.timers.remove(timer)

    def quit(self) -> None:
        self.running = False


class Document(ListDocument):
    """A 64×64 fake image that checks every call comes from the loop's thread, as GIMP requires."""

    def __init__(self, loop: Loop, selection: Rect | None = None, open_until_submit: bool = False) -> None:
        super().__init__(selection)
        self.loop = loop
        self.previews: list[Rect] = []
        self.cleared = 0
        self.progress: list[tuple[str, int]] = []
        self.wrong_thread: list[str] = []
        self.open_until_submit = open_until_submit

    def _on_loop(self, what: str) -> None:
        if threading.current_thread() is not self.loop.thread:
            self.wrong_thread.append(what)

    def is_open(self) -> bool:
        return not (self.open_until_submit and self.reads)  # "closed" once its pixels were read

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        self._on_loop("read_layer")
        return super().read_layer(rect, layer)

    def show_preview(self, image: Image, rect: Rect) -> None:
        self._on_loop("show_preview")
        self.previews.append(rect)

    def clear_preview(self) -> None:
        self._on_loop("clear_preview")
        self.cleared += 1

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        self._on_loop("insert_result")
        super().insert_result(image, rect, name)


def _run(doc: Document, loop: Loop, url: str, task: str = RESTYLE, **values: object) -> Outcome:
    values = {"server-url": url, "steps": 8, "seed": 7, "prompt": "a test", **values}

    def progress(job: TrackedJob) -> None:
        doc._on_loop("progress")
        doc.progress.append((job.state.value, job.step))

    return generate_and_wait(doc, request_from(task, values), loop, connect_timeout=2.0, on_progress=progress)


def test_a_restyle_lands_its_layers_from_the_main_loop(backend_url: str) -> None:
    loop = Loop()
    doc = Document(loop)
    outcome = _run(doc, loop, backend_url, batch=2)
    assert outcome.ok, outcome.message
    assert outcome.layers == ("a test [seed 7]", "a test [seed 8]") and outcome.seeds == (7, 8)
    assert [(rect, name) for _, rect, name in doc.layers] == [
        (Rect(x=0, y=0, w=64, h=64), "a test [seed 7]"),
        (Rect(x=0, y=0, w=64, h=64), "a test [seed 8]"),
    ]
    assert all(img.data != doc.pixels for img, _, _ in doc.layers)
    assert doc.progress, "no progress reported"  # at least `started`; steps are throttled by the backend
    assert doc.cleared >= 1 and not doc.wrong_thread, doc.wrong_thread


def test_an_inpaint_sends_the_selection_and_pastes_inside_it(backend_url: str) -> None:
    loop = Loop()
    selection = Rect(x=20, y=24, w=10, h=6)
    doc = Document(loop, selection)
    outcome = _run(doc, loop, backend_url, task=INPAINT)
    assert outcome.ok, outcome.message
    [(_, rect, name)] = doc.layers
    assert rect == selection and name == "a test [seed 7]" and not doc.wrong_thread


def test_a_result_for_a_closed_image_is_kept_and_reported_never_pasted(backend_url: str) -> None:
    loop = Loop()
    doc = Document(loop, open_until_submit=True)
    outcome = _run(doc, loop, backend_url)
    assert not outcome.ok and "was closed" in outcome.message
    assert doc.layers == []


def test_the_backends_refusal_comes_back_in_its_words(backend_url: str) -> None:
    loop = Loop()
    doc = Document(loop)
    outcome = _run(doc, loop, backend_url, model="no/such-model")
    assert not outcome.ok and "unknown_model" in outcome.message and "no/such-model" in outcome.message
    assert doc.layers == []


def test_no_backend_fails_soon_with_what_to_do() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = Loop(limit_s=20)
    doc = Document(loop)
    outcome = _run(doc, loop, f"ws://127.0.0.1:{port}")
    assert not outcome.ok and "cannot reach the Sfumato backend" in outcome.message
    assert "./install/start" in outcome.message
    assert doc.reads == []  # nothing was read, nothing sent


# ---------------------------------------------------------------------------- live painting's adapter


class Bytes:
    """GLib.Bytes as GIMP's thumbnail returns it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_data(self) -> bytes:
        return self.data


class Layer:
    """A GIMP layer as the live poll sees it: identity, name, offsets, size and a thumbnail of its pixels."""

    def __init__(self, ident: int, name: str, pixels: bytes) -> None:
        self.ident, self.name, self.pixels, self.valid = ident, name, pixels, True

    def get_id(self) -> int:
        return self.ident

    def get_name(self) -> str:
        return self.name

    def is_valid(self) -> bool:
        return self.valid

    def get_offsets(self) -> tuple[bool, int, int]:
        return True, 0, 0

    def get_width(self) -> int:
        return 64

    def get_height(self) -> int:
        return 64

    def get_thumbnail_data(self, w: int, h: int) -> tuple[Bytes, int, int, int]:
        return Bytes(self.pixels[::16]), 64, 64, 4  # coarse, as a thumbnail is


class LiveDocument(ListDocument):
    """A GimpDocument stand-in: the image's selected layers, the source the poll sets, the preview layer."""

    def __init__(self, paint: Layer) -> None:
        super().__init__(None)
        self.image = SimpleNamespace(get_selected_layers=lambda: list(self.selected))
        self.selected, self.source, self.open = [paint], paint, True
        self.previews: list[Image] = []

    def is_open(self) -> bool:
        return self.open

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        return Image(width=64, height=64, format="rgba8", data=self.source.pixels)

    def show_preview(self, image: Image, rect: Rect) -> None:
        self.previews.append(image)

    def clear_preview(self) -> None:
        self.previews.append(None)  # type: ignore[arg-type]


def test_live_polls_the_painters_layer_never_the_preview_and_apply_makes_one_layer() -> None:
    from sfumato.plugin.core.controller import Controller
    from sfumato.plugin.core.editor import PREVIEW_LAYER
    from sfumato.plugin.core.jobs import JobTracker
    from sfumato.plugin.core.requests import GenerationParams
    from sfumato.plugin.gimp.live import POLL_MS, GimpLive
    from sfumato.protocol import Result

    sent: list[Any] = []
    tracker = JobTracker()

    async def submit(s: Any, document: object = None) -> Any:
        sent.append(s)
        return tracker.add(s, document)

    async def cancel(job_id: str) -> None:
        sent.append(("cancel", job_id))

    client = SimpleNamespace(welcome=None, submit=submit, cancel=cancel, tracker=tracker)
    controller = Controller(client, asyncio.run, job_prefix="g")  # type: ignore[arg-type]
    paint = Layer(1, "Paint", bytes((90, 60, 30, 255)) * 64 * 64)
    doc = LiveDocument(paint)
    polls: list[tuple[int, Callable[[], bool]]] = []
    timers: list[tuple[float, Callable[[], object]]] = []
    errors: list[str] = []
    params = GenerationParams(prompt="fox", seed=5)
    repeat, after = (lambda ms, f: polls.append((ms, f))), (lambda s, f: timers.append((s, f)))
    live = GimpLive(controller, doc, lambda: params, errors.append, repeat, after, debounce_s=0.0)
    assert [ms for ms, _ in polls] == [POLL_MS]

    def turn() -> bool:
        """One poll, then the one-shot timers it set (GLib's loop runs them in turns of their own)."""
        again = polls[0][1]()
        while timers:
            timers.pop(0)[1]()
        return again

    assert turn() and [s.live for s in sent] == [True]  # Live on paints the layer as it is at once
    assert turn() and len(sent) == 1  # nothing changed: nothing sent
    paint.pixels = bytes((255, 0, 0, 255)) * 64 * 64  # the painter paints
    turn()
    assert len(sent) == 2 and sent[1].image.data == paint.pixels
    job = tracker.jobs[sent[1].job_id]
    picture = Image(width=64, height=64, format="rgba8", data=bytes((200, 100, 50, 255)) * 64 * 64)
    controller.handle(Result(job_id=job.id, images=(picture,), rect=Rect(x=0, y=0, w=64, h=64), seeds=(5,)), job)
    assert doc.previews == [picture] and live.painting.picture is not None
    doc.selected = [Layer(2, PREVIEW_LAYER, picture.data)]  # the painter clicked the preview layer
    turn()
    assert len(sent) == 2 and doc.source is paint  # the preview is no change; the painter's layer is still watched
    doc.selected = [paint, Layer(3, "Other", b"")]  # two layers: the last one watched stays
    paint.pixels = bytes((0, 255, 0, 255)) * 64 * 64
    turn()
    assert len(sent) == 3 and sent[2].image.data == paint.pixels and doc.source is paint
    assert live.apply() == "fox [seed 5]" and doc.layers[-1][2] == "fox [seed 5]" and doc.layers[-1][0] == picture
    assert live.apply() is None and len(doc.layers) == 1  # applied once
    live.stop()  # Live off: the running live job is cancelled, the GLib source ends, nothing more is sent
    assert sent[3:] == [("cancel", sent[2].job_id)]
    paint.pixels = bytes(64 * 64 * 4)
    assert turn() is False and len(sent) == 4 and not errors
    assert live.slowest_tick_s > 0


def test_live_stops_in_plain_words_when_the_image_closes_or_the_poll_fails() -> None:
    from sfumato.plugin.core.requests import GenerationParams
    from sfumato.plugin.gimp.live import GimpLive

    controller = SimpleNamespace(live=None, active_jobs=list)
    polls: list[Callable[[], bool]] = []
    for breakage in ("closed", "failing"):
        paint = Layer(1, "Paint", bytes(64 * 64 * 4))
        doc = LiveDocument(paint)
        errors: list[str] = []
        repeat = lambda ms, f: polls.append(f)  # noqa: E731
        live = GimpLive(controller, doc, GenerationParams, errors.append, repeat, lambda s, f: None)  # type: ignore[arg-type]
        if breakage == "closed":
            doc.open = False
        else:
            paint.get_thumbnail_data = None  # type: ignore[assignment,method-assign]  # GIMP refused the call
        assert polls[-1]() is False and not live.painting.on
        assert len(errors) == 1 and errors[0].startswith("Live painting stopped: "), errors
        assert ("was closed" in errors[0]) == (breakage == "closed"), errors
