"""GLib's main loop behind job.MainLoop: how the network thread's events reach GIMP's thread."""

from __future__ import annotations

import logging
import math
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


def after(seconds: float, fn: Callable[[], object]) -> None:
    """Run ``fn`` once on the main loop in ``seconds`` (a one-shot timeout: the callback returns False)."""

    def once() -> bool:
        try:
            fn()
        except Exception:
            log.exception("sfumato: a timed callback failed")
        return False

    GLib.timeout_add(max(0, math.ceil(seconds * 1000)), once)


def repeat(milliseconds: int, fn: Callable[[], bool]) -> None:
    """Call ``fn`` every ``milliseconds`` on the main loop while it returns True (one that raises stops)."""

    def again() -> bool:
        try:
            return bool(fn())
        except Exception:
            log.exception("sfumato: a repeating callback failed; it stops")
            return False

    GLib.timeout_add(milliseconds, again)


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
