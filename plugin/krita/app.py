"""One Sfumato per Krita instance: the connection, the controller, and the dockers that show them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sfumato.plugin.core.client import ConnectionChanged
from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.expand import Margins
from sfumato.plugin.core.jobs import TrackedJob
from sfumato.plugin.core.requests import GenerationParams
from sfumato.protocol import Submit

from .bridge import Bridge
from .document import KritaDocument, UnsupportedDocument, active_document
from .settings import Settings

log = logging.getLogger(__name__)


class SfumatoApp:
    _instance: SfumatoApp | None = None

    @classmethod
    def get(cls) -> SfumatoApp:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self) -> None:
        self.settings = Settings.load()
        self.bridge = Bridge()
        self.bridge.event.connect(self._on_event)
        self.controller: Controller | None = None
        self.views: list[Callable[[], None]] = []
        self.last_error = ""
        self.connect()

    def connect(self) -> None:
        client = self.bridge.start(self.settings.server_url, self.settings.token)
        self.controller = Controller(client, self.bridge.schedule, self._changed, job_prefix="krita")

    def _on_event(self, event: Any, job: TrackedJob | None) -> None:  # GUI thread
        if self.controller is not None:
            self.controller.handle(event, job)

    def _changed(self) -> None:
        for refresh in list(self.views):
            try:
                refresh()
            except RuntimeError:  # a docker whose widgets Qt already deleted
                self.views.remove(refresh)

    # ------------------------------------------------------------------ actions

    def generate(self, params: GenerationParams) -> Submit | None:
        return self._start(lambda ctl, doc: ctl.generate(doc, params))

    def expand(self, params: GenerationParams, margins: Margins) -> Submit | None:
        """Image ▸ Canvas Size by ``margins`` (one undo step), then fill the new border (another)."""
        return self._start(lambda ctl, doc: ctl.expand(doc, params, margins))

    def upscale(self, params: GenerationParams, factor: int, upscaler: str | None, strength: float) -> Submit | None:
        """The active layer enlarged ×``factor`` into a new document."""
        return self._start(lambda ctl, doc: ctl.upscale(doc, params, factor, upscaler, strength))

    def _start(self, action: Callable[[Controller, KritaDocument], Submit]) -> Submit | None:
        doc = active_document()
        self.last_error = ""
        if doc is None:
            self.last_error = "Open a document first."
        elif self.controller is None or self.controller.connection.state != "connected":
            self.last_error = "Not connected to the Sfumato backend: start it with ./install/start."
        else:
            try:
                return action(self.controller, doc)
            except (UnsupportedDocument, ValueError) as exc:
                self.last_error = str(exc)
            except Exception as exc:  # plain words in the docker rather than Krita's modal dialog
                log.exception("generate failed")
                self.last_error = f"Could not start: {exc}"
        self._changed()
        return None

    def cancel(self) -> list[str]:
        return self.controller.cancel() if self.controller is not None else []

    @property
    def connection(self) -> ConnectionChanged:
        return self.controller.connection if self.controller is not None else ConnectionChanged("disconnected")
