"""The network thread for Krita: plugin.core's NetworkThread, events marshalled to the GUI thread.

Krita releases the GIL while idle, so the thread runs freely; the GUI thread never waits on it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from sfumato.plugin.core.client import Client, Event
from sfumato.plugin.core.jobs import TrackedJob
from sfumato.plugin.core.network import NetworkThread

from .qt import QObject, pyqtSignal

CLIENT_NAME = "sfumato-krita/0.1"


class Bridge(QObject):
    """Create on the GUI thread. ``event`` is emitted from the network thread and delivered queued."""

    event = pyqtSignal(object, object)

    def __init__(self) -> None:
        super().__init__()
        self.network = NetworkThread(CLIENT_NAME, "krita")

    def start(self, url: str, token: str | None) -> Client:
        return self.network.start(url, token, self._forward)

    def _forward(self, event: Event, job: TrackedJob | None) -> None:
        self.event.emit(event, job)  # network thread → queued to the GUI thread

    def schedule(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.network.schedule(coro)

    def stop(self) -> None:
        self.network.stop(close_wait_s=2.0, join_s=3.0)
