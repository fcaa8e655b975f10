"""GLib's main loop behind job.MainLoop: how the network thread's events reach GIMP's thread."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gi.repository import GLib

log = logging.getLogger(__name__)


def post(fn: Callable[[], None]) -> None:
    """Run ``fn`` once on the main loop (thread-safe: GLib.idle_add may be called from any thread)."""

    def once() -> bool:
        try:
            fn()
        except Exception:  # a GLib callback must not raise: log it, keep the loop alive
            log.exception("sfumato: a main-loop callback failed")
        return False

    GLib.idle_add(once)


class GLibLoop:
    def __init__(self) -> None:
        self._loop = GLib.MainLoop()

    def post(self, fn: Callable[[], None]) -> None:
        post(fn)

    def every(self, seconds: float, fn: Callable[[], bool]) -> None:
        GLib.timeout_add(max(1, round(seconds * 1000)), fn)

    def run(self) -> None:
        self._loop.run()

    def quit(self) -> None:
        self._loop.quit()
