"""install/krita.py: the plugin tree, the zip for Krita's importer, and kritarc editing."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("krita_installer", ROOT / "install" / "krita.py")
assert spec and spec.loader
installer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(installer)


def test_zip_has_the_plugin_layout_and_pure_python_vendored_packages(tmp_path: Path) -> None:
    out = installer.build_zip(tmp_path / "sfumato-krita.zip")
    names = set(zipfile.ZipFile(out).namelist())
    for required in (
        "sfumato.desktop",
        "sfumato/__init__.py",
        "sfumato/protocol/codec.py",
        "sfumato/plugin/core/client.py",
        "sfumato/plugin/krita/docker.py",
        "sfumato/vendor/msgpack/fallback.py",
        "sfumato/vendor/websockets/asyncio/client.py",
    ):
        assert required in names, required
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc")) or "backend" in n or "__pycache__" in n]
    desktop = zipfile.ZipFile(out).read("sfumato.desktop").decode()
    assert "X-KDE-Library=sfumato" in desktop and "ServiceTypes=Krita/PythonPlugin" in desktop


def test_install_is_idempotent_and_enables_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFUMATO_KRITA_RESOURCES", str(tmp_path / "krita"))
    rc = tmp_path / "kritarc"
    rc.write_text("AutoSaveInterval=0\n\n[python]\nenable_scripter=true\n\n[MainWindow]\nState=abc\n")
    monkeypatch.setenv("SFUMATO_KRITARC", str(rc))
    for _ in range(2):
        target = installer.install(link=False)
    assert (target / "__init__.py").exists() and (tmp_path / "krita" / "pykrita" / "sfumato.desktop").exists()
    text = rc.read_text()
    assert text.count("enable_sfumato=true") == 1
    assert "enable_scripter=true" in text and "State=abc" in text and text.startswith("AutoSaveInterval=0")
    section = text.split("[python]")[1].split("[MainWindow]")[0]
    assert "enable_sfumato=true" in section
    installer.uninstall()
    assert not target.exists()


def test_kritarc_without_a_python_section_gets_one(tmp_path: Path) -> None:
    rc = tmp_path / "kritarc"
    installer.enable_in_kritarc(rc)
    assert rc.read_text().strip().endswith("[python]\nenable_sfumato=true")
    rc.write_text("[python]\nenable_sfumato=false\n")
    installer.enable_in_kritarc(rc)
    assert rc.read_text() == "[python]\nenable_sfumato=true\n"
