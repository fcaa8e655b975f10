"""The point of a shared backend: a Krita and a GIMP generating at the same time on one backend.

Both run their own end-to-end scenario (tests/krita, tests/gimp) concurrently against the same
backend process; each must pass whole — its own results as its own layers, no stray layers, no
other editor's previews — and the two runs must really overlap in time.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "krita"), str(HERE / "gimp")]
import test_gimp_e2e as gimp  # noqa: E402
import test_krita_e2e as krita  # noqa: E402


@pytest.mark.krita
def test_a_krita_and_a_gimp_generate_at_once_on_one_backend(tmp_path: Path, painters_backend_url: str) -> None:
    backend_url = painters_backend_url  # the Krita scenario's style-reference job needs its IP-Adapter
    editor = krita.EDITORS[0]  # the host's Krita
    krita._chroot_dir(editor)  # skips (or fails under SFUMATO_REQUIRE_KRITA) when Krita cannot run here
    gimp._require("trixie", "procedures")
    profiles = gimp.Profiles()
    outcome: dict[str, Any] = {}

    def run(name: str, work: Any) -> None:
        started = time.monotonic()
        try:
            outcome[name] = work()
        except BaseException as exc:  # reported below, in this thread's words
            outcome[name] = exc
        outcome[f"{name} span"] = (started, time.monotonic())

    env = {
        "SFUMATO_GIMP_TEST_OUT": "{inside}/{name}.json",
        "SFUMATO_GIMP_TEST_SERVER": backend_url,
        "SFUMATO_GIMP_TRACE": "{inside}/trace.jsonl",  # the previews it saw, checked by its scenario
    }
    threads = [
        threading.Thread(target=run, args=("krita", lambda: krita._run_scenario(editor, backend_url, tmp_path))),
        threading.Thread(
            target=run,
            args=("gimp", lambda: gimp._run_gimp(profiles.get("trixie"), "procedures", "drive.py", env, gui=False)),
        ),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        profiles.close()
    for name in ("krita", "gimp"):
        if isinstance(outcome[name], BaseException):
            raise AssertionError(f"the {name} run failed") from outcome[name]
    k, g = outcome["krita"].body, outcome["gimp"][0]
    assert not k["error"] and k["checks"] and all(c["ok"] for c in k["checks"]), k
    failed = [c for c in g["checks"] if not c["ok"]]
    assert not g["error"] and g["checks"] and not failed, (g["error"], failed)
    stray = [c for c in k["checks"] if c["name"] == "no stray layers"]
    assert stray and stray[0]["ok"], "Krita got only its own results, as layers of its own"
    (k0, k1), (g0, g1) = outcome["krita span"], outcome["gimp span"]
    assert max(k0, g0) < min(k1, g1), "the two editors were generating at the same time"
