"""Imports flow one way: protocol ← backend; protocol ← plugin.core ← plugin.krita, plugin.gimp."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def imports_of(folder: str) -> dict[str, set[str]]:
    """file → top-level modules it imports (relative imports resolved into the sfumato namespace)."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def _violations(folder: str, allowed: set[str], forbidden_prefixes: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for file, names in imports_of(folder).items():
        for name in names:
            top = name.split(".")[0]
            if name.startswith(forbidden_prefixes) or (top not in STDLIB and top not in allowed and top != "sfumato"):
                bad.append(f"{file}: {name}")
    return bad


def test_protocol_is_sans_io_stdlib_plus_msgpack() -> None:
    io = ("asyncio", "socket", "ssl", "select", "selectors", "threading", "subprocess", "time", "websockets")
    bad = _violations("protocol", {"msgpack"}, (*io, "sfumato.backend", "sfumato.plugin", "sfumato.cli"))
    assert not bad, bad


def test_plugin_core_needs_no_qt_krita_or_backend() -> None:
    bad = _violations(
        "plugin/core",
        {"msgpack", "websockets"},
        ("sfumato.backend", "sfumato.plugin.krita", "sfumato.plugin.gimp", "sfumato.cli", "PyQt", "krita", "gi"),
    )
    assert not bad, bad


def test_plugin_gimp_needs_only_gi_core_and_protocol() -> None:
    bad = _violations(
        "plugin/gimp",
        {"gi", "msgpack", "websockets"},
        ("sfumato.backend", "sfumato.plugin.krita", "sfumato.cli", "PyQt", "krita"),
    )
    assert not bad, bad


def test_only_the_gimp_facing_modules_import_gi() -> None:
    with_gi = {
        Path(f).name for f, names in imports_of("plugin/gimp").items() if any(n.split(".")[0] == "gi" for n in names)
    }
    assert with_gi <= {"controls.py", "document.py", "glib.py", "plugin.py", "window.py"}, with_gi


def test_backend_never_imports_editors() -> None:
    bad = [
        f"{f}: {n}"
        for f, names in imports_of("backend").items()
        for n in names
        if n.startswith(("sfumato.plugin", "sfumato.cli", "PyQt", "krita", "gi"))
    ]
    assert not bad, bad


def test_only_the_qt_shim_imports_qt() -> None:
    bad = [
        f"{f}: {n}"
        for f, names in imports_of("plugin/krita").items()
        for n in names
        if n.startswith(("PyQt5", "PyQt6")) and not f.endswith("qt.py")
    ]
    assert not bad, bad


@pytest.mark.parametrize("module", ["sfumato.protocol", "sfumato.plugin.core.client", "sfumato.plugin.gimp.job"])
def test_importing_light_modules_loads_nothing_heavy(module: str) -> None:
    import subprocess

    code = (
        f"import sys, {module}; heavy = {{'torch', 'numpy', 'diffusers', 'PIL', 'PyQt5'}} & set(sys.modules); "
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
