"""The in-GIMP window test: loaded into the Sfumato window's plug-in process through SFUMATO_GIMP_TEST_HOOK.

Test-only, never shipped (test_gimp_e2e.py copies it next to the throwaway profile). It drives the
window through its own widgets — the Connect, Generate and Cancel buttons — against a
real backend, checks the image, writes a JSON result file (judged by the test, never GIMP's exit
code), saves a screenshot and closes the window. Steps run as a generator polled by a GLib timer,
so GIMP and the network keep running while the test waits.
"""

from __future__ import annotations

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

from sfumato.plugin.gimp.document import PREVIEW_LAYER  # noqa: E402

OUT = os.environ.get("SFUMATO_GIMP_TEST_WINDOW", "")
SERVER = os.environ.get("SFUMATO_GIMP_TEST_SERVER", "")
SCREENSHOT = os.environ.get("SFUMATO_GIMP_SCREENSHOT", "")
TIMEOUT_S = 150


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


def changed(before: bytes, after: bytes, coverage: bytes, value: int) -> int:
    """How many pixels whose selection coverage is ``value`` differ between two RGBA8 composites."""
    return sum(
        1 for i, c in enumerate(coverage) if c == value and after[4 * i : 4 * i + 4] != before[4 * i : 4 * i + 4]
    )


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
    seen = {"preview": False, "locked": True, "progress": 0.0}

    def landed(name: str) -> Callable[[], bool]:
        def cond() -> bool:
            preview = image.get_layer_by_name(PREVIEW_LAYER)
            if preview is not None:
                seen["preview"] = True
                seen["locked"] = bool(seen["locked"]) and preview.get_lock_content()
            seen["progress"] = max(float(seen["progress"]), win.progress.get_fraction())
            return image.get_layer_by_name(name) is not None

        return cond

    win.generate_button.clicked()
    run.check("generate: no error shown", win.message.get_text() == "", win.message.get_text())
    yield Wait(landed("a test [seed 7]"), 90, "the restyle result")
    result = image.get_layer_by_name("a test [seed 7]")
    order = names(image)
    run.check(
        "restyle: result layer right above the source",
        order.index(result.get_name()) == order.index("Paint") - 1,
        order,
    )
    run.check("restyle: previews shown in one locked layer", seen["preview"] and seen["locked"], seen)
    run.check("restyle: the progress bar moved", seen["progress"] > 0, seen)
    run.check("restyle: preview layer removed", image.get_layer_by_name(PREVIEW_LAYER) is None, names(image))
    run.check("restyle: source layer untouched", pixels(src) == source_before)
    run.check("restyle: the result differs from the source", pixels(result) != source_before)
    run.check(
        "restyle: the painter's layer stays selected", [x.get_name() for x in image.get_selected_layers()] == ["Paint"]
    )
    if SCREENSHOT:
        win.window.move(880, 0)  # no window manager under Xvfb: keep clear of GIMP's own window
        yield None
        yield Wait(lambda: True, 1, "")
        run.check("screenshot saved", screenshot(SCREENSHOT), SCREENSHOT)

    # (b) repaint a soft selection on the restyled layer
    image.set_selected_layers([result])
    image.select_ellipse(Gimp.ChannelOps.REPLACE, size // 4, size // 4, size // 2, size // 2)
    Gimp.Selection.feather(image, 10.0)
    coverage = pixels(image.get_selection(), None, "Y u8")
    before = projection(image)
    win.prompt.get_buffer().set_text("a fox")
    win.strength.set_value(1.0)
    win.seed.set_value(9)
    win.generate_button.clicked()
    yield Wait(landed("a fox [seed 9]"), 90, "the inpaint result")
    after = projection(image)
    outside = sum(1 for i, c in enumerate(coverage) if c == 0 and after[4 * i : 4 * i + 4] != before[4 * i : 4 * i + 4])
    inside = sum(
        1 for i, c in enumerate(coverage) if c == 255 and after[4 * i : 4 * i + 4] != before[4 * i : 4 * i + 4]
    )
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

    # (d) what cannot be done is said in plain words, nothing is sent
    image.set_selected_layers([src, result])
    sent = len(ctl.client.tracker.jobs)
    win.generate_button.clicked()
    run.check(
        "two layers selected: refused in plain words, nothing sent",
        "select exactly one layer" in win.message.get_text() and len(ctl.client.tracker.jobs) == sent,
        f"{win.message.get_text()!r} {len(ctl.client.tracker.jobs) - sent} sent",
    )
