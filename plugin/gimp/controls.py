"""The window's lists: ControlNet rows — type, source layer, strength, start/end, "layer is a map" —, LoRA rows
and reference rows.

The same choices as the Krita docker's rows; ``spec()`` turns a control row into plugin.core's
``ControlSpec`` and a reference row into its ``ReferenceSpec``, ``choice()`` a LoRA row into the
request's ``LoraWeight``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import Gtk  # noqa: E402

from sfumato.plugin.core.models import DEFAULT_LORA_WEIGHT, LORA_WEIGHT_RANGE, describe  # noqa: E402
from sfumato.plugin.core.references import DEFAULT_REFERENCE_WEIGHT, REFERENCE_WEIGHT_RANGE, ReferenceSpec  # noqa: E402
from sfumato.plugin.core.requests import ControlSpec  # noqa: E402
from sfumato.protocol import (  # noqa: E402
    CONTROL_TYPES,
    DEFAULT_REFERENCE_MODE,
    MAX_CONTROL_STRENGTH,
    REFERENCE_MODES,
    LoraWeight,
    ModelInfo,
)

ACTIVE_LAYER = ""  # the source combo's first entry: the layer Generate paints from
AUTO_ADAPTER = ""  # the adapter combo's first entry: the backend picks one for the model


def layer_names(image: Any) -> Iterator[str]:
    """Every layer's name, groups' children included, top to bottom (what ``get_layer_by_name`` finds)."""
    stack = list(image.get_layers()) if image.is_valid() else []
    while stack:
        layer = stack.pop(0)
        yield str(layer.get_name())
        if layer.is_group():
            stack[:0] = list(layer.get_children())


def spin(lo: float, hi: float, step: float, value: float, digits: int = 2) -> Any:
    button = Gtk.SpinButton.new_with_range(lo, hi, step)
    button.set_digits(digits)
    button.set_value(value)
    return button


def refill_layers(combo: Any, image: Any) -> None:
    """A row's layer picker: the layer Generate paints from, then the image's layers; the choice is kept."""
    current = combo.get_active_id() or ACTIVE_LAYER
    combo.remove_all()
    combo.append(ACTIVE_LAYER, "(the layer Generate paints from)")
    for name in layer_names(image):
        combo.append(name, name)
    if not combo.set_active_id(current):
        combo.set_active_id(ACTIVE_LAYER)


class ControlRow:
    def __init__(self, image: Any, on_remove: Callable[[ControlRow], None]) -> None:
        self.image = image
        self.type = Gtk.ComboBoxText()
        for name in CONTROL_TYPES:
            self.type.append(name, name)
        self.type.set_active(0)
        self.layer = Gtk.ComboBoxText()
        self.layer.set_tooltip_text("Source layer (the first entry: the layer Generate paints from)")
        self.strength = spin(0, MAX_CONTROL_STRENGTH, 0.05, 1.0)
        self.strength.set_tooltip_text("Strength")
        self.start, self.end = spin(0, 1, 0.05, 0.0), spin(0, 1, 0.05, 1.0)
        self.start.set_tooltip_text("Start (fraction of the steps)")
        self.end.set_tooltip_text("End (fraction of the steps)")
        self.is_map = Gtk.CheckButton(label="layer is a map")
        self.remove = Gtk.Button(label="✕")
        self.remove.set_tooltip_text("Remove this control")
        self.remove.connect("clicked", lambda _b: on_remove(self))
        self.widget = Gtk.Grid(row_spacing=2, column_spacing=4)
        self.widget.attach(self.type, 0, 0, 1, 1)
        self.widget.attach(self.layer, 1, 0, 2, 1)
        self.widget.attach(self.remove, 3, 0, 1, 1)
        self.widget.attach(self.strength, 0, 1, 1, 1)
        self.widget.attach(self.start, 1, 1, 1, 1)
        self.widget.attach(self.end, 2, 1, 1, 1)
        self.widget.attach(self.is_map, 0, 2, 3, 1)
        self.refresh_layers()

    def refresh_layers(self) -> None:
        """The image's layers now (the painter adds and renames them while the window is open)."""
        refill_layers(self.layer, self.image)

    def spec(self) -> ControlSpec:
        return ControlSpec(
            type=self.type.get_active_id() or CONTROL_TYPES[0],
            layer=self.layer.get_active_id() or None,
            strength=self.strength.get_value(),
            start=self.start.get_value(),
            end=self.end.get_value(),
            preprocess=not self.is_map.get_active(),
        )


class LoraRow:
    """One LoRA of the next jobs: which (those fitting the chosen model) and its weight."""

    def __init__(self, on_remove: Callable[[LoraRow], None]) -> None:
        self.lora = Gtk.ComboBoxText(hexpand=True)
        self.weight = spin(*LORA_WEIGHT_RANGE, step=0.05, value=DEFAULT_LORA_WEIGHT)
        self.weight.set_tooltip_text("Weight (1 = as trained)")
        self.remove = Gtk.Button(label="✕")
        self.remove.set_tooltip_text("Remove this LoRA")
        self.remove.connect("clicked", lambda _b: on_remove(self))
        self.widget = Gtk.Box(spacing=4)
        self.widget.pack_start(self.lora, True, True, 0)
        self.widget.pack_start(self.weight, False, False, 0)
        self.widget.pack_start(self.remove, False, False, 0)

    def offer(self, loras: list[ModelInfo]) -> None:
        current = self.lora.get_active_id()
        self.lora.remove_all()
        for m in loras:
            self.lora.append(m.id, describe(m))
        if not (current and self.lora.set_active_id(current)) and loras:
            self.lora.set_active(0)

    def choice(self) -> LoraWeight | None:
        lora_id = self.lora.get_active_id()
        return LoraWeight(id=lora_id, weight=self.weight.get_value()) if lora_id else None


class ReferenceRow:
    """One reference of the next jobs: a layer (the first entry: the layer Generate paints from), its weight,
    its mode, and the IP-Adapter (auto: the backend's pick for the model)."""

    def __init__(self, image: Any, on_remove: Callable[[ReferenceRow], None]) -> None:
        self.image = image
        self.layer = Gtk.ComboBoxText()
        self.layer.set_tooltip_text("Reference layer; it is sent scaled down")
        self.mode = Gtk.ComboBoxText()
        for mode in REFERENCE_MODES:
            self.mode.append(mode, mode)
        self.mode.set_active_id(DEFAULT_REFERENCE_MODE)
        self.mode.set_tooltip_text("style: its look; composition: its layout; full: both")
        self.weight = spin(*REFERENCE_WEIGHT_RANGE, step=0.05, value=DEFAULT_REFERENCE_WEIGHT)
        self.weight.set_tooltip_text("Weight (1 = as trained)")
        self.adapter = Gtk.ComboBoxText()
        self.adapter.set_tooltip_text("IP-Adapter (auto: one that fits the model)")
        self.remove = Gtk.Button(label="✕")
        self.remove.set_tooltip_text("Remove this reference")
        self.remove.connect("clicked", lambda _b: on_remove(self))
        self.widget = Gtk.Grid(row_spacing=2, column_spacing=4)
        self.widget.attach(self.layer, 0, 0, 2, 1)
        self.widget.attach(self.remove, 2, 0, 1, 1)
        self.widget.attach(self.mode, 0, 1, 1, 1)
        self.widget.attach(self.weight, 1, 1, 1, 1)
        self.widget.attach(self.adapter, 0, 2, 3, 1)
        self.offer([])
        self.refresh_layers()

    def refresh_layers(self) -> None:
        refill_layers(self.layer, self.image)

    def offer(self, adapters: list[ModelInfo]) -> None:
        current = self.adapter.get_active_id() or AUTO_ADAPTER
        self.adapter.remove_all()
        self.adapter.append(AUTO_ADAPTER, "auto")
        for m in adapters:
            self.adapter.append(m.id, describe(m))
        if not self.adapter.set_active_id(current):
            self.adapter.set_active_id(AUTO_ADAPTER)

    def spec(self) -> ReferenceSpec:
        return ReferenceSpec(
            layer=self.layer.get_active_id() or None,
            weight=self.weight.get_value(),
            mode=self.mode.get_active_id() or DEFAULT_REFERENCE_MODE,
            adapter=self.adapter.get_active_id() or None,
        )
