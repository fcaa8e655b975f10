"""Settings kept in Krita's own settings (kritarc, group [sfumato])."""

from __future__ import annotations

from dataclasses import dataclass, fields

from krita import Krita

GROUP = "sfumato"


@dataclass
class Settings:
    server_url: str = "ws://127.0.0.1:7860"
    token: str = ""
    model: str = "builtin:tiny"
    strength: float = 0.6
    steps: int = 20
    guidance: float = 7.0
    scheduler: str = "euler_a"
    batch_size: int = 1
    negative_prompt: str = ""
    previews_per_second: float = 4.0

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
