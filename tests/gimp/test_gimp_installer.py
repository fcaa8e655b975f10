"""install/gimp.py: which folders, the plug-in layout, idempotent install/uninstall, the zip."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gimp_installer", ROOT / "install" / "gimp.py")
assert spec and spec.loader
installer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(installer)


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Linux config folder with GIMP 2.10, 3.0 and 3.2 profiles (and a stray folder)."""
    monkeypatch.delenv(installer.ENV, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for version in ("2.10", "3.0", "3.2", "3.10", "3.x-backup"):
        (tmp_path / "config" / "GIMP" / version).mkdir(parents=True)
    return tmp_path / "config" / "GIMP"


def test_one_plugin_folder_per_gimp_3_minor_version(profile: Path) -> None:
    assert installer.plugin_dirs() == [profile / v / "plug-ins" for v in ("3.0", "3.2", "3.10")]
    assert installer.plugin_dirs("3.2") == [profile / "3.2" / "plug-ins"]


def test_the_environment_names_one_folder(profile: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(installer.ENV, str(tmp_path / "elsewhere"))
    assert installer.plugin_dirs() == [tmp_path / "elsewhere"]


def test_windows_and_macos_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    assert installer.config_root() == tmp_path / "Roaming" / "GIMP"
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert installer.config_root() == tmp_path / "home" / "Library" / "Application Support" / "GIMP"


def test_no_profile_yet_installs_for_gimp_3_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(installer.ENV, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    [target] = installer.install()
    assert target == tmp_path / "GIMP" / "3.0" / "plug-ins" / "sfumato"


def test_install_is_idempotent_writes_the_layout_and_uninstall_leaves_other_plugins(profile: Path) -> None:
    other = profile / "3.2" / "plug-ins" / "someone-else"
    other.mkdir(parents=True)
    for _ in range(2):
        targets = installer.install()
    assert targets == [profile / v / "plug-ins" / "sfumato" for v in ("3.0", "3.2", "3.10")]
    for target in targets:
        entry = target / "sfumato.py"
        assert entry.stat().st_mode & stat.S_IXUSR
        for rel in (
            "lib/sfumato/protocol/codec.py",
            "lib/sfumato/plugin/core/client.py",
            "lib/sfumato/plugin/gimp/plugin.py",
            "lib/vendor/msgpack/fallback.py",
            "lib/vendor/websockets/asyncio/client.py",
        ):
            assert (target / rel).is_file(), rel
        assert not [p for p in target.rglob("*") if p.suffix in (".so", ".pyc") or "backend" in p.parts]
        assert [p.name for p in target.parent.iterdir() if p.name.startswith(".sfumato-")] == []
    installer.uninstall()
    assert not any(t.exists() for t in targets) and other.is_dir()


def test_link_mode_points_at_the_sources(profile: Path) -> None:
    [target, *_] = installer.install(link=True)
    assert (target / "lib" / "sfumato" / "plugin" / "gimp").resolve() == ROOT / "plugin" / "gimp"


def test_the_entry_point_loads_our_package_and_vendored_libraries(tmp_path: Path) -> None:
    """GIMP's python3 runs sfumato.py: the path set-up must find our copies, not the host's, up to ``import gi``."""
    target = installer.install_into(tmp_path / "plug-ins")
    fake_gi = tmp_path / "fake" / "gi"
    fake_gi.mkdir(parents=True)
    (fake_gi / "__init__.py").write_text(
        "import sys, msgpack, websockets, sfumato.protocol\n"
        "mods = (msgpack, websockets, sfumato.protocol, sys.modules['sfumato.plugin.gimp'])\n"
        "print(*(m.__file__ for m in mods))\n"
        "raise SystemExit(0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(tmp_path / "fake")  # -S: no site-packages, so no host msgpack/websockets either
    res = subprocess.run([sys.executable, "-S", str(target / "sfumato.py")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    paths = res.stdout.split()
    assert len(paths) == 4 and all(p.startswith(str(target / "lib")) for p in paths), paths


def test_zip_holds_the_plugin_folder_with_an_executable_entry(tmp_path: Path) -> None:
    out = installer.build_zip(tmp_path / "sfumato-gimp.zip")
    zf = zipfile.ZipFile(out)
    names = set(zf.namelist())
    for required in (
        "sfumato/sfumato.py",
        "sfumato/lib/sfumato/plugin/gimp/document.py",
        "sfumato/lib/sfumato/plugin/core/controller.py",
        "sfumato/lib/vendor/msgpack/__init__.py",
    ):
        assert required in names, required
    assert (zf.getinfo("sfumato/sfumato.py").external_attr >> 16) & stat.S_IXUSR
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc")) or "backend" in n or "__pycache__" in n]
