"""GLib's main loop behind job.MainLoop: how the network thread's events reach GIMP's thread."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from gi.repository import GLib

log = logging.getLogger(__name__)


def _guarded(fn: Callable[[], object], once: bool) -> Callable[[], bool]:
    """``fn`` as a GLib source callback: run once (returns False) or again while ``fn`` returns true. A GLib
    callback must not raise: a failure is logged, the loop lives on, and the source ends."""

    def callback() -> bool:
        try:
            again = fn()
        except Exception:
            log.exception("sfumato: a main-loop callback failed")
            return False
        return not once and bool(again)

    return callback


def post(fn: Callable[[], None]) -> None:
    """Run ``fn`` once on the main loop (thread-safe: GLib.idle_add may be called from any thread)."""
    GLib.idle_add(_guarded(fn, once=True))


def after(seconds: float, fn: Callable[[], object]) -> None:
    """Run ``fn`` once on the main loop in ``seconds``."""
    GLib.timeout_add(max(0, math.ceil(seconds * 1000)), _guarded(fn, once=True))


def repeat(milliseconds: int, fn: Callable[[], bool]) -> None:
    """Call ``fn`` every ``milliseconds`` on the main loop while it returns True (one that raises stops)."""
    GLib.timeout_add(milliseconds, _guarded(fn, once=False))


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
