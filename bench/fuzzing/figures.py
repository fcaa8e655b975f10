"""Turning measurements into figures: percentiles, milliseconds, and strict JSON (no NaN)."""

from __future__ import annotations

from typing import Any


def pctl(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.0f} ms"


def finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
