"""The result file the test judges; standard library and ``krita`` only, so it works when Sfumato does not."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

from krita import Krita

OUT = os.environ.get("SFUMATO_KRITA_TEST_OUT", "")


class Run:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        print(f"sfumato-selftest: {'ok  ' if ok else 'FAIL'} {name} {detail}", file=sys.stderr, flush=True)

    def write(self, error: str = "") -> None:
        body = {
            "checks": self.checks,
            "error": error,
            "seconds": round(time.monotonic() - self.started, 1),
            "krita": Krita.instance().version(),
            "python": sys.version.split()[0],
        }
        tmp = OUT + ".tmp"
        with open(tmp, "w") as f:
            json.dump(body, f, indent=2)
        os.replace(tmp, OUT)


RUN = Run()


def report_broken_plugin(error: str) -> None:
    """The Sfumato plugin did not import: write Krita's error text at once and close Krita.

    Nothing of Sfumato can be used here, not even its Qt shim: QtCore is found next to the module of
    the window Krita hands us (PyQt5 in Krita 5, PyQt6 in Krita 6)."""

    def stop() -> None:
        RUN.write(f"the Sfumato plugin failed to load in Krita {Krita.instance().version()}:\n{error}")
        window = Krita.instance().activeWindow().qwindow()
        qt_core = importlib.import_module(type(window).__module__.rsplit(".", 1)[0] + ".QtCore")
        qt_core.QTimer.singleShot(100, window.close)

    Krita.instance().notifier().windowCreated.connect(stop)
