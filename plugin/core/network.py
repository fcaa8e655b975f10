"""plugin.core's Client on an asyncio loop of its own thread, for editors whose GUI thread must never wait.

The editor's bridge decides how events reach its GUI thread (a queued Qt signal in Krita,
``GLib.idle_add`` in GIMP); this class owns the thread, the loop and their orderly end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from .client import Client, Listener
from .transport import WebSocketTransport


class NetworkThread:
    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind  # the client's name and kind in its hello
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: Client | None = None
        self._thread: threading.Thread | None = None

    def start(self, url: str, token: str | None, listener: Listener) -> Client:
        """Connect (and keep reconnecting) on a new thread; ``listener`` is called on that thread."""
        self.stop()
        loop = asyncio.new_event_loop()
        client = Client(lambda: WebSocketTransport.connect(url), self.name, self.kind, token or None, listener=listener)
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
        """Run ``coro`` on the network loop (from any thread); dropped when the network is stopped."""
        if self.loop is None or self.loop.is_closed():
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, close_wait_s: float = 0.5, join_s: float = 2.0) -> None:
        """Close the connection, waiting at most ``close_wait_s`` for the close frame to go out."""
        loop, client, thread = self.loop, self.client, self._thread
        self.loop = self.client = self._thread = None
        if client is not None and loop is not None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(client.close(), loop)  # sends the close frame at once
            try:
                fut.result(close_wait_s)
            except Exception:
                pass
            try:  # still waiting for the peer, or in a reconnect back-off: stop waiting
                loop.call_soon_threadsafe(_cancel_all, loop)
            except RuntimeError:
                pass  # the loop closed meanwhile
        if thread is not None:
            thread.join(join_s)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()
