"""The network thread: an asyncio loop running plugin.core's Client; events are handed to GLib's main loop.

``post`` runs a callable on the GUI thread later (``GLib.idle_add`` in GIMP, see ``glib.py``), so the
listener, the controller and every GIMP call stay on the main loop; the main loop never waits on the
network. No ``gi`` here: the host tests drive it with their own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from sfumato.plugin.core.client import Client, Event, Listener
from sfumato.plugin.core.jobs import TrackedJob
from sfumato.plugin.core.transport import WebSocketTransport

CLIENT_NAME = "sfumato-gimp/0.1"

Post = Callable[[Callable[[], None]], None]


class Bridge:
    def __init__(self, post: Post) -> None:
        self.post = post
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: Client | None = None
        self._thread: threading.Thread | None = None

    def start(self, url: str, token: str | None, listener: Listener) -> Client:
        """Connect (and keep reconnecting) on a new thread; ``listener`` is called on the main loop."""
        self.stop()
        loop = asyncio.new_event_loop()

        def forward(event: Event, job: TrackedJob | None) -> None:  # network thread
            self.post(lambda: listener(event, job))

        client = Client(lambda: WebSocketTransport.connect(url), CLIENT_NAME, "gimp", token or None, listener=forward)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_until_complete(client.run())
            except asyncio.CancelledError:
                pass  # stop() gave up waiting for a graceful close
            finally:
                rest = asyncio.all_tasks(loop)
                for task in rest:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
                loop.close()

        self.loop, self.client = loop, client
        self._thread = threading.Thread(target=run, name="sfumato-network", daemon=True)
        self._thread.start()
        ready.wait(5)
        return client

    def schedule(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self.loop is None or self.loop.is_closed():
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Close the connection, waiting at most about a second: a procedure returns, a window reconnects."""
        loop, client, thread = self.loop, self.client, self._thread
        self.loop = self.client = self._thread = None
        if client is not None and loop is not None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(client.close(), loop)  # sends the close frame at once
            try:
                fut.result(0.5)
            except Exception:
                pass
            try:  # still waiting for the peer, or in a reconnect back-off: stop waiting
                loop.call_soon_threadsafe(_cancel_all, loop)
            except RuntimeError:
                pass  # the loop closed meanwhile
        if thread is not None:
            thread.join(2)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()
