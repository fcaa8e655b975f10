"""Keeps the painter's layer active while Sfumato adds layers (the preview, a result) to a Krita document.

Krita makes a layer a script adds active by itself, and in Krita 5.1 not at once: its image thread adds the
layer and posts the activation to the GUI thread, tens of milliseconds after ``addChildNode`` returned — after
a ``setActiveNode`` made right away. So the guard gives the painter's layer back once, when Krita's own
activation of the added layer arrives; any later choice is the painter's and stays. A document left with no
active layer (the active preview layer removed) gets the painter's layer back too.
"""

from __future__ import annotations

import time
from typing import Any

from .qt import QtCore

WATCH_S = 2.0  # Krita 5.1's activation came 25–80 ms after the addition on a loaded 2-core machine
WATCH_EVERY_MS = 10
WATCHING: set[ActiveLayerGuard] = set()  # a guard outlives the job (and the KritaDocument) that started it


def in_document(node: Any) -> bool:
    """``node`` is a layer still in its document (not removed, by the painter or by undo)."""
    return node is not None and node.parentNode() is not None


def node_id(node: Any) -> str:
    return str(node.uniqueId().toString())


class ActiveLayerGuard:
    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.layer: Any = None
        self.expected: set[str] = set()  # added layers whose activation by Krita has not come yet
        self.until = 0.0
        self.timer = QtCore.QTimer()
        self.timer.setInterval(WATCH_EVERY_MS)
        self.timer.timeout.connect(self._check)

    def keep(self, layer: Any, added: Any = None) -> None:
        """``layer`` stays the active layer although Sfumato has just added ``added`` (or removed a layer)."""
        if layer is None:
            return
        current = self.doc.activeNode()
        if in_document(added) and (current is None or node_id(current) != node_id(added)):
            self.expected.add(node_id(added))  # Krita has not activated it yet: it will, a moment later
        self.layer, self.until = layer, time.monotonic() + WATCH_S
        self.doc.setActiveNode(layer)
        self.timer.start()
        WATCHING.add(self)

    def _check(self) -> None:
        if time.monotonic() > self.until or not in_document(self.layer):
            self.timer.stop()
            self.expected = set()
            WATCHING.discard(self)
            return
        current = self.doc.activeNode()
        if current is None:
            self.doc.setActiveNode(self.layer)
        elif node_id(current) in self.expected:  # Krita's activation of a layer Sfumato added, not the painter's
            self.expected.discard(node_id(current))
            self.doc.setActiveNode(self.layer)
