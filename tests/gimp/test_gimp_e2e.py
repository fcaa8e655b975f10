"""The plug-in inside the real GIMP 3.0 (Debian trixie chroot) and 3.2 (sid chroot), against a real backend.

``install/gimp.py`` installs the plug-in into a throwaway profile inside the chroot. Then, per GIMP:

* the procedures, headless: ``gimp-console -i`` runs ``drive.py`` through the python-fu-eval batch
  interpreter, which calls the plug-in's PDB procedures as any script would;
* the window, under Xvfb: ``gimp`` runs ``drive_window.py``, which runs Filters ▸ Sfumato ▸ Restyle
  Layer… through its dialog, then opens the Sfumato window; ``window_selftest.py``, loaded into the
  window's process, clicks the window's own buttons, checks the image and closes it. A screenshot of GIMP with
  the window is saved to out/gimp-3.x-window.png.

Each run is judged by the JSON file written from inside GIMP, never by GIMP's exit code, and has a
hard timeout. Needs root and the chroots of ``install/chroots.sh``; without them the tests are
skipped with a message saying so, and SFUMATO_REQUIRE_GIMP=1 turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import six
import Xlib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import free_display  # noqa: E402

CHROOTS = ROOT / "install" / "chroots.sh"
STATUS = ROOT / ".pytest_cache" / "sfumato-gimp-status"
SCREENSHOTS = ROOT / "out"
GIMP_TIMEOUT_S = 240  # each scenario takes 20–30 s (140 s on a loaded machine); a hang must not stall the suite

# chroot → the GIMP it holds (its user folder is per minor version)
GIMPS = {"trixie": "3.0", "sid": "3.2"}


@pytest.fixture(scope="module", autouse=True)
def _fresh_status() -> None:
    STATUS.unlink(missing_ok=True)  # install/test prints this file: only this run's lines


def _status(name: str, text: str) -> None:
    STATUS.parent.mkdir(parents=True, exist_ok=True)
    lines = STATUS.read_text().splitlines() if STATUS.exists() else []
    lines = [line for line in lines if not line.startswith(f"{name}:")] + [f"{name}: {text}"]
    STATUS.write_text("\n".join(lines) + "\n")


def _chroot_dir(name: str) -> Path:
    out = subprocess.run([str(CHROOTS), "--path", name], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _unavailable(name: str) -> str:
    if os.geteuid() != 0:
        return "entering a chroot needs root"
    for tool in ("chroot", "unshare"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool}(8) is missing"
    d = _chroot_dir(name)
    if not (d / ".sfumato-chroot-recipe").exists():
        return f"the {name} chroot is not built (run: install/chroots.sh {name})"
    if not (d / "usr" / "bin" / "gimp-console").exists():
        return f"the {name} chroot has no gimp-console"
    return ""


def _require(chroot: str, what: str) -> None:
    """Skip (or fail, with SFUMATO_REQUIRE_GIMP=1) before a backend is started for nothing."""
    why = _unavailable(chroot)
    if why:
        msg = (
            f"IN-GIMP TESTS ({what}) DID NOT RUN for GIMP {GIMPS[chroot]} ({chroot}): {why}. As root, build the "
            "chroots with install/chroots.sh, then run install/test again."
        )
        _status(f"{chroot} {what}", msg)
        if os.environ.get("SFUMATO_REQUIRE_GIMP") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@dataclass
class Profile:
    """One throwaway GIMP profile per chroot, shared by its two runs (GIMP's first start queries every plug-in)."""

    name: str  # trixie, sid
    root: Path  # the chroot
    work: Path  # the profile's folder, as the host sees it
    inside: str  # the same folder, as GIMP sees it


class Profiles:
    def __init__(self) -> None:
        self.made: dict[str, Profile] = {}

    def get(self, chroot: str) -> Profile:
        if chroot not in self.made:
            root = _chroot_dir(chroot)
            work = Path(tempfile.mkdtemp(prefix="sfumato-gimp-", dir=root / "tmp"))
            for d in ("home", "config", "cache", "tmp"):
                (work / d).mkdir()
            plugins = work / "config" / "GIMP" / GIMPS[chroot] / "plug-ins"
            subprocess.run(
                [sys.executable, str(ROOT / "install" / "gimp.py"), "install"],
                check=True,
                env={**os.environ, "SFUMATO_GIMP_PLUGINS": str(plugins)},
                capture_output=True,
            )
            self.made[chroot] = Profile(chroot, root, work, "/" + str(work.relative_to(root)))
        return self.made[chroot]

    def close(self) -> None:
        for profile in self.made.values():
            shutil.rmtree(profile.work, ignore_errors=True)


@pytest.fixture(scope="module")
def profiles() -> Iterator[Profiles]:
    made = Profiles()
    yield made
    made.close()


def _copy_packages(folder: Path, *modules: Any) -> None:
    """Pure-Python packages of this interpreter, for the editor's own Python inside the chroot."""
    folder.mkdir(exist_ok=True)
    for module in modules:
        source = Path(module.__file__)
        if source.name == "__init__.py":
            shutil.copytree(source.parent, folder / source.parent.name, dirs_exist_ok=True)
        else:
            shutil.copy(source, folder / source.name)


def _run_gimp(
    profile: Profile, name: str, script: str, env: dict[str, str], gui: bool
) -> tuple[dict[str, Any], float, str]:
    """Run one GIMP on ``script`` with a hard timeout: the result file's body, the seconds it took, its log's end."""
    work, inside = profile.work, profile.inside
    shutil.copy(Path(__file__).with_name(script), work / f"{name}.py")
    if gui:
        display = str(free_display())  # -a looks only at the chroot's /tmp; X sockets are shared with the host
        gimp = ["xvfb-run", "-n", display, "-s", "-screen 0 1280x1024x24 -nolisten tcp", "gimp", "--no-splash"]
    else:
        gimp = ["gimp-console", "-i"]
    # proc and dev are mounted (install/chroots.sh --mount) in a mount namespace of this run's own: other
    # runs in the same chroot mount and unmount theirs without pulling /proc from under this GIMP, and
    # these mounts end with the run.
    enter = f'{CHROOTS} --mount {profile.name} >/dev/null && exec chroot "$@"'
    command = [
        "timeout", "-k", "10", str(GIMP_TIMEOUT_S),
        "unshare", "--mount", "--propagation", "private", "sh", "-c", enter, "sh",
        str(profile.root), "/usr/bin/env", "-i",
        "PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", f"HOME={inside}/home", f"TMPDIR={inside}/tmp",
        f"XDG_CONFIG_HOME={inside}/config", f"XDG_CACHE_HOME={inside}/cache",
        *(f"{k}={v.format(inside=inside, name=name)}" for k, v in env.items()),
        *gimp, "--quit", "--batch-interpreter=python-fu-eval",
        "-b", f"exec(open('{inside}/{name}.py').read())",
    ]  # fmt: skip
    t0 = time.monotonic()
    with (work / f"{name}.log").open("w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    tail = (work / f"{name}.log").read_text()[-4000:]
    result = work / f"{name}.json"
    assert result.exists(), f"GIMP wrote no result (exit {proc.returncode}); its output:\n{tail}"
    return json.loads(result.read_text()), seconds, tail


def _judge(chroot: str, what: str, body: dict[str, Any], seconds: float, tail: str, at_least: int) -> None:
    report = "\n".join(
        f"{c['t']:5.1f}s {'ok  ' if c['ok'] else 'FAIL'} {c['name']} {c['detail']}" for c in body["checks"]
    )
    passed = sum(c["ok"] for c in body["checks"])
    _status(
        f"{chroot} {what}",
        f"in-GIMP tests ({what}) ran on GIMP {body['gimp']} (Python {body['python']}): "
        f"{passed}/{len(body['checks'])} checks passed in {seconds:.0f} s"
        + ("; the scenario STOPPED EARLY with an error" if body["error"] else ""),
    )
    print(report)
    assert not body["error"], f"{body['error']}\n{report}\n{tail}"
    assert body["checks"] and all(c["ok"] for c in body["checks"]), f"{report}\n{tail}"
    assert len(body["checks"]) >= at_least, report  # every step of the scenario ran
    assert body["gimp"].startswith(GIMPS[chroot]), body["gimp"]


@pytest.mark.parametrize("chroot", list(GIMPS))
def test_procedures_in_real_gimp_headless(chroot: str, request: pytest.FixtureRequest, profiles: Profiles) -> None:
    _require(chroot, "procedures")
    env = {
        "SFUMATO_GIMP_TEST_OUT": "{inside}/{name}.json",
        "SFUMATO_GIMP_TEST_SERVER": request.getfixturevalue("painters_backend_url"),  # its IP-Adapter: (g)
        "SFUMATO_GIMP_TRACE": "{inside}/trace.jsonl",
    }
    body, seconds, tail = _run_gimp(profiles.get(chroot), "procedures", "drive.py", env, gui=False)
    _judge(chroot, "procedures", body, seconds, tail, at_least=37)


@pytest.mark.parametrize("chroot", list(GIMPS))
def test_window_in_real_gimp_under_xvfb(chroot: str, request: pytest.FixtureRequest, profiles: Profiles) -> None:
    _require(chroot, "window")
    profile = profiles.get(chroot)
    shutil.copy(Path(__file__).with_name("window_selftest.py"), profile.work / "window_selftest.py")
    _copy_packages(profile.work / "pylib", Xlib, six)  # the undo step presses Ctrl+Z through XTest
    env = {
        "SFUMATO_GIMP_TEST_HOOK": "{inside}/window_selftest.py",
        "SFUMATO_GIMP_TEST_WINDOW": "{inside}/{name}.json",
        "SFUMATO_GIMP_TEST_SERVER": request.getfixturevalue("painters_backend_url"),
        "SFUMATO_GIMP_SCREENSHOT": "{inside}/screenshot.png",
        "SFUMATO_GIMP_TEST_PYLIB": "{inside}/pylib",
    }
    body, seconds, tail = _run_gimp(profile, "window", "drive_window.py", env, gui=True)
    if (profile.work / "screenshot.png").exists():
        SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copy(profile.work / "screenshot.png", SCREENSHOTS / f"gimp-{GIMPS[chroot]}-window.png")
    assert body["finished"], "the window's self-test did not finish"
    _judge(chroot, "window", body, seconds, tail, at_least=47)
