"""Sfumato inside Krita: the only package that imports ``krita`` or Qt.

Krita loads ``pykrita/sfumato/__init__.py`` (written by install/krita.py), which calls :func:`register`.
"""

from __future__ import annotations


def register() -> None:
    from .extension import register as _register

    _register()
