"""What an editor remembers between sessions: the same fields and defaults in every editor.

Each editor keeps them in its own place (Krita's kritarc, GIMP's user folder); only the storage differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfumato.protocol import DEFAULT_GUIDANCE, DEFAULT_MODEL, DEFAULT_SCHEDULER, DEFAULT_STEPS, DEFAULT_STRENGTH

DEFAULT_SERVER = "ws://127.0.0.1:7860"  # the backend's default host and port


@dataclass
class EditorSettings:
    server_url: str = DEFAULT_SERVER
    token: str = ""
    model: str = DEFAULT_MODEL
    strength: float = DEFAULT_STRENGTH
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    batch_size: int = 1
    negative_prompt: str = ""
