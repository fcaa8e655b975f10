"""The in-GIMP window test: loaded into the Sfumato window's plug-in process through SFUMATO_GIMP_TEST_HOOK.

Test-only, never shipped (test_gimp_e2e.py copies it next to the throwaway profile). It drives the
window through its own widgets — the Connect, Generate, Cancel, Live and Apply buttons — against a
real backend, checks the image, writes a JSON result file (judged by the test, never GIMP's exit
code), saves a screenshot and closes the window. Steps run as a generator polled by a GLib timer,
so GIMP and the network keep running while the test waits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gdk", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gdk, Gegl, Gimp, GLib  # noqa: E402

from sfumato.plugin.core.live import PLAIN  # noqa: E402
from sfumato.plugin.core.pixels import to_rgba8  # noqa: E402
from sfumato.plugin.gimp.document import PREVIEW_LAYER  # noqa: E402
from sfumato.plugin.gimp.live import fingerprint  # noqa: E402
from sfumato.protocol import Started  # noqa: E402

OUT = os.environ.get("SFUMATO_GIMP_TEST_WINDOW", "")
SERVER = os.environ.get("SFUMATO_GIMP_TEST_SERVER", "")
SCREENSHOT = os.environ.get("SFUMATO_GIMP_SCREENSHOT", "")
PYLIB = os.environ.get("SFUMATO_GIMP_TEST_PYLIB", "")
TIMEOUT_S = 230  # its own watchdog, inside the test's 240 s limit


class Wait:
    def __init__(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        self.cond, self.deadline, self.what = cond, time.monotonic() + timeout, what


class Run:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def check(self, name: str, ok: object, detail: object = "") -> None:
        t = round(time.monotonic() - self.started, 1)
        self.checks.append({"name": name, "ok": bool(ok), "detail": str(detail)[:500], "t": t})
        print(f"sfumato-selftest: {'ok  ' if ok else 'FAIL'} {name} {detail}", file=sys.stderr, flush=True)

    def write(self, error: str = "", finished: bool = False) -> None:
        body = {
            "checks": self.checks,
            "error": error,
            "finished": finished,
            "seconds": round(time.monotonic() - self.started, 1),
            "gimp": Gimp.version(),
            "python": sys.version.split()[0],
        }
        with open(OUT + ".tmp", "w") as f:
            json.dump(body, f, indent=2)
        os.replace(OUT + ".tmp", OUT)


def start(window: Any) -> bool:
    run = Run()
    steps = scenario(window, run)
    state: dict[str, Wait | None] = {"waiting": None}

    def end(error: str = "") -> bool:
        run.write(error, finished=True)
        window.window.destroy()  # ends Gtk.main(): the procedure returns
        return False

    def tick() -> bool:
        try:
            if time.monotonic() - run.started > TIMEOUT_S:
                return end(f"watchdog: the test took longer than {TIMEOUT_S} s")
            waiting = state["waiting"]
            if waiting is not None and not waiting.cond():
                if time.monotonic() > waiting.deadline:
                    raise TimeoutError(f"timed out waiting for {waiting.what}")
                return True
            state["waiting"] = next(steps)
            return True
        except StopIteration:
            return end()
        except Exception:
            return end(traceback.format_exc())

    GLib.timeout_add(50, tick)
    return False


# ---------------------------------------------------------------------------- helpers


def names(image: Any) -> list[str]:
    return [layer.get_name() for layer in image.get_layers()]


def pixels(drawable: Any, rect: tuple[int, int, int, int] | None = None, fmt: str = "R'G'B'A u8") -> bytes:
    x, y, w, h = rect or (0, 0, drawable.get_width(), drawable.get_height())
    area = Gegl.Rectangle.new(x, y, w, h)
    return bytes(drawable.get_buffer().get(area, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def projection(image: Any) -> bytes:
    dup = image.duplicate()
    data = pixels(dup.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE))
    dup.delete()
    return data


def fill(layer: Any, x: int, y: int, rgba: tuple[int, int, int, int], side: int = 16) -> None:
    """A square of one colour on ``layer``, written as GIMP's tools write: the buffer, then the drawable's update."""
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(x, y, side, side), "R'G'B'A u8", bytes(rgba) * side * side)
    buffer.flush()
    layer.update(x, y, side, side)


def changed(before: bytes, after: bytes, coverage: bytes, value: int) -> int:
    """How many pixels whose selection coverage is ``value`` differ between two RGBA8 composites."""
    return sum(
        1 for i, c in enumerate(coverage) if c == value and after[4 * i : 4 * i + 4] != before[4 * i : 4 * i + 4]
    )


def _top(widget: Any) -> int:
    """The widget's y in its window (GTK 3 returns the coordinates last, after an ok flag or not)."""
    return int(widget.translate_coordinates(widget.get_toplevel(), 0, 0)[-1])


def press_in_gimp(keys: tuple[str, ...]) -> str:
    """Press ``keys`` together (X keysym names) in GIMP's image window as a keyboard would, through XTest.

    Xvfb has no window manager: X's focus follows the pointer.
    Says which window got them, or why none did.
    """
    sys.path.insert(0, PYLIB)  # python-xlib and six, copied there by test_gimp_e2e.py
    from Xlib import XK, X, display  # type: ignore[import-untyped]
    from Xlib.ext import xtest  # type: ignore[import-untyped]

    conn = display.Display()
    name, utf8 = conn.intern_atom("_NET_WM_NAME"), conn.intern_atom("UTF8_STRING")
    for window in conn.screen().root.query_tree().children:
        prop = window.get_full_property(name, utf8)
        title = prop.value.decode("utf-8", "replace") if prop is not None else ""
        if not title.rstrip().endswith("GIMP") or window.get_attributes().map_state != X.IsViewable:
            continue
        # A click on the status bar first, where it changes nothing: GTK takes keys once the window was clicked.
        geometry = window.get_geometry()
        xtest.fake_input(
            conn, X.MotionNotify, x=geometry.x + geometry.width * 2 // 3, y=geometry.y + geometry.height - 12
        )
        xtest.fake_input(conn, X.ButtonPress, 1)
        xtest.fake_input(conn, X.ButtonRelease, 1)
        codes = [conn.keysym_to_keycode(XK.string_to_keysym(k)) for k in keys]
        for code in codes:
            xtest.fake_input(conn, X.KeyPress, code)
        for code in reversed(codes):
            xtest.fake_input(conn, X.KeyRelease, code)
        conn.sync()
        return title
    return "no GIMP image window is mapped"


def screenshot(path: str) -> bool:
    root = Gdk.get_default_root_window()
    shot = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    return bool(shot is not None and shot.savev(path, "png", [], []))


# ---------------------------------------------------------------------------- the scenario


def scenario(win: Any, run: Run) -> Iterator[Wait | None]:
    image = win.image
    size = image.get_width()
    win.server.set_text(SERVER)
    win.connect_button.clicked()
    yield Wait(lambda: win.controller.connection.state == "connected", 30, "the connection")
    run.check("connected, models listed", win.model.get_active_id() == "builtin:tiny", win.status.get_text())
    run.check(
        "layout: connection settings fold once connected; Options and ControlNet folded",
        not any(x.expander.get_expanded() for x in (win.connection, win.options, win.controlnet)),
    )
    run.check(
        "layout: Generate, the progress and the message sit above every folded section",
        max(_top(w) for w in (win.generate_button, win.progress, win.message))
        < min(_top(x.expander) for x in (win.options, win.controlnet, win.connection)),
    )

    src = image.get_layer_by_name("Paint")
    run.check(
        "Filters > Sfumato > Restyle Layer… (its dialog, OK) added its layer above the source",
        names(image)[:2] == ["from the menu [seed 3]", "Paint"],
        names(image),
    )
    image.get_layer_by_name("from the menu [seed 3]").set_visible(False)  # it covers what comes next
    image.set_selected_layers([src])
    source_before = pixels(src)
    layers_before = names(image)

    # (a) restyle: no selection
    win.prompt.get_buffer().set_text("a test")
    win.strength.set_value(0.5)
    win.steps.set_value(8)
    win.random_seed.set_active(False)
    win.seed.set_value(7)
    seen = {"preview": False, "locked": True, "progress": 0.0, "words": ""}

    def landed(name: str) -> Callable[[], bool]:
        def cond() -> bool:
            preview = image.get_layer_by_name(PREVIEW_LAYER)
            if preview is not None:
                seen["preview"] = True
                seen["locked"] = bool(seen["locked"]) and preview.get_lock_content()
            seen["progress"] = max(float(seen["progress"]), win.progress.get_fraction())
            if win.progress.get_fraction() > 0:
                seen["words"] = win.progress.get_text()
            return image.get_layer_by_name(name) is not None

        return cond

    yield Wait(lambda: "restyles" in win.mode.get_text(), 5, "the mode line")
    run.check("mode line: no selection → restyle", "restyles" in win.mode.get_text(), win.mode.get_text())
    control = win.add_control()
    control.type.set_active_id("canny")
    run.check("ControlNet: the source list holds the image's layers", control.layer.set_active_id("Paint"))
    tracker = win.controller.client.tracker
    win.generate_button.clicked()
    run.check("generate: no error shown", win.message.get_text() == "", win.message.get_text())
    # the submit reaches the tracker from the network thread: wait for it rather than race it
    yield Wait(lambda: bool(tracker.jobs), 10, "the submit to be tracked")
    submit = list(tracker.jobs.values())[-1].submit
    sent = submit.controls[0].image if len(submit.controls) == 1 else None
    run.check(
        "ControlNet: canny from the layer 'Paint' sent with its pixels",
        submit.controls[0].type == "canny" and sent is not None and sent.data == source_before,
        [(c.type, c.image.width, c.image.height) for c in submit.controls],
    )
    yield Wait(landed("a test [seed 7]"), 90, "the restyle result")
    result = image.get_layer_by_name("a test [seed 7]")
    order = names(image)
    run.check(
        "restyle: result layer right above the source",
        order.index(result.get_name()) == order.index("Paint") - 1,
        order,
    )
    run.check("restyle: previews shown in one locked layer", seen["preview"] and seen["locked"], seen)
    run.check("restyle: the progress bar moved, counting steps", seen["progress"] > 0 and " of " in seen["words"], seen)
    yield Wait(lambda: win.progress.get_text() == "idle", 10, "the bar to say idle")
    run.check("restyle: the bar says idle once the job is done", win.progress.get_text() == "idle")
    run.check("restyle: preview layer removed", image.get_layer_by_name(PREVIEW_LAYER) is None, names(image))
    run.check("restyle: source layer untouched", pixels(src) == source_before)
    run.check("restyle: the result differs from the source", pixels(result) != source_before)
    run.check(
        "restyle: the painter's layer stays selected", [x.get_name() for x in image.get_selected_layers()] == ["Paint"]
    )
    if SCREENSHOT:
        width = win.window.get_size()[0]  # no window manager under Xvfb: at the right edge, clear of GIMP
        win.window.move(Gdk.Screen.get_default().get_width() - width, 0)
        yield None
        yield Wait(lambda: True, 1, "")
        run.check("screenshot saved", screenshot(SCREENSHOT), SCREENSHOT)

    control.remove.clicked()
    run.check("ControlNet: ✕ removes the control", win.control_rows == [] and not win.controls_box.get_children())

    # (a2) a style reference: the same restyle of 'Paint', with the restyled layer as its reference
    image.set_selected_layers([src])
    win.prompt.get_buffer().set_text("styled")
    win.generate_button.clicked()
    yield Wait(landed("styled [seed 7]"), 90, "the restyle without a reference")
    plain = image.get_layer_by_name("styled [seed 7]")
    plain.set_name("styled without reference")
    ref = win.add_reference()
    run.check("reference: the layer list holds the image's layers", ref.layer.set_active_id("a test [seed 7]"))
    ref.mode.set_active_id("style")
    ref.weight.set_value(1.0)
    run.check(
        "reference: the window offers the backend's IP-Adapter", ref.adapter.set_active_id("ipadapter/ip-adapter_sd15")
    )
    win.generate_button.clicked()
    yield Wait(landed("styled [seed 7]"), 90, "the restyle with a style reference")
    styled = image.get_layer_by_name("styled [seed 7]")
    a, b = pixels(styled), pixels(plain)
    differing = sum(1 for i in range(0, len(a), 4) if a[i : i + 4] != b[i : i + 4])
    run.check("reference: a style reference changes the restyle", differing > len(a) // 40, f"{differing} px differ")
    run.check("reference: source layer untouched", pixels(src) == source_before)
    ref.remove.clicked()
    run.check("reference: ✕ removes it", win.reference_rows == [] and not win.references_box.get_children())
    image.remove_layer(plain)
    image.remove_layer(styled)

    # (b) repaint a soft selection on the restyled layer
    image.set_selected_layers([result])
    image.select_ellipse(Gimp.ChannelOps.REPLACE, size // 4, size // 4, size // 2, size // 2)
    Gimp.Selection.feather(image, 10.0)
    yield Wait(lambda: "repaints" in win.mode.get_text(), 5, "the mode line")
    run.check("mode line: a selection → inpaint", "repaints" in win.mode.get_text(), win.mode.get_text())
    coverage = pixels(image.get_selection(), None, "Y u8")
    before = projection(image)
    win.prompt.get_buffer().set_text("a fox")
    win.strength.set_value(1.0)
    win.seed.set_value(9)
    win.generate_button.clicked()
    yield Wait(landed("a fox [seed 9]"), 90, "the inpaint result")
    after = projection(image)
    outside, inside = changed(before, after, coverage, 0), changed(before, after, coverage, 255)
    run.check("inpaint: 0 pixels changed outside the selection", outside == 0, f"{outside} changed")
    run.check("inpaint: pixels inside the selection repainted", inside > 0, f"{inside} changed")
    run.check("inpaint: preview layer removed", image.get_layer_by_name(PREVIEW_LAYER) is None)
    Gimp.Selection.none(image)

    # (c) a long job, cancelled from the window
    layers_mid = names(image)
    win.prompt.get_buffer().set_text("never finished")
    win.steps.set_value(150)
    win.generate_button.clicked()
    ctl = win.controller
    yield Wait(lambda: any(j.state.value == "running" and j.step >= 1 for j in ctl.active_jobs()), 60, "a running job")
    job = ctl.active_jobs()[0]
    run.check("cancel: the Cancel button is enabled while a job runs", win.cancel_button.get_sensitive())
    win.cancel_button.clicked()
    yield Wait(lambda: not ctl.active_jobs(), 20, "the cancel")
    run.check("cancel: the job is cancelled, early", job.state.value == "cancelled" and job.step < job.total, job.step)
    yield Wait(lambda: image.get_layer_by_name(PREVIEW_LAYER) is None, 5, "the preview layer to go")
    run.check("cancel: no new layer, preview layer gone", names(image) == layers_mid, names(image))
    expected = ["from the menu [seed 3]", "a fox [seed 9]", "a test [seed 7]", "Paint", "Background"]
    run.check(
        "no stray layers", names(image) == expected and layers_before == [expected[0], *expected[3:]], names(image)
    )

    # (e) undo from the painter's keyboard: the history's last steps are the inpaint result, then
    # "Select None" (the cancelled job added nothing); one Ctrl+Z each
    sent = press_in_gimp(("Control_L", "z"))
    run.check("undo: Ctrl+Z reached GIMP's image window", sent.endswith("GIMP"), sent)
    yield Wait(lambda: not Gimp.Selection.is_empty(image), 10, "the first undo")
    run.check("undo: the first Ctrl+Z brings the selection back", image.get_layer_by_name("a fox [seed 9]") is not None)
    press_in_gimp(("Control_L", "z"))
    yield Wait(lambda: image.get_layer_by_name("a fox [seed 9]") is None, 10, "the second undo")
    run.check(
        "undo: the next removes the inpaint result in one step, the earlier layers stay",
        names(image) == [expected[0], *expected[2:]],
        names(image),
    )
    Gimp.Selection.none(image)

    # (f) Expand from the window: the canvas grows on the right, the border is painted, the picture stays
    image.set_selected_layers([src])
    margin = 32
    before = projection(image)
    win.prompt.get_buffer().set_text("more")
    win.steps.set_value(6)
    win.seed.set_value(11)
    win.expand_margin.set_value(margin)
    for side, box in win.expand_sides.items():
        box.set_active(side == "right")
    win.expand_button.clicked()
    yield Wait(landed("more [seed 11]"), 90, "the expand result")
    grown = (image.get_width(), image.get_height())
    run.check("expand: the canvas grew by the margin, on the right", grown == (size + margin, size), grown)
    wide, row = projection(image), (size + margin) * 4
    kept = all(wide[y * row : y * row + size * 4] == before[y * size * 4 : (y + 1) * size * 4] for y in range(size))
    run.check("expand: every pixel of the picture unchanged", kept)
    alpha = {wide[y * row + x * 4 + 3] for y in range(size) for x in range(size, size + margin)}
    run.check("expand: the new border is painted, opaque", alpha == {255}, sorted(alpha)[:5])

    # (g) Upscale ×2 from the window: a new image twice the size, in the source's precision; this one unchanged
    images_before = {i.get_id() for i in Gimp.get_images()}
    layers_now = names(image)
    win.prompt.get_buffer().set_text("bigger")
    win.steps.set_value(4)
    win.seed.set_value(13)
    win.upscale_factor.set_active_id("2")
    win.upscale_button.clicked()

    def enlarged() -> list[Any]:
        return [i for i in Gimp.get_images() if i.get_id() not in images_before]

    yield Wait(lambda: bool(enlarged()), 120, "the upscaled image")
    big = enlarged()[0]
    run.check(
        "upscale: a new image twice the size, in the source's precision; this image unchanged",
        (big.get_width(), big.get_height()) == (2 * image.get_width(), 2 * image.get_height())
        and big.get_precision() == image.get_precision()
        and [layer.get_name() for layer in big.get_layers()] == ["bigger [seed 13]"]
        and names(image) == layers_now,
        f"{big.get_width()}x{big.get_height()} {[layer.get_name() for layer in big.get_layers()]}",
    )

    # (h) live painting, then what one tick of its poll costs on a 4096² layer
    yield from live_scenario(win, run, src)
    yield from fingerprint_cost(run)

    # (d) what cannot be done is said in plain words, nothing is sent
    image.set_selected_layers([src, result])
    sent = len(ctl.documents)  # filled at once, on this thread, for anything sent (the tracker fills later)
    win.generate_button.clicked()
    run.check(
        "two layers selected: refused in plain words, nothing sent",
        "select exactly one layer" in win.message.get_text() and len(ctl.documents) == sent,
        f"{win.message.get_text()!r} {len(ctl.documents) - sent} sent",
    )


def live_scenario(win: Any, run: Run, src: Any) -> Iterator[Wait | None]:
    """Live on, two bursts of changes (the second once a live job started), one picture; Live off; Apply."""
    image, ctl = win.image, win.controller
    tracker = ctl.client.tracker
    image.set_selected_layers([src])
    win.prompt.get_buffer().set_text("live")
    win.strength.set_value(0.6)
    win.seed.set_value(21)
    layers_before = names(image)
    run.check("live: Apply is disabled while there is no live picture", not win.apply_button.get_sensitive())
    win.live_button.clicked()  # Live on: the layer as it is counts as the first change
    live = win.live
    painting = live.painting if live is not None else None
    run.check(
        "live: the Live toggle starts live painting",
        painting is not None and painting.on and win.live_button.get_active(),
        win.message.get_text(),
    )
    assert live is not None and painting is not None
    # The moment the first live job starts, the painter paints again: that job's picture is outdated.
    started: list[str] = []
    handle = painting.handle

    def on_event(event: Any, job: Any) -> None:
        if isinstance(event, Started) and not started:
            started.append(job.id)
            fill(src, 40, 96, (255, 255, 0, 255))
        handle(event, job)

    painting.handle = on_event  # type: ignore[method-assign]
    for i in range(6):  # a burst faster than the debounce: one change per turn of the 50 ms scenario timer
        fill(src, 8 + 12 * i, 8, ((40 * i) % 256, 200, 255 - 30 * i, 255))
        yield None
    yield Wait(lambda: bool(started), 60, "the first live job to start")
    for i in range(3):  # more changes while that job runs, again faster than the debounce
        fill(src, 20 + 16 * i, 64, (250, 30 * i, 60, 255))
        yield None

    def settled() -> bool:
        picture = painting.picture
        busy = [j for j in ctl.active_jobs() if j.submit.live]
        return (
            picture is not None and picture.job_id == painting.latest and not busy and painting.debounce.due_at is None
        )

    yield Wait(settled, 60, "the live picture of the last change")
    painting.handle = handle  # type: ignore[method-assign]
    picture = painting.picture
    assert picture is not None
    counts = painting.counts
    run.check(
        "live: two bursts of changes ran exactly one live job to the end; the job that started early was stopped",
        counts.finished == 1 and started[0] != picture.job_id and counts.stopped >= 1 and counts.submitted >= 2,
        counts,
    )
    preview = image.get_layer_by_name(PREVIEW_LAYER)
    shown = to_rgba8(picture.image).data
    run.check(
        "live: the picture is shown in the locked preview layer, pixel for pixel",
        preview is not None and preview.get_lock_content() and pixels(preview) == shown,
    )
    run.check(
        "live: nothing became a layer before Apply",
        [n for n in names(image) if n != PREVIEW_LAYER] == layers_before,
        names(image),
    )
    run.check(
        "live: the slowest tick of the poll held GIMP's main loop under 50 ms",
        live.slowest_tick_s < 0.050,
        f"slowest live tick {live.slowest_tick_s * 1000:.1f} ms",
    )
    print(f"sfumato-selftest: slowest live tick {live.slowest_tick_s * 1000:.1f} ms", file=sys.stderr, flush=True)
    run.check("live: Apply is enabled once a live picture exists", win.apply_button.get_sensitive())

    submitted, sent_before_apply = counts.submitted, len(ctl.documents)  # filled at once here for anything sent
    win.live_button.clicked()  # Live off: the poll ends, the picture stays for Apply
    yield None
    run.check(
        "live: the Live toggle stops live painting; the picture stays in the preview layer",
        not painting.on
        and not live.tick()
        and painting.next_tick_in(time.monotonic()) is None
        and image.get_layer_by_name(PREVIEW_LAYER) is not None
        and win.apply_button.get_sensitive(),
    )
    win.apply_button.clicked()
    applied = image.get_layer_by_name("live [seed 21]")
    at = layers_before.index("Paint")
    run.check(
        "live: Apply adds exactly one layer, named like every result, right above the painter's layer",
        applied is not None and names(image) == [*layers_before[:at], "live [seed 21]", *layers_before[at:]],
        names(image),
    )
    run.check(
        "live: the applied layer holds the live picture's pixels", applied is not None and pixels(applied) == shown
    )
    run.check(
        "live: Apply generated nothing and cleared the preview; Apply is disabled again",
        counts.submitted == submitted
        and len(ctl.documents) == sent_before_apply
        and image.get_layer_by_name(PREVIEW_LAYER) is None
        and not win.apply_button.get_sensitive(),
        f"{counts}, {len(ctl.documents) - sent_before_apply} new jobs",
    )
    assert applied is not None
    applied.set_name("live applied")

    # The live picture reflects the last change: an ordinary Generate of the canvas as it is now, with the
    # fast settings and the same seed, paints the same pixels from the same request.
    win.steps.set_value(PLAIN.steps)
    win.guidance.set_value(PLAIN.guidance)
    win.sampler.set_active_id(PLAIN.scheduler)
    image.set_selected_layers([src])
    win.generate_button.clicked()
    yield Wait(lambda: image.get_layer_by_name("live [seed 21]") is not None, 90, "the ordinary Generate")
    reference = image.get_layer_by_name("live [seed 21]")
    generated = [j.submit for j in list(tracker.jobs.values()) if not j.submit.live][-1]  # (the network thread adds)
    sent = tracker.jobs[picture.job_id].submit  # what the live picture's job sent
    differ = [
        f.name
        for f in dataclasses.fields(generated)
        if f.name not in ("job_id", "live", "preview") and getattr(generated, f.name) != getattr(sent, f.name)
    ]
    run.check(
        "live: the live picture is the last change's (the same request and pixels as a Generate of the final canvas)",
        not differ and pixels(reference) == shown,
        f"requests differ in {differ}",
    )
    image.remove_layer(reference)
    image.remove_layer(image.get_layer_by_name("live applied"))
    win.guidance.set_value(7.0)
    win.sampler.set_active_id("euler_a")


def fingerprint_cost(run: Run) -> Iterator[Wait | None]:
    """What one tick of the live poll costs on a 4096² layer: its fingerprint, unchanged and after a change."""
    side = 4096
    big = Gimp.Image.new(side, side, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(big, "Big", side, side, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    big.insert_layer(layer, None, 0)
    row = bytes(v for x in range(side) for v in ((x * 7) % 256, (x * 3) % 256, 128, 255))
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, side, side), "R'G'B'A u8", row * side)
    buffer.flush()
    layer.update(0, 0, side, side)
    yield None
    times: dict[str, list[float]] = {"unchanged": [], "changed": []}
    noticed = []
    for i in range(5):
        t = time.monotonic()
        unchanged = fingerprint(layer)
        times["unchanged"].append(time.monotonic() - t)
        fill(layer, 2000 + 16 * i, 2000, (i * 40, 0, 255, 255))
        yield None
        t = time.monotonic()
        after = fingerprint(layer)
        times["changed"].append(time.monotonic() - t)
        noticed.append(after != unchanged)
    big.delete()
    cost = ", ".join(f"{kind} {max(s) * 1000:.1f} ms (median {sorted(s)[2] * 1000:.1f})" for kind, s in times.items())
    run.check("live: a 16 px change on a 4096² layer changes its fingerprint", all(noticed), f"{noticed}; {cost}")
    print(f"sfumato-selftest: the fingerprint of a 4096² layer: {cost}", file=sys.stderr, flush=True)
