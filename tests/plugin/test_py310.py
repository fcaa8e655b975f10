"""Krita's situation: protocol/ and plugin/core on Python 3.10 with only msgpack (+ websockets)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def py310(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    exe = os.environ.get("SFUMATO_PY310")
    if not exe:
        msg = "python3.10 checks did not run: install/test sets SFUMATO_PY310 when python3.10 exists"
        if os.environ.get("SFUMATO_REQUIRE_PY310") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    # The installed layout, through links: sfumato/protocol and sfumato/plugin (no backend, no torch).
    site = tmp_path_factory.mktemp("py310-site")
    (site / "sfumato").mkdir()
    for name in ("protocol", "plugin"):
        os.symlink(ROOT / name, site / "sfumato" / name)
    return exe, {**os.environ, "PYTHONPATH": str(site)}


def test_protocol_checks_on_python310(py310: tuple[str, dict[str, str]]) -> None:
    exe, env = py310
    res = subprocess.run(
        [exe, str(ROOT / "tests" / "portable" / "protocol_checks.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0 and "on Python 3.10" in res.stdout, res.stdout + res.stderr
    assert "0 failed" in res.stdout


def test_only_msgpack_and_websockets_are_installed(py310: tuple[str, dict[str, str]]) -> None:
    exe, env = py310
    code = (
        "import importlib.util as u; "
        "print([m for m in ('numpy', 'torch', 'PIL', 'hypothesis', 'pytest') if u.find_spec(m)])"
    )
    res = subprocess.run([exe, "-c", code], capture_output=True, text=True, env=env)
    assert res.stdout.strip() == "[]", res.stdout


def test_plugin_core_against_the_real_backend_on_python310(py310: tuple[str, dict[str, str]], backend_url: str) -> None:
    exe, env = py310
    res = subprocess.run(
        [exe, str(ROOT / "tests" / "portable" / "core_checks.py"), backend_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0 and "core checks passed on Python 3.10" in res.stdout, res.stdout + res.stderr
