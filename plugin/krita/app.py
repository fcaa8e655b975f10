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
from .document import KritaDocument, UnsupportedDocument, active_document, check_supported
from .live import KritaLive
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
        self.live: KritaLive | None = None  # while the docker's Live toggle is on (and until Apply)
        self.connect()

    def connect(self) -> None:
        self.stop_live()  # its jobs belonged to the connection being replaced
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

    def _start(self, action: Callable[[Controller, KritaDocument], Submit | None]) -> Submit | None:
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

    def start_live(self, params: Callable[[], GenerationParams]) -> bool:
        """Live on for the active document: each change of its active layer paints a new live picture."""

        def start(ctl: Controller, doc: KritaDocument) -> None:
            self.stop_live()
            self.live = None
            check_supported(doc.doc, "document")  # refused now, in words, rather than from the timer
            self.live = KritaLive(ctl, doc, params, self._live_failed)
            self._changed()

        self._start(start)
        return self.live is not None

    def stop_live(self) -> None:
        if self.live is not None:
            self.live.stop()

    def apply_live(self) -> str | None:
        """The newest live picture becomes a real layer; its name (None: no picture yet)."""
        name = self.live.apply() if self.live is not None else None
        self._changed()
        return name

    def _live_failed(self, message: str) -> None:
        self.last_error = message
        self._changed()

    def cancel(self) -> list[str]:
        return self.controller.cancel() if self.controller is not None else []

    @property
    def connection(self) -> ConnectionChanged:
        return self.controller.connection if self.controller is not None else ConnectionChanged("disconnected")
