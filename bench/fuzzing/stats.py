"""The tallies all fuzz connections add to, per strategy, that the summary reports."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One strategy's frames: each that needs a reply ends answered, unanswered, or lost with a killed connection."""

    sent: int = 0
    need_reply: int = 0
    answered: int = 0
    unanswered: int = 0
    lost: int = 0
    kills: int = 0
    killers: Counter[str] = field(default_factory=Counter)


@dataclass
class Stats:
    """Shared by every connection (one event loop, so no locks): the summary reads only this."""

    rows: dict[str, Row] = field(default_factory=lambda: defaultdict(Row))
    replies: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    handshake: Counter[str] = field(default_factory=Counter)
    handshake_crashes: Counter[str] = field(default_factory=Counter)
    kills: list[dict[str, Any]] = field(default_factory=list)
    decoder_raised: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
