"""The network thread: an asyncio loop running plugin.core's Client, events marshalled to the GUI thread.

Krita releases the GIL while idle, so the thread runs freely; the GUI thread never waits on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from sfumato.plugin.core.client import Client, Event
from sfumato.plugin.core.jobs import TrackedJob
from sfumato.plugin.core.transport import WebSocketTransport

from .qt import QObject, pyqtSignal

CLIENT_NAME = "sfumato-krita/0.1"


class Bridge(QObject):
    """Create on the GUI thread. ``event`` is emitted from the network thread and delivered queued."""

    event = pyqtSignal(object, object)

    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: Client | None = None
        self._thread: threading.Thread | None = None

    def start(self, url: str, token: str | None) -> Client:
        self.stop()
        loop = asyncio.new_event_loop()
        client = Client(
            lambda: WebSocketTransport.connect(url), CLIENT_NAME, "krita", token or None, listener=self._forward
        )
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_until_complete(client.run())
            finally:
                loop.close()

        self.loop, self.client = loop, client
        self._thread = threading.Thread(target=run, name="sfumato-network", daemon=True)
        self._thread.start()
        ready.wait(5)
        return client

    def _forward(self, event: Event, job: TrackedJob | None) -> None:
        self.event.emit(event, job)  # network thread → queued to the GUI thread

    def schedule(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self.loop is None or self.loop.is_closed():
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.client is not None and self.loop is not None and not self.loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self.client.close(), self.loop)
            try:
                fut.result(2)
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(3)
        self.loop = self.client = self._thread = None
