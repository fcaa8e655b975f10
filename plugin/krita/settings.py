"""Settings kept in Krita's own settings (kritarc, group [sfumato])."""

from __future__ import annotations

from dataclasses import dataclass, fields

from krita import Krita

from sfumato.plugin.core.settings import EditorSettings
from sfumato.protocol import DEFAULT_PREVIEWS_PER_SECOND

GROUP = "sfumato"


@dataclass
class Settings(EditorSettings):
    previews_per_second: float = DEFAULT_PREVIEWS_PER_SECOND

    @classmethod
    def load(cls) -> Settings:
        app = Krita.instance()
        values = {}
        for f in fields(cls):
            raw = app.readSetting(GROUP, f.name, "")
            if raw == "":
                continue
            try:
                values[f.name] = type(getattr(cls(), f.name))(raw)
            except ValueError:
                pass
        return cls(**values)

    def save(self) -> None:
        app = Krita.instance()
        for f in fields(self):
            app.writeSetting(GROUP, f.name, str(getattr(self, f.name)))
