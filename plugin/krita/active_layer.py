"""Keeps the painter's layer active while Sfumato adds layers (the preview, a result) to a Krita document.

Krita makes a layer a script adds active by itself, and in Krita 5.1 not at once: its image thread adds the
layer and posts the activation to the GUI thread, tens of milliseconds after ``addChildNode`` returned — after
a ``setActiveNode`` made right away. So the guard gives the painter's layer back once, when Krita's own
activation of the added layer arrives; any other layer becoming active is the painter's choice, and ends the
watch. A document left with no active layer (the active preview layer removed) gets the painter's layer back.
"""

from __future__ import annotations

import time
from typing import Any

from .qt import QtCore

WATCH_S = 2.0  # Krita 5.1's activation came 25–80 ms after the addition on a loaded 2-core machine
WATCH_EVERY_MS = 10
WATCHING: dict[str, ActiveLayerGuard] = {}  # by document; a guard outlives the job (and the KritaDocument)


def in_document(node: Any) -> bool:
    """``node`` is a layer still in its document (not removed, by the painter or by undo)."""
    return node is not None and node.parentNode() is not None


def node_id(node: Any) -> str:
    return str(node.uniqueId().toString())


def guard_for(doc: Any) -> ActiveLayerGuard:
    """The document's guard: the one watching now (every job on a document shares it), or a new one."""
    return WATCHING.get(node_id(doc.rootNode())) or ActiveLayerGuard(doc)


class ActiveLayerGuard:
    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.key = node_id(doc.rootNode())
        self.layer: Any = None  # the painter's layer
        self.expected: set[str] = set()  # added layers whose activation by Krita has not come yet
        self.until = 0.0
        self.timer: Any = None  # made on the first keep(): reading a document needs none

    def is_sfumatos(self, node: Any) -> bool:
        """``node`` is active because Krita activated a layer Sfumato added, not because the painter chose it."""
        return node is not None and node_id(node) in self.expected

    def keep(self, layer: Any, added: Any = None) -> None:
        """``layer`` stays the active layer although Sfumato has just added ``added`` (or removed a layer)."""
        if layer is None:
            return
        current = self.doc.activeNode()
        if in_document(added) and (current is None or node_id(current) != node_id(added)):
            self.expected.add(node_id(added))  # Krita has not activated it yet: it will, a moment later
        self.layer, self.until = layer, time.monotonic() + WATCH_S
        self.doc.setActiveNode(layer)
        if self.timer is None:
            self.timer = QtCore.QTimer()
            self.timer.setInterval(WATCH_EVERY_MS)
            self.timer.timeout.connect(self._check)
        self.timer.start()
        WATCHING[self.key] = self

    def _stop(self) -> None:
        self.timer.stop()
        self.expected = set()
        if WATCHING.get(self.key) is self:
            del WATCHING[self.key]

    def _check(self) -> None:
        if time.monotonic() > self.until or not in_document(self.layer):
            self._stop()
            return
        current = self.doc.activeNode()
        if current is None:
            self.doc.setActiveNode(self.layer)
        elif self.is_sfumatos(current):  # Krita's activation of a layer Sfumato added
            self.expected.discard(node_id(current))
            self.doc.setActiveNode(self.layer)
        elif node_id(current) != node_id(self.layer):  # the painter chose another layer: theirs to keep
            self._stop()
