"""ruff and mypy are configured in pyproject.toml and must stay clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"protocol": "protocol", "backend": "backend", "plugin": "plugin", "cli": "cli"}


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; install the dev extra (install/test does)")
    return found


def test_ruff_clean() -> None:
    res = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_clean(tmp_path: Path) -> None:
    # mypy cannot follow setuptools' package-dir mapping; give it the installed layout through links.
    ns = tmp_path / "sfumato"
    ns.mkdir()
    for name, folder in PACKAGES.items():
        os.symlink(ROOT / folder, ns / name)
    res = subprocess.run(
        [
            _tool("mypy"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy"),
            "-p",
            "sfumato.protocol",
            "-p",
            "sfumato.backend",
            "-p",
            "sfumato.plugin",
            "-p",
            "sfumato.cli",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
