"""What the docker's layer pickers list: one rule for the ControlNet and the Reference rows."""

from __future__ import annotations

from typing import Any

from krita import Krita


def refill_layers(combo: Any) -> None:
    """An empty entry (the active layer), then the active document's paint layers; the choice is kept."""
    doc = Krita.instance().activeDocument()
    current = combo.currentText()
    combo.clear()
    combo.addItem("")
    if doc is not None:
        combo.addItems([n.name() for n in doc.topLevelNodes() if n.type() == "paintlayer"])
    combo.setCurrentText(current)
