"""The Sfumato docker: connection, model, prompt, strength and friends, ControlNet controls, Generate/Cancel."""

from __future__ import annotations

from typing import Any

from krita import DockWidget

from sfumato.plugin.core.expand import SIDES, Margins
from sfumato.plugin.core.models import (
    DEFAULT_LORA_WEIGHT,
    LORA_WEIGHT_RANGE,
    OWN_VAE,
    checkpoints,
    describe,
    ipadapters_for,
    loras_for,
    upscalers,
    vaes,
)
from sfumato.plugin.core.requests import ControlSpec, GenerationParams, unique_loras
from sfumato.plugin.core.status import connection_line, message_line, progress_of, queue_line
from sfumato.protocol import (
    CONTROL_TYPES,
    MAX_CONTROL_STRENGTH,
    MAX_STEPS,
    SCHEDULERS,
    UPSCALE_STRENGTH,
    LoraWeight,
    ModelInfo,
    PreviewSettings,
)

from .app import SfumatoApp
from .document import active_document
from .pickers import refill_layers
from .qt import QtCore, QtWidgets
from .reference_row import ReferenceRow


class ControlRow(QtWidgets.QWidget):
    """One ControlNet control: type, source layer, strength, start/end, whether the layer already is a map."""

    def __init__(self, on_remove: Any) -> None:
        super().__init__()
        lay = QtWidgets.QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.type = QtWidgets.QComboBox()
        self.type.addItems(list(CONTROL_TYPES))
        self.layer = QtWidgets.QComboBox()
        self.layer.setEditable(True)
        self.layer.setToolTip("Source layer (empty: the active layer)")
        self.strength = _dspin(0, MAX_CONTROL_STRENGTH, 0.05, 1.0)
        self.start, self.end = _dspin(0, 1, 0.05, 0.0), _dspin(0, 1, 0.05, 1.0)
        self.is_map = QtWidgets.QCheckBox("layer is a map")
        remove = QtWidgets.QToolButton()
        remove.setText("✕")
        remove.clicked.connect(lambda: on_remove(self))
        lay.addWidget(self.type, 0, 0)
        lay.addWidget(self.layer, 0, 1, 1, 2)
        lay.addWidget(remove, 0, 3)
        lay.addWidget(self.strength, 1, 0)
        lay.addWidget(self.start, 1, 1)
        lay.addWidget(self.end, 1, 2)
        lay.addWidget(self.is_map, 2, 0, 1, 3)
        self.refresh_layers()

    def refresh_layers(self) -> None:
        refill_layers(self.layer)

    def spec(self) -> ControlSpec:
        return ControlSpec(
            type=self.type.currentText(),
            layer=self.layer.currentText() or None,
            strength=self.strength.value(),
            start=self.start.value(),
            end=self.end.value(),
            preprocess=not self.is_map.isChecked(),
        )


def _refill(combo: Any, models: list[ModelInfo]) -> None:
    """A catalogue picker's entries after its first (which means "none"), keeping the choice when it is still there."""
    chosen = combo.currentData()
    while combo.count() > 1:
        combo.removeItem(1)
    for m in models:
        combo.addItem(m.label or m.id, m.id)
    combo.setCurrentIndex(max(0, combo.findData(chosen)))


class LoraRow(QtWidgets.QWidget):
    """One LoRA of the next jobs: which (those fitting the chosen model) and its weight."""

    def __init__(self, on_remove: Any) -> None:
        super().__init__()
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.lora = QtWidgets.QComboBox()
        self.weight = _dspin(*LORA_WEIGHT_RANGE, step=0.05, value=DEFAULT_LORA_WEIGHT)
        remove = QtWidgets.QToolButton()
        remove.setText("✕")
        remove.clicked.connect(lambda: on_remove(self))
        lay.addWidget(self.lora, 1)
        lay.addWidget(self.weight)
        lay.addWidget(remove)

    def offer(self, loras: list[ModelInfo]) -> None:
        current = self.lora.currentData()
        self.lora.clear()
        for m in loras:
            self.lora.addItem(describe(m), m.id)
        index = self.lora.findData(current)
        self.lora.setCurrentIndex(max(0, index))

    def choice(self) -> LoraWeight | None:
        lora_id = self.lora.currentData()
        return LoraWeight(id=lora_id, weight=self.weight.value()) if lora_id else None


class Section:
    """A titled part of the docker that folds away: a toggle button above a form."""

    def __init__(self, title: str, parent: Any, expanded: bool = False) -> None:
        self.button = QtWidgets.QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.body = QtWidgets.QWidget()
        self.form = QtWidgets.QFormLayout(self.body)
        self.form.setContentsMargins(8, 0, 0, 0)
        self.button.toggled.connect(self.set_expanded)
        parent.addRow(self.button)
        parent.addRow(self.body)
        self.set_expanded(expanded)

    def set_expanded(self, expanded: bool) -> None:
        self.button.setChecked(expanded)
        self.button.setArrowType(QtCore.Qt.ArrowType.DownArrow if expanded else QtCore.Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)


def _dspin(lo: float, hi: float, step: float, value: float) -> Any:
    w = QtWidgets.QDoubleSpinBox()
    w.setRange(lo, hi)
    w.setSingleStep(step)
    w.setValue(value)
    return w


class SfumatoDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Sfumato")
        self.setObjectName("sfumato_docker")
        self.app = SfumatoApp.get()
        s = self.app.settings
        root = QtWidgets.QWidget()
        form = QtWidgets.QFormLayout(root)

        self.status = QtWidgets.QLabel("connecting…")
        self.status.setWordWrap(True)
        self.server = QtWidgets.QLineEdit(s.server_url)
        self.token = QtWidgets.QLineEdit(s.token)
        self.token.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.reconnect = QtWidgets.QPushButton("Connect")
        self.reconnect.clicked.connect(self._reconnect)
        self.model = QtWidgets.QComboBox()
        self.model.currentIndexChanged.connect(lambda _: self._offer_loras())
        self.model.currentIndexChanged.connect(lambda _: self._offer_adapters())
        self.prompt = QtWidgets.QPlainTextEdit()
        self.prompt.setPlaceholderText("What to paint")
        self.prompt.setMaximumHeight(70)
        self.negative = QtWidgets.QLineEdit(s.negative_prompt)
        self.negative.setPlaceholderText("What to avoid")
        self.strength = QtWidgets.QSlider()
        self.strength.setOrientation(QtCore.Qt.Orientation.Horizontal)
        self.strength.setRange(0, 100)
        self.strength.setValue(round(s.strength * 100))
        self.strength_label = QtWidgets.QLabel()
        self.strength.valueChanged.connect(self._strength_changed)
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, MAX_STEPS)
        self.steps.setValue(s.steps)
        self.guidance = _dspin(0, 30, 0.5, s.guidance)
        self.scheduler = QtWidgets.QComboBox()
        self.scheduler.addItems(list(SCHEDULERS))
        self.scheduler.setCurrentText(s.scheduler)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.random_seed = QtWidgets.QCheckBox("random")
        self.random_seed.setChecked(True)
        self.batch = QtWidgets.QSpinBox()
        self.batch.setRange(1, 8)  # until the backend says its max_batch (welcome.limits)
        self.batch.setValue(s.batch_size)
        self.vae = QtWidgets.QComboBox()  # filled from the backend's catalogue; first entry: the model's own
        self.vae.addItem(OWN_VAE, None)
        self.controls_box = QtWidgets.QVBoxLayout()
        self.loras_box = QtWidgets.QVBoxLayout()
        add_lora = QtWidgets.QPushButton("+ LoRA")
        add_lora.clicked.connect(self.add_lora)
        add_control = QtWidgets.QPushButton("+ ControlNet")
        add_control.clicked.connect(self.add_control)
        self.generate_button = QtWidgets.QPushButton("Generate")
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.live_button = QtWidgets.QPushButton("Live")
        self.live_button.setCheckable(True)
        self.live_button.setToolTip(
            "Repaint live: every change of the active layer paints a new picture in the preview layer (fast settings)"
        )
        self.live_button.toggled.connect(self.toggle_live)
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.setToolTip("Turn the live picture into a layer")
        self.apply_button.clicked.connect(self.apply_live)
        self.progress = QtWidgets.QProgressBar()
        self.queue = QtWidgets.QLabel("")
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #c0392b")

        seed_row = QtWidgets.QHBoxLayout()
        seed_row.addWidget(self.seed)
        seed_row.addWidget(self.random_seed)
        strength_row = QtWidgets.QHBoxLayout()
        strength_row.addWidget(self.strength)
        strength_row.addWidget(self.strength_label)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        live_row = QtWidgets.QHBoxLayout()
        live_row.addWidget(self.live_button)
        live_row.addWidget(self.apply_button)
        self.mode = QtWidgets.QLabel("")  # what the next Generate will do
        # What a painter touches on every picture comes first, visible without scrolling at the default
        # size; the rest folds away (connection settings fold by themselves once connected).
        form.addRow(self.status)
        form.addRow("Model", self.model)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Strength", strength_row)
        form.addRow(self.mode)
        form.addRow(buttons)
        form.addRow(live_row)
        form.addRow(self.progress)
        form.addRow(self.queue)
        form.addRow(self.message)
        self.options = Section("Options", form)
        self.options.form.addRow("Steps", self.steps)
        self.options.form.addRow("Guidance", self.guidance)
        self.options.form.addRow("Sampler", self.scheduler)
        self.options.form.addRow("Seed", seed_row)
        self.options.form.addRow("Batch", self.batch)
        self.options.form.addRow("VAE", self.vae)
        self.lora_section = Section("LoRA", form)
        self.lora_section.form.addRow(self.loras_box)
        self.lora_section.form.addRow(add_lora)
        self.controlnet = Section("ControlNet", form)
        self.controlnet.form.addRow(self.controls_box)
        self.controlnet.form.addRow(add_control)
        self.references_box = QtWidgets.QVBoxLayout()
        add_reference = QtWidgets.QPushButton("+ Reference")
        add_reference.clicked.connect(self.add_reference)
        self.reference_section = Section("Reference", form)
        self.reference_section.form.addRow(self.references_box)
        self.reference_section.form.addRow(add_reference)
        self.expand_section = Section("Expand", form)
        self.expand_margin = QtWidgets.QSpinBox()
        self.expand_margin.setRange(8, 2048)
        self.expand_margin.setValue(128)
        self.expand_margin.setSuffix(" px")
        sides = QtWidgets.QHBoxLayout()
        self.expand_sides = {side: QtWidgets.QCheckBox(side) for side in SIDES}
        self.expand_sides["right"].setChecked(True)
        for box in self.expand_sides.values():
            sides.addWidget(box)
        self.expand_button = QtWidgets.QPushButton("Expand")
        self.expand_button.setToolTip("Grow the canvas on the chosen sides and paint the new border")
        self.expand_button.clicked.connect(self.expand)
        self.expand_section.form.addRow("Margin", self.expand_margin)
        self.expand_section.form.addRow(sides)
        self.expand_section.form.addRow(self.expand_button)
        self.upscale_section = Section("Upscale", form)
        self.upscale_factor = QtWidgets.QComboBox()
        self.upscale_factor.addItem("×2", 2)
        self.upscale_factor.addItem("×4", 4)
        self.upscaler = QtWidgets.QComboBox()  # filled from the backend's catalogue; first entry: Lanczos
        self.upscaler.addItem("Lanczos (no upscaler model)", None)
        self.upscale_strength = _dspin(0, 1, 0.05, UPSCALE_STRENGTH)
        self.upscale_button = QtWidgets.QPushButton("Upscale")
        self.upscale_button.setToolTip("Enlarge the active layer and refine it in tiles, into a new document")
        self.upscale_button.clicked.connect(self.upscale)
        self.upscale_section.form.addRow("Factor", self.upscale_factor)
        self.upscale_section.form.addRow("Upscaler", self.upscaler)
        self.upscale_section.form.addRow("Refine", self.upscale_strength)
        self.upscale_section.form.addRow(self.upscale_button)
        self.connection = Section("Connection", form, expanded=True)
        self.connection.form.addRow("Server", self.server)
        self.connection.form.addRow("Token", self.token)
        self.connection.form.addRow(self.reconnect)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(root)
        self.setWidget(scroll)
        self._strength_changed(self.strength.value())
        self._was_connected = False
        self._lists_from: Any = None  # the welcome the upscaler and VAE lists were filled from
        self.app.views.append(self.refresh)
        self.refresh()
        self._mode_timer = QtCore.QTimer(self)  # the selection changes without telling us
        self._mode_timer.timeout.connect(self._refresh_mode)
        self._mode_timer.start(500)

    # ------------------------------------------------------------------ Krita hooks

    def canvasChanged(self, canvas: Any) -> None:
        for row in self.control_rows():
            row.refresh_layers()
        for ref in self.reference_rows():
            ref.refresh_layers()

    # ------------------------------------------------------------------ actions (also used by shortcuts)

    def params(self) -> GenerationParams:
        return GenerationParams(
            model=self.model.currentData() or self.model.currentText() or self.app.settings.model,
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative.text(),
            strength=self.strength.value() / 100,
            steps=self.steps.value(),
            guidance=self.guidance.value(),
            seed=None if self.random_seed.isChecked() else self.seed.value(),
            scheduler=self.scheduler.currentText(),
            batch_size=self.batch.value(),
            controls=tuple(r.spec() for r in self.control_rows()),
            loras=unique_loras(r.choice() for r in self.lora_rows()),
            vae=self.vae.currentData(),
            preview=PreviewSettings(enabled=True, max_per_second=self.app.settings.previews_per_second),
            references=tuple(r.spec() for r in self.reference_rows()),
        )

    def generate(self) -> None:
        self._save_defaults()
        self.app.generate(self.params())
        self.refresh()

    def expand(self) -> None:
        """Grow the canvas by the margin on the ticked sides, then fill the new border (one generation)."""
        sides = [side for side, box in self.expand_sides.items() if box.isChecked()]
        self._save_defaults()
        self.app.expand(self.params(), Margins.on(sides, self.expand_margin.value()))
        self.refresh()

    def upscale(self) -> None:
        """Enlarge the active layer ×2 or ×4 into a new document, refined in tiles."""
        self._save_defaults()
        factor, upscaler = self.upscale_factor.currentData(), self.upscaler.currentData()
        self.app.upscale(self.params(), int(factor), upscaler, self.upscale_strength.value())
        self.refresh()

    def cancel(self) -> None:
        self.app.cancel()

    def toggle_live(self, on: bool) -> None:
        """Live on: paint each change of the active layer (plugin/krita/live.py); off: stop, keep the picture."""
        if on:
            self._save_defaults()
            if not self.app.start_live(self.params):
                self.live_button.setChecked(False)  # refused (no document, not connected): the message says why
        else:
            self.app.stop_live()
        self.refresh()

    def apply_live(self) -> None:
        self.app.apply_live()
        self.refresh()

    def add_control(self) -> ControlRow:
        row = ControlRow(self._remove_control)
        self.controls_box.addWidget(row)
        self.controlnet.set_expanded(True)
        return row

    def add_lora(self) -> LoraRow:
        row = LoraRow(self._remove_lora)
        self.loras_box.addWidget(row)
        self.lora_section.set_expanded(True)
        self._offer_loras()
        return row

    def lora_rows(self) -> list[LoraRow]:
        items = (self.loras_box.itemAt(i).widget() for i in range(self.loras_box.count()))
        return [w for w in items if isinstance(w, LoraRow)]

    def _remove_lora(self, row: LoraRow) -> None:
        self.loras_box.removeWidget(row)
        row.deleteLater()

    def _offer_loras(self) -> None:
        welcome = self.app.connection.welcome
        loras = loras_for(welcome.models, self.model.currentData() or "") if welcome is not None else []
        for row in self.lora_rows():
            row.offer(loras)

    def add_reference(self) -> ReferenceRow:
        row = ReferenceRow(self._remove_reference)
        self.references_box.addWidget(row)
        self.reference_section.set_expanded(True)
        self._offer_adapters()
        return row

    def reference_rows(self) -> list[ReferenceRow]:
        items = (self.references_box.itemAt(i).widget() for i in range(self.references_box.count()))
        return [w for w in items if isinstance(w, ReferenceRow)]

    def _remove_reference(self, row: ReferenceRow) -> None:
        self.references_box.removeWidget(row)
        row.deleteLater()

    def _offer_adapters(self) -> None:
        welcome = self.app.connection.welcome
        adapters = ipadapters_for(welcome.models, self.model.currentData() or "") if welcome is not None else []
        for row in self.reference_rows():
            row.offer(adapters)

    def control_rows(self) -> list[ControlRow]:
        items = (self.controls_box.itemAt(i).widget() for i in range(self.controls_box.count()))
        return [w for w in items if isinstance(w, ControlRow)]

    def _remove_control(self, row: ControlRow) -> None:
        self.controls_box.removeWidget(row)
        row.deleteLater()

    def _reconnect(self) -> None:
        self.app.settings.server_url = self.server.text().strip()
        self.app.settings.token = self.token.text()
        self.app.settings.save()
        self.app.connect()
        self.refresh()

    def _strength_changed(self, value: int) -> None:
        self.strength_label.setText(f"{value / 100:.2f}")

    def _save_defaults(self) -> None:
        s = self.app.settings
        s.strength, s.steps, s.guidance = self.strength.value() / 100, self.steps.value(), self.guidance.value()
        s.scheduler, s.batch_size, s.negative_prompt = (
            self.scheduler.currentText(),
            self.batch.value(),
            self.negative.text(),
        )
        if self.model.currentData():
            s.model = self.model.currentData()
        s.save()

    # ------------------------------------------------------------------ view

    def showEvent(self, event: Any) -> None:  # Qt calls it when the docker appears
        super().showEvent(event)
        self._refresh_mode()

    def _refresh_mode(self) -> None:
        if not self.isVisible():
            return
        doc = active_document()
        if doc is None:
            text = "Open a document to paint with Sfumato."
        elif doc.selection_bounds() is not None:
            text = "Generate repaints the selection (inpaint)."
        else:
            text = "Generate restyles the active layer."
        if self.mode.text() != text:
            self.mode.setText(text)

    def refresh(self) -> None:
        conn = self.app.connection
        welcome = conn.welcome
        self.status.setText(connection_line(conn))
        connected = conn.state == "connected"
        if connected != self._was_connected:  # fold the connection settings once connected, unfold on trouble
            self.connection.set_expanded(not connected)
            self._was_connected = connected
        if welcome is not None:
            self.batch.setMaximum(welcome.limits.max_batch)
        if welcome is not None and self.model.count() == 0:
            for m in checkpoints(welcome.models):
                self.model.addItem(describe(m), m.id)
                if m.problem:  # shown with the reason, never chosen
                    self.model.model().item(self.model.count() - 1).setEnabled(False)
            index = self.model.findData(self.app.settings.model)
            if index >= 0:
                self.model.setCurrentIndex(index)
        if welcome is not None and welcome is not self._lists_from:  # once per welcome, not per refresh
            self._lists_from = welcome
            _refill(self.upscaler, upscalers(welcome.models))
            _refill(self.vae, vaes(welcome.models))
        controller = self.app.controller
        jobs = controller.active_jobs() if controller is not None else []
        step, total, words = progress_of(jobs)
        self.progress.setRange(0, total)
        self.progress.setValue(step)
        self.progress.setFormat(words)
        self.queue.setText(queue_line(jobs))
        self.cancel_button.setEnabled(bool(jobs))
        live = self.app.live
        self.apply_button.setEnabled(live is not None and live.painting.picture is not None)
        if live is not None and not live.painting.on and self.live_button.isChecked():
            self.live_button.setChecked(False)  # stopped by itself (its document closed, an error)
        self.message.setText(message_line(self.app.last_error, controller.messages if controller is not None else []))
