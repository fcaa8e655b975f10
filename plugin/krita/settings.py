"""Settings kept in Krita's own settings (kritarc, group [sfumato])."""

from __future__ import annotations

from dataclasses import dataclass, fields

from krita import Krita

from sfumato.protocol import (
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_PREVIEWS_PER_SECOND,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
)

GROUP = "sfumato"


@dataclass
class Settings:
    server_url: str = "ws://127.0.0.1:7860"
    token: str = ""
    model: str = DEFAULT_MODEL
    strength: float = DEFAULT_STRENGTH
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    batch_size: int = 1
    negative_prompt: str = ""
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
