"""Sfumato inside GIMP 3: the only package that imports ``gi`` (GIMP's GObject introspection).

GIMP runs ``plug-ins/sfumato/sfumato.py`` (written by install/gimp.py), which calls :func:`main`.
Modules that import ``gi`` are ``document``, ``glib``, ``plugin`` and ``window``; ``params``, ``settings``,
``formats``, ``bridge`` and ``job`` are pure Python, so they are tested on the host.
"""

from __future__ import annotations


def main() -> None:
    from .plugin import main as _main

    _main()
