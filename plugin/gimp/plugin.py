"""Registration with GIMP: the PDB procedures (restyle, inpaint) and the Sfumato window.

``python-fu-sfumato-restyle`` and ``python-fu-sfumato-inpaint`` are ordinary PDB procedures: from a
script or ``gimp-console -b`` they connect, generate, insert the result layers and return; from the
menu (Filters ▸ Sfumato) GIMP first shows a dialog built from the same arguments.
``python-fu-sfumato`` opens the non-modal window (interactive only).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject  # noqa: E402

from sfumato.plugin.core.jobs import TrackedJob  # noqa: E402
from sfumato.plugin.core.status import progress_of  # noqa: E402
from sfumato.protocol import JobState  # noqa: E402

from .formats import UnsupportedImage  # noqa: E402
from .params import INPAINT, PROCEDURES, WINDOW_PROCEDURE, Arg, BadArguments, arguments, request_from  # noqa: E402

log = logging.getLogger(__name__)

RW = GObject.ParamFlags.READWRITE
MENU = "<Image>/Filters/Sfumato"
LABELS = {
    "restyle": ("Restyle Layer…", "Restyle the layer with a diffusion model (img2img) on a Sfumato backend"),
    "inpaint": ("Repaint Selection…", "Repaint the selection with a diffusion model (inpainting) on a Sfumato backend"),
}
HELP = (
    "Sends the layer (or, for inpainting, only the part around the selection; soft selections are "
    "honoured) to the Sfumato backend, waits for the result and inserts each image as a new layer "
    "above the layer, named 'prompt [seed N]', one undo step each. The layer itself is never changed. "
    "Returns the number of layers added and the seed of the first."
)


def _add_argument(proc: Any, arg: Arg) -> None:
    if arg.kind == "string":
        proc.add_string_argument(arg.name, arg.nick, arg.blurb, arg.default, RW)
    elif arg.kind == "int":
        proc.add_int_argument(arg.name, arg.nick, arg.blurb, int(arg.lo), int(arg.hi), arg.default, RW)
    else:
        proc.add_double_argument(arg.name, arg.nick, arg.blurb, float(arg.lo), float(arg.hi), arg.default, RW)


def _failure(proc: Any, message: str, status: Any = None) -> Any:
    if status is None:
        status = Gimp.PDBStatusType.EXECUTION_ERROR
    return proc.new_return_values(status, GLib.Error(f"Sfumato: {message}"))


class SfumatoPlugIn(Gimp.PlugIn):
    def do_query_procedures(self) -> list[str]:
        return [*PROCEDURES, WINDOW_PROCEDURE]

    def do_set_i18n(self, name: str) -> bool:
        return False  # no translations yet; spares a warning per run

    def do_create_procedure(self, name: str) -> Any:
        if name == WINDOW_PROCEDURE:
            proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self._run_window, None)
            proc.set_image_types("RGB*, GRAY*")
            proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
            proc.set_menu_label("Sfumato…")
            proc.add_menu_path(MENU)
            proc.set_documentation(
                "The Sfumato window: restyle the layer or repaint the selection",
                "A window that stays open beside the canvas: connection, model, prompt, strength, Generate "
                "and Cancel, progress and the queue. Interactive only; scripts use the restyle/inpaint procedures.",
                name,
            )
            proc.set_attribution("Sfumato contributors", "Sfumato contributors", "2026")
            return proc
        task = PROCEDURES[name]
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self._run_task, task)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        label, blurb = LABELS[task]
        proc.set_menu_label(label)
        proc.add_menu_path(MENU)
        proc.set_documentation(blurb, HELP, name)
        proc.set_attribution("Sfumato contributors", "Sfumato contributors", "2026")
        for arg in arguments(task):
            _add_argument(proc, arg)
        proc.add_int_return_value("n-layers", "Layers", "number of result layers added", 0, 64, 0, RW)
        proc.add_int_return_value("seed", "Seed", "seed of the first result (image i: seed + i)", -1, 2**31 - 1, -1, RW)
        return proc

    # ------------------------------------------------------------------ runs

    def _run_task(self, proc: Any, run_mode: Any, image: Any, drawables: Any, config: Any, task: str) -> Any:
        from .document import GimpDocument
        from .glib import GLibLoop
        from .job import generate_and_wait

        if len(drawables) != 1:
            return _failure(proc, "select exactly one layer", Gimp.PDBStatusType.CALLING_ERROR)
        if run_mode == Gimp.RunMode.INTERACTIVE and not _dialog(proc, config, LABELS[task][0]):
            return proc.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        values = {a.name: config.get_property(a.name) for a in arguments(task)}
        try:
            request = request_from(task, values)
            doc = GimpDocument(image, drawables[0], use_selection=task == INPAINT)
            p = request.params
            named = tuple(r.layer for r in p.references if r.layer) + tuple(c.layer for c in p.controls if c.layer)
            doc.check(need_selection=task == INPAINT, layers=named)
        except (BadArguments, UnsupportedImage) as exc:
            return _failure(proc, str(exc), Gimp.PDBStatusType.CALLING_ERROR)
        Gimp.progress_init(f"Sfumato: {LABELS[task][0].rstrip('…').lower()}")
        outcome = generate_and_wait(doc, request, GLibLoop(), on_progress=_progress)
        if not outcome.ok:
            return _failure(proc, outcome.message)
        values = proc.new_return_values(Gimp.PDBStatusType.SUCCESS, None)
        _set_return(values, 1, GObject.TYPE_INT, len(outcome.layers))
        _set_return(values, 2, GObject.TYPE_INT, outcome.seeds[0] if outcome.seeds else -1)
        return values

    def _run_window(self, proc: Any, run_mode: Any, image: Any, drawables: Any, config: Any, data: Any) -> Any:
        if run_mode != Gimp.RunMode.INTERACTIVE:
            return _failure(
                proc,
                "the window is interactive; scripts call python-fu-sfumato-restyle or python-fu-sfumato-inpaint",
                Gimp.PDBStatusType.CALLING_ERROR,
            )
        from .window import run_window

        run_window(image)
        return proc.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


def _progress(job: TrackedJob) -> None:
    if job.state == JobState.QUEUED and job.position is not None:
        Gimp.progress_set_text(f"Sfumato: waiting, {job.position + 1} in the queue")
    elif job.state == JobState.RUNNING:
        step, total, words = progress_of([job])
        Gimp.progress_set_text(f"Sfumato: {words}")
        Gimp.progress_update(step / total)


def _set_return(values: Any, index: int, gtype: Any, value: Any) -> None:
    values.remove(index)
    values.insert(index, GObject.Value(gtype, value))


def _dialog(proc: Any, config: Any, title: str) -> bool:
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    from .window import TEST_HOOK_ENV

    GimpUi.init("sfumato")
    dialog = GimpUi.ProcedureDialog.new(proc, config, f"Sfumato: {title.rstrip('…')}")
    dialog.fill(None)
    if os.environ.get(TEST_HOOK_ENV):  # the in-GIMP test presses OK, as a painter would
        GLib.timeout_add(300, lambda: dialog.response(Gtk.ResponseType.OK))
    ok = bool(dialog.run())
    dialog.destroy()
    return ok


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[sfumato] %(message)s")
    Gimp.main(SfumatoPlugIn.__gtype__, sys.argv)
