"""The network thread for GIMP: plugin.core's NetworkThread, its events handed to GLib's main loop.

``post`` runs a callable on the GUI thread later (``GLib.idle_add`` in GIMP, see ``glib.py``), so the
listener, the controller and every GIMP call stay on the main loop; the main loop never waits on the
network. No ``gi`` here: the host tests drive it with their own loop.
"""

from __future__ import annotations

from collections.abc import Callable

from sfumato.plugin.core.client import Client, Event, Listener
from sfumato.plugin.core.jobs import TrackedJob
from sfumato.plugin.core.network import NetworkThread

CLIENT_NAME = "sfumato-gimp/0.1"

Post = Callable[[Callable[[], None]], None]


class Bridge(NetworkThread):
    def __init__(self, post: Post) -> None:
        super().__init__(CLIENT_NAME, "gimp")
        self.post = post

    def start(self, url: str, token: str | None, listener: Listener) -> Client:
        """Connect (and keep reconnecting) on a new thread; ``listener`` is called on the main loop."""

        def forward(event: Event, job: TrackedJob | None) -> None:  # network thread
            self.post(lambda: listener(event, job))

        return super().start(url, token, forward)
