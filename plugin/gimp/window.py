"""The Sfumato window: a non-modal GTK 3 window beside the canvas, bound to the image it was opened from.

No selection → the selected layer is restyled; a selection → it is repainted (inpainting), soft
selections included — the same rule as Krita's docker, decided by plugin.core. The window lives as
long as its plug-in process: the network runs on its own thread, events arrive through GLib's main
loop, and GIMP's UI never waits on either. Closing the window cancels what is still running.

*Live* (a toggle) repaints the selected layer as the painter paints (plugin/gimp/live.py drives
plugin.core's LivePainting); the newest live picture shows in the preview layer and becomes a layer
only through *Apply*. Live stops by itself, and the toggle goes off, when the image closes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GLib, Gtk  # noqa: E402

from sfumato.plugin.core.client import ConnectionChanged  # noqa: E402
from sfumato.plugin.core.controller import Controller  # noqa: E402
from sfumato.plugin.core.expand import SIDES, Margins  # noqa: E402
from sfumato.plugin.core.jobs import TrackedJob  # noqa: E402
from sfumato.plugin.core.models import (  # noqa: E402
    OWN_VAE,
    checkpoints,
    describe,
    ipadapters_for,
    loras_for,
    upscalers,
    vaes,
)
from sfumato.plugin.core.requests import GenerationParams, unique_loras  # noqa: E402
from sfumato.plugin.core.status import connection_line, message_line, progress_of, queue_line  # noqa: E402
from sfumato.protocol import (  # noqa: E402
    MAX_STEPS,
    SCHEDULERS,
    UPSCALE_STRENGTH,
    ModelInfo,
    PreviewSettings,
    Submit,
)

from . import glib  # noqa: E402
from .bridge import Bridge  # noqa: E402
from .controls import ControlRow, LoraRow, ReferenceRow, spin  # noqa: E402
from .document import GimpDocument  # noqa: E402
from .formats import UnsupportedImage  # noqa: E402
from .live import GimpLive  # noqa: E402
from .params import MAX_BATCH, MAX_SEED  # noqa: E402
from .settings import Settings  # noqa: E402

log = logging.getLogger(__name__)
TEST_HOOK_ENV = "SFUMATO_GIMP_TEST_HOOK"  # a Python file whose start(window) drives the window (tests/gimp)

T = TypeVar("T")

LANCZOS = ""  # the upscaler list's first entry: no model, Lanczos resampling
OWN = ""  # the VAE list's first entry: the checkpoint's own VAE


@dataclass
class Section:
    """A titled part of the window that folds away."""

    expander: Any
    grid: Any

    def set_expanded(self, expanded: bool) -> None:
        self.expander.set_expanded(expanded)


def _section(parent: Any, title: str, expanded: bool = False) -> Section:
    grid = Gtk.Grid(row_spacing=6, column_spacing=8, margin_start=12, margin_top=4)
    expander = Gtk.Expander(label=title, expanded=expanded)
    expander.add(grid)
    parent.attach_next_to(expander, None, Gtk.PositionType.BOTTOM, 2, 1)
    return Section(expander, grid)


def _attach_rows(grid: Any, rows: list[tuple[str, Any]]) -> None:
    """Label and widget side by side, or the widget across both columns when it has no label."""
    for label, widget in rows:
        if label:
            caption = Gtk.Label(label=label, xalign=1)
            grid.attach_next_to(caption, None, Gtk.PositionType.BOTTOM, 1, 1)
            grid.attach_next_to(widget, caption, Gtk.PositionType.RIGHT, 1, 1)
        else:
            grid.attach_next_to(widget, None, Gtk.PositionType.BOTTOM, 2, 1)


def _refill(combo: Any, first_id: str, first_text: str, models: list[ModelInfo]) -> None:
    """A catalogue picker: its "none" entry, then the models, keeping the choice when it is still there."""
    chosen = combo.get_active_id()
    combo.remove_all()
    combo.append(first_id, first_text)
    for m in models:
        combo.append(m.id, m.label or m.id)
    if not combo.set_active_id(chosen or first_id):
        combo.set_active_id(first_id)


class SfumatoWindow:
    def __init__(self, image: Any) -> None:
        self.image = image
        self.folder = Path(Gimp.directory())
        self.settings = Settings.load(self.folder)
        self.bridge = Bridge(glib.post)
        self.controller: Controller | None = None
        self.live: GimpLive | None = None  # while the Live toggle is on (and its picture until Apply)
        self._live_syncing = False  # the toggle set from code (refused, stopped by itself): not the painter
        self.last_error = ""
        self.closed = False
        s = self.settings

        self.window = Gtk.Window(title=f"Sfumato — {image.get_name()}")
        self.window.set_default_size(360, -1)
        self.window.connect("destroy", self._closed)
        grid = Gtk.Grid(row_spacing=6, column_spacing=8, margin=10)
        self.window.add(grid)

        self.status = Gtk.Label(label="Connecting…", xalign=0, wrap=True)
        self.server = Gtk.Entry(text=s.server_url, hexpand=True)
        self.token = Gtk.Entry(text=s.token, visibility=False)
        self.connect_button = Gtk.Button(label="Connect")
        self.connect_button.connect("clicked", lambda _b: self.reconnect())
        self.model = Gtk.ComboBoxText()
        self.model.connect("changed", lambda _c: self._offer_loras())
        self.model.connect("changed", lambda _c: self._offer_adapters())
        self.prompt = Gtk.TextView(wrap_mode=Gtk.WrapMode.WORD_CHAR)
        prompt_box = Gtk.ScrolledWindow(min_content_height=60)
        prompt_box.add(self.prompt)
        self.negative = Gtk.Entry(text=s.negative_prompt, placeholder_text="What to avoid")
        self.strength = Gtk.Scale.new_with_range(Gtk.Orientation.HORIZONTAL, 0.0, 1.0, 0.01)
        self.strength.set_value(s.strength)
        self.strength.set_digits(2)
        self.steps = spin(1, MAX_STEPS, 1, s.steps, 0)
        self.guidance = spin(0, 30, 0.5, s.guidance, 1)
        self.sampler = Gtk.ComboBoxText()
        for name in SCHEDULERS:
            self.sampler.append(name, name)
        self.sampler.set_active_id(s.scheduler if s.scheduler in SCHEDULERS else SCHEDULERS[0])
        self.seed = spin(0, MAX_SEED, 1, 0, 0)
        self.random_seed = Gtk.CheckButton(label="random", active=True)
        self.batch = spin(1, MAX_BATCH, 1, s.batch_size, 0)
        self.generate_button = Gtk.Button(label="Generate")
        self.generate_button.connect("clicked", lambda _b: self.generate())
        self.cancel_button = Gtk.Button(label="Cancel")
        self.cancel_button.connect("clicked", lambda _b: self.cancel())
        self.live_button = Gtk.ToggleButton(label="Live")
        self.live_button.set_tooltip_text(
            "Repaint live: every change of the selected layer paints a new picture in the preview layer (fast settings)"
        )
        self.live_button.connect("toggled", lambda _b: self._live_toggled())
        self.apply_button = Gtk.Button(label="Apply")
        self.apply_button.set_tooltip_text("Turn the live picture into a layer")
        self.apply_button.connect("clicked", lambda _b: self.apply_live())
        self.progress = Gtk.ProgressBar(show_text=True)
        self.queue = Gtk.Label(label="", xalign=0)
        self.message = Gtk.Label(label="", xalign=0, wrap=True, selectable=True)
        self.message.get_style_context().add_class("error")
        self.mode = Gtk.Label(label="", xalign=0, wrap=True)

        seed_row = Gtk.Box(spacing=6)
        seed_row.pack_start(self.seed, True, True, 0)
        seed_row.pack_start(self.random_seed, False, False, 0)
        buttons = Gtk.Box(spacing=6, homogeneous=True)
        buttons.pack_start(self.generate_button, True, True, 0)
        buttons.pack_start(self.cancel_button, True, True, 0)
        live_row = Gtk.Box(spacing=6, homogeneous=True)
        live_row.pack_start(self.live_button, True, True, 0)
        live_row.pack_start(self.apply_button, True, True, 0)
        # What a painter touches on every picture first; the rest folds away (as in the Krita docker).
        _attach_rows(
            grid,
            [
                ("", self.status),
                ("Model", self.model),
                ("Prompt", prompt_box),
                ("Negative", self.negative),
                ("Strength", self.strength),
                ("", self.mode),
                ("", buttons),
                ("", live_row),
                ("", self.progress),
                ("", self.queue),
                ("", self.message),
            ],
        )
        self.vae = Gtk.ComboBoxText()  # filled from the backend's catalogue; first entry: the model's own
        self.vae.append(OWN, OWN_VAE)
        self.vae.set_active_id(OWN)
        self.options = _section(grid, "Options")
        _attach_rows(
            self.options.grid,
            [
                ("Steps", self.steps),
                ("Guidance", self.guidance),
                ("Sampler", self.sampler),
                ("Seed", seed_row),
                ("Batch", self.batch),
                ("VAE", self.vae),
            ],
        )
        self.lora_section = _section(grid, "LoRA")
        self.lora_rows: list[LoraRow] = []
        self.loras_box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        self.add_lora_button = Gtk.Button(label="+ LoRA")
        self.add_lora_button.connect("clicked", lambda _b: self.add_lora())
        _attach_rows(self.lora_section.grid, [("", self.loras_box), ("", self.add_lora_button)])
        self.controlnet = _section(grid, "ControlNet")
        self.control_rows: list[ControlRow] = []
        self.controls_box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=8)
        self.add_control_button = Gtk.Button(label="+ ControlNet")
        self.add_control_button.connect("clicked", lambda _b: self.add_control())
        _attach_rows(self.controlnet.grid, [("", self.controls_box), ("", self.add_control_button)])
        self.reference_section = _section(grid, "Reference")
        self.reference_rows: list[ReferenceRow] = []
        self.references_box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=8)
        self.add_reference_button = Gtk.Button(label="+ Reference")
        self.add_reference_button.connect("clicked", lambda _b: self.add_reference())
        _attach_rows(self.reference_section.grid, [("", self.references_box), ("", self.add_reference_button)])
        self.expand_section = _section(grid, "Expand")
        self.expand_margin = spin(8, 2048, 8, 128, 0)
        self.expand_sides = {side: Gtk.CheckButton(label=side, active=side == "right") for side in SIDES}
        sides_row = Gtk.Box(spacing=6)
        for box in self.expand_sides.values():
            sides_row.pack_start(box, False, False, 0)
        self.expand_button = Gtk.Button(label="Expand")
        self.expand_button.set_tooltip_text("Grow the canvas on the chosen sides and paint the new border")
        self.expand_button.connect("clicked", lambda _b: self.expand())
        _attach_rows(
            self.expand_section.grid, [("Margin", self.expand_margin), ("", sides_row), ("", self.expand_button)]
        )
        self.upscale_section = _section(grid, "Upscale")
        self.upscale_factor = Gtk.ComboBoxText()
        for factor in ("2", "4"):
            self.upscale_factor.append(factor, f"×{factor}")
        self.upscale_factor.set_active_id("2")
        self.upscaler = Gtk.ComboBoxText()  # filled from the backend's catalogue; first entry: Lanczos
        self.upscaler.append(LANCZOS, "Lanczos (no upscaler model)")
        self.upscaler.set_active_id(LANCZOS)
        self.upscale_strength = spin(0, 1, 0.05, UPSCALE_STRENGTH)
        self.upscale_button = Gtk.Button(label="Upscale")
        self.upscale_button.set_tooltip_text("Enlarge the layer and refine it in tiles, into a new image")
        self.upscale_button.connect("clicked", lambda _b: self.upscale())
        _attach_rows(
            self.upscale_section.grid,
            [
                ("Factor", self.upscale_factor),
                ("Upscaler", self.upscaler),
                ("Refine", self.upscale_strength),
                ("", self.upscale_button),
            ],
        )
        self.connection = _section(grid, "Connection", expanded=True)
        _attach_rows(self.connection.grid, [("Server", self.server), ("Token", self.token), ("", self.connect_button)])
        self._was_connected = False
        self._lists_from: Any = None  # the welcome the upscaler and VAE lists were filled from
        self.controlnet.expander.connect("notify::expanded", lambda *_a: self._refresh_layers())
        self.reference_section.expander.connect("notify::expanded", lambda *_a: self._refresh_layers())
        self.reconnect()
        self.window.show_all()
        self.refresh()
        self.refresh_mode()
        GLib.timeout_add(500, self.refresh_mode)  # the selection changes without telling the plug-in

    # ------------------------------------------------------------------ actions (main loop)

    def reconnect(self) -> None:
        self.settings.server_url = self.server.get_text().strip()
        self.settings.token = self.token.get_text()
        self.stop_live()  # its jobs belonged to the connection being replaced
        if self.controller is not None:
            self.controller.cancel()
        client = self.bridge.start(self.settings.server_url, self.settings.token, self._on_event)
        self.controller = Controller(client, self.bridge.schedule, self.refresh, job_prefix="gimp")
        self.refresh()

    def params(self) -> GenerationParams:
        buffer = self.prompt.get_buffer()
        return GenerationParams(
            model=self.model.get_active_id() or self.settings.model,
            prompt=buffer.get_text(buffer.get_start_iter(), buffer.get_end_iter(), False),
            negative_prompt=self.negative.get_text(),
            strength=round(self.strength.get_value(), 2),
            steps=self.steps.get_value_as_int(),
            guidance=self.guidance.get_value(),
            seed=None if self.random_seed.get_active() else self.seed.get_value_as_int(),
            scheduler=self.sampler.get_active_id() or SCHEDULERS[0],
            batch_size=self.batch.get_value_as_int(),
            controls=tuple(row.spec() for row in self.control_rows),
            preview=PreviewSettings(enabled=True),
            loras=unique_loras(row.choice() for row in self.lora_rows),
            vae=self.vae.get_active_id() or None,
            references=tuple(row.spec() for row in self.reference_rows),
        )

    def generate(self) -> Submit | None:
        return self._start(lambda ctl, doc: ctl.generate(doc, self.params()))

    def expand(self) -> Submit | None:
        """Grow the canvas by the margin on the ticked sides, then fill the new border (one generation)."""
        sides = [side for side, box in self.expand_sides.items() if box.get_active()]
        margins = Margins.on(sides, self.expand_margin.get_value_as_int())
        return self._start(lambda ctl, doc: ctl.expand(doc, self.params(), margins))

    def upscale(self) -> Submit | None:
        """The selected layer enlarged ×2 or ×4 into a new image, refined in tiles."""
        factor = int(self.upscale_factor.get_active_id() or "2")
        chosen = self.upscaler.get_active_id()
        upscaler = None if chosen in (None, LANCZOS) else chosen
        strength = self.upscale_strength.get_value()
        return self._start(lambda ctl, doc: ctl.upscale(doc, self.params(), factor, upscaler, strength))

    def start_live(self) -> GimpLive | None:
        """Live on: each change of the selected layer paints a new live picture (plugin/gimp/live.py)."""

        def start(ctl: Controller, doc: GimpDocument) -> GimpLive:
            if self.live is not None:
                self.live.stop()
            self.live = GimpLive(ctl, doc, self.params, self._live_failed, glib.repeat, glib.after)
            return self.live

        return self._start(start)

    def stop_live(self) -> None:
        """Live off: no more live jobs; the last live picture stays in the preview layer for Apply."""
        if self.live is not None:
            self.live.stop()
        self.refresh_live()

    def apply_live(self) -> str | None:
        """The newest live picture becomes a real layer, without generating again; its name (None: no picture)."""
        name = self.live.apply() if self.live is not None else None
        self.refresh()
        return name

    def _live_toggled(self) -> None:
        if self._live_syncing:
            return
        if self.live_button.get_active():
            self.start_live()  # refused (not connected, no single layer): the message says why, refresh unticks
        else:
            self.stop_live()
        self.refresh()

    def _live_failed(self, message: str) -> None:
        self.last_error = message
        self.refresh()

    def _start(self, action: Callable[[Controller, GimpDocument], T]) -> T | None:
        self.last_error = ""
        started = None
        if not self.image.is_valid():
            self.last_error = "The image this window belongs to was closed; open Sfumato from another image."
        elif self.controller is None or self.controller.connection.state != "connected":
            self.last_error = "Not connected to the Sfumato backend: start it with ./install/start."
        else:
            layers = list(self.image.get_selected_layers())
            try:
                if len(layers) != 1:
                    raise UnsupportedImage("select exactly one layer")
                doc = GimpDocument(self.image, layers[0])
                doc.check()
                self._save_settings()
                started = action(self.controller, doc)
            except (UnsupportedImage, ValueError) as exc:
                self.last_error = str(exc)
            except Exception as exc:  # plain words in the window rather than a traceback
                log.exception("generate failed")
                self.last_error = f"Could not start: {exc}"
        self.refresh()
        return started

    def add_control(self) -> ControlRow:
        row = ControlRow(self.image, self._remove_control)
        self.control_rows.append(row)
        self.controls_box.pack_start(row.widget, False, False, 0)
        row.widget.show_all()
        self.controlnet.set_expanded(True)
        return row

    def add_lora(self) -> LoraRow:
        row = LoraRow(self._remove_lora)
        self.lora_rows.append(row)
        self.loras_box.pack_start(row.widget, False, False, 0)
        row.widget.show_all()
        self.lora_section.set_expanded(True)
        self._offer_loras()
        return row

    def _remove_lora(self, row: LoraRow) -> None:
        self.lora_rows.remove(row)
        self.loras_box.remove(row.widget)

    def _offer_loras(self) -> None:
        welcome = self.controller.connection.welcome if self.controller is not None else None
        loras = loras_for(welcome.models, self.model.get_active_id() or "") if welcome is not None else []
        for row in self.lora_rows:
            row.offer(loras)

    def add_reference(self) -> ReferenceRow:
        row = ReferenceRow(self.image, self._remove_reference)
        self.reference_rows.append(row)
        self.references_box.pack_start(row.widget, False, False, 0)
        row.widget.show_all()
        self.reference_section.set_expanded(True)
        self._offer_adapters()
        return row

    def _remove_reference(self, row: ReferenceRow) -> None:
        self.reference_rows.remove(row)
        self.references_box.remove(row.widget)

    def _offer_adapters(self) -> None:
        welcome = self.controller.connection.welcome if self.controller is not None else None
        adapters = ipadapters_for(welcome.models, self.model.get_active_id() or "") if welcome is not None else []
        for row in self.reference_rows:
            row.offer(adapters)

    def _remove_control(self, row: ControlRow) -> None:
        self.control_rows.remove(row)
        self.controls_box.remove(row.widget)

    def _refresh_layers(self) -> None:
        for row in self.control_rows:
            row.refresh_layers()
        for ref in self.reference_rows:
            ref.refresh_layers()

    def cancel(self) -> list[str]:
        return self.controller.cancel() if self.controller is not None else []

    def _on_event(self, event: Any, job: TrackedJob | None) -> None:
        if self.controller is not None:
            self.controller.handle(event, job)  # calls refresh through on_change

    def _save_settings(self) -> None:
        s = self.settings
        s.strength, s.steps = round(self.strength.get_value(), 2), self.steps.get_value_as_int()
        s.guidance = self.guidance.get_value()
        s.scheduler = self.sampler.get_active_id() or s.scheduler
        s.batch_size, s.negative_prompt = self.batch.get_value_as_int(), self.negative.get_text()
        s.model = self.model.get_active_id() or s.model
        try:
            s.save(self.folder)
        except OSError as exc:
            log.warning("could not save the settings: %s", exc)

    def _closed(self, _window: Any) -> None:
        self.closed = True
        if self.live is not None:
            self.live.stop()
        self.cancel()
        self.bridge.stop()
        Gtk.main_quit()

    # ------------------------------------------------------------------ view

    def refresh_mode(self) -> bool:
        """The line saying what the next Generate does; a GLib timer calls it until the window closes."""
        if self.closed:
            return False
        if not self.image.is_valid():
            text = "The image this window belongs to was closed."
        elif Gimp.Selection.is_empty(self.image):
            text = "Generate restyles the selected layer."
        else:
            text = "Generate repaints the selection (inpaint)."
        if self.mode.get_text() != text:
            self.mode.set_text(text)
        return True

    def refresh(self) -> None:
        controller = self.controller
        conn = controller.connection if controller is not None else ConnectionChanged("disconnected")
        welcome = conn.welcome
        self.status.set_text(connection_line(conn))
        connected = conn.state == "connected"
        if connected != self._was_connected:  # fold the connection settings once connected, unfold on trouble
            self.connection.set_expanded(not connected)
            self._was_connected = connected
        if welcome is not None:
            self.batch.get_adjustment().set_upper(welcome.limits.max_batch)
            if not self.model.get_active_id():
                listed = checkpoints(welcome.models)
                for m in listed:
                    if not m.problem:
                        self.model.append(m.id, describe(m))
                unusable = [describe(m) for m in listed if m.problem]  # shown with the reason, never chosen
                self.model.set_tooltip_text("\n".join(["Not usable:", *unusable]) if unusable else None)
                if not self.model.set_active_id(self.settings.model):
                    self.model.set_active(0)
        if welcome is not None and welcome is not self._lists_from:  # once per welcome, not per refresh
            self._lists_from = welcome
            _refill(self.upscaler, LANCZOS, "Lanczos (no upscaler model)", upscalers(welcome.models))
            _refill(self.vae, OWN, OWN_VAE, vaes(welcome.models))
        jobs = controller.active_jobs() if controller is not None else []
        step, total, words = progress_of(jobs)
        self.progress.set_fraction(step / total)
        self.progress.set_text(words)
        self.queue.set_text(queue_line(jobs))
        self.cancel_button.set_sensitive(bool(jobs))
        self.generate_button.set_sensitive(self.image.is_valid())
        self.refresh_live()
        self.message.set_text(message_line(self.last_error, controller.messages if controller is not None else []))

    def refresh_live(self) -> None:
        """The Live toggle follows live painting (off once it stopped by itself); Apply needs a live picture."""
        live = self.live
        on = live is not None and live.painting.on
        if self.live_button.get_active() != on:
            self._live_syncing = True
            try:
                self.live_button.set_active(on)
            finally:
                self._live_syncing = False
        picture = live is not None and live.painting.picture is not None
        self.apply_button.set_sensitive(picture and self.image.is_valid())


def run_window(image: Any) -> None:
    """Open the window and run GTK's main loop until it is closed (the plug-in process lives that long)."""
    GimpUi.init("sfumato")
    window = SfumatoWindow(image)
    hook = os.environ.get(TEST_HOOK_ENV)
    if hook:  # the in-GIMP test, which is not shipped: loaded from where the test put it
        spec = importlib.util.spec_from_file_location("sfumato_gimp_test_hook", hook)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        GLib.idle_add(module.start, window)
    Gtk.main()
