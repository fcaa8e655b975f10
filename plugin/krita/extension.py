"""Registration with Krita: the docker factory, the Generate/Cancel actions with shortcuts, the test hook."""

from __future__ import annotations

from typing import Any

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from .qt import QtGui

ACTIONS = {
    # id: (text, default shortcut)
    "sfumato_generate": ("Sfumato: Generate", "Ctrl+Alt+G"),
    "sfumato_cancel": ("Sfumato: Cancel", "Ctrl+Alt+X"),
}


def find_docker() -> Any:
    from .docker import SfumatoDocker

    for d in Krita.instance().dockers():
        if isinstance(d, SfumatoDocker) or d.objectName() == "sfumato_docker":
            return d
    return None


class SfumatoExtension(Extension):
    def __init__(self, parent: Any) -> None:
        super().__init__(parent)

    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:
        for action_id, (text, shortcut) in ACTIONS.items():
            action = window.createAction(action_id, text, "tools/scripts")
            action.setShortcut(QtGui.QKeySequence(shortcut))
            action.triggered.connect(self._generate if action_id == "sfumato_generate" else self._cancel)

    def _generate(self) -> None:
        docker = find_docker()
        if docker is not None:
            docker.generate()

    def _cancel(self) -> None:
        from .app import SfumatoApp

        SfumatoApp.get().cancel()


def register() -> None:
    from .docker import SfumatoDocker

    app = Krita.instance()
    app.addDockWidgetFactory(
        DockWidgetFactory("sfumato_docker", DockWidgetFactoryBase.DockPosition.DockRight, SfumatoDocker)
    )
    app.addExtension(SfumatoExtension(app))
