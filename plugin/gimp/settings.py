"""The window's settings, kept as JSON in GIMP's own user folder (``sfumato.json`` next to gimprc)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sfumato.plugin.core.settings import EditorSettings

FILE_NAME = "sfumato.json"


@dataclass
class Settings(EditorSettings):
    @classmethod
    def load(cls, folder: Path) -> Settings:
        """Whatever is readable; a missing, broken or older file gives the defaults for what it lacks."""
        try:
            raw = json.loads((folder / FILE_NAME).read_text())
        except (OSError, ValueError):
            return cls()
        values = {}
        for f in fields(cls):
            default = getattr(cls(), f.name)
            value = raw.get(f.name) if isinstance(raw, dict) else None
            if isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int)):
                values[f.name] = type(default)(value)
        return cls(**values)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (FILE_NAME + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, folder / FILE_NAME)
