"""The one place that imports Qt: PyQt5 for Krita 5, PyQt6 for Krita 6."""

from __future__ import annotations

try:
    from PyQt5 import QtCore, QtGui, QtWidgets
    from PyQt5.QtCore import QObject, Qt, QTimer, pyqtSignal, pyqtSlot

    QT_API = "PyQt5"
except ImportError:  # pragma: no cover - Krita 6
    from PyQt6 import QtCore, QtGui, QtWidgets
    from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal, pyqtSlot

    QT_API = "PyQt6"

__all__ = ["QT_API", "QObject", "QTimer", "Qt", "QtCore", "QtGui", "QtWidgets", "pyqtSignal", "pyqtSlot"]
