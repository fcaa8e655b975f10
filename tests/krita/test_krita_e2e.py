"""The plugin inside a real Krita under Xvfb, driven through its own docker, against a real backend.

Needs Debian's ``krita``, ``xvfb``, ``xauth`` and ``python3-pyqt5`` (``.ci/run`` installs them).
Without them this test is skipped and the run says so plainly; with SFUMATO_REQUIRE_KRITA=1 it fails.
The run is judged by the result file the plugin writes, never by Krita's exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "out" / "krita-screenshot.png"
STATUS = ROOT / ".pytest_cache" / "sfumato-krita-status"


def _status(text: str) -> None:
    STATUS.parent.mkdir(parents=True, exist_ok=True)
    STATUS.write_text(text + "\n")


def _missing() -> list[str]:
    missing = [exe for exe in ("krita", "xvfb-run", "xauth") if shutil.which(exe) is None]
    if not Path("/usr/lib/python3/dist-packages/PyQt5").exists() and shutil.which("krita"):
        missing.append("python3-pyqt5")
    return missing


@pytest.mark.krita
def test_plugin_in_real_krita(tmp_path: Path, backend_url: str) -> None:
    missing = _missing()
    if missing:
        msg = (
            f"IN-KRITA TESTS DID NOT RUN: missing {', '.join(missing)}. Install them with: apt-get install "
            "krita xvfb xauth python3-pyqt5 (or run .ci/run), then run install/test again."
        )
        _status(msg)
        if os.environ.get("SFUMATO_REQUIRE_KRITA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    profile = tmp_path / "profile"
    dirs = {k: profile / k for k in ("config", "data", "cache", "runtime", "home", "tmp")}
    for d in dirs.values():
        d.mkdir(parents=True)
    dirs["runtime"].chmod(0o700)
    # A fresh profile: autosave off at the top of kritarc (a recovery dialog would hang Krita).
    (dirs["config"] / "kritarc").write_text("AutoSaveInterval=0\n")
    env = {
        **os.environ,
        "SFUMATO_KRITA_RESOURCES": str(dirs["data"] / "krita"),
        "SFUMATO_KRITARC": str(dirs["config"] / "kritarc"),
    }
    subprocess.run([sys.executable, str(ROOT / "install" / "krita.py"), "install"], check=True, env=env)
    result = tmp_path / "result.json"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))} | {
        "HOME": str(dirs["home"]),
        "TMPDIR": str(dirs["tmp"]),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_DATA_HOME": str(dirs["data"]),
        "XDG_CACHE_HOME": str(dirs["cache"]),
        "XDG_RUNTIME_DIR": str(dirs["runtime"]),
        "SFUMATO_KRITA_TEST_OUT": str(result),
        "SFUMATO_KRITA_SCREENSHOT": str(SCREENSHOT),
        "SFUMATO_KRITA_SERVER": backend_url,
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",  # Krita's sys.executable must not be our venv
    }
    log = tmp_path / "krita.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [
                "timeout",
                "-k",
                "10",
                "300",
                "xvfb-run",
                "-a",
                "-s",
                "-screen 0 1280x1024x24 -nolisten tcp",
                "krita",
                "--nosplash",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    tail = log.read_text()[-4000:]
    assert result.exists(), f"Krita wrote no result (exit {proc.returncode}); its output:\n{tail}"
    body = json.loads(result.read_text())
    report = "\n".join(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']} {c['detail']}" for c in body["checks"])
    _status(
        f"in-Krita tests ran on Krita {body.get('krita')} (Python {body.get('python')}): "
        f"{sum(c['ok'] for c in body['checks'])}/{len(body['checks'])} checks passed"
        + ("; the scenario STOPPED EARLY with an error" if body["error"] else "")
        + f"; screenshot: {SCREENSHOT}"
    )
    assert not body["error"], f"{body['error']}\n{report}\n{tail}"
    assert body["checks"] and all(c["ok"] for c in body["checks"]), report
    assert len(body["checks"]) >= 21, report  # every step of the scenario ran
    assert SCREENSHOT.exists()
