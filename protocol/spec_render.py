"""Render the field tables and examples of SPEC.md from the code, so the spec cannot drift.

``python -m sfumato.protocol.spec_render`` prints the generated part; tests/protocol/test_spec.py
checks that SPEC.md contains it verbatim.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from .examples import examples
from .images import Image
from .messages import (
    ALL_MESSAGES,
    CLIENT_MESSAGES,
    Control,
    DeviceStatus,
    InpaintOptions,
    Limits,
    LoraWeight,
    ModelInfo,
    PreviewSettings,
    Reference,
    UpscaleOptions,
)
from .regions import Point, Rect
from .schema import Record


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        d = f.default
        if isinstance(d, Record):
            return "all defaults"
        return "nil" if d is None else json.dumps(d if not isinstance(d, tuple) else list(d), ensure_ascii=False)
    if f.default_factory is not dataclasses.MISSING:
        return "{}"
    return "required"


def table(cls: type[Record]) -> str:
    rows = ["| field | type and range | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        kind = f.metadata["wire"]
        rows.append(f"| `{f.name}` | {kind.doc} | {_default(f)} | {f.metadata.get('doc', '')} |")
    return "\n".join(rows)


def _jsonish(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<bin, {len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonish(v) for v in value]
    return value


def example(name: str) -> str:
    msg = examples()[name]
    body = {"type": msg.TYPE, **msg.dump()}
    text = json.dumps(_jsonish(body), indent=2, ensure_ascii=False)
    text = re.sub(
        r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text
    )
    return "```json\n" + text + "\n```"


def render() -> str:
    parts = []
    for cls in ALL_MESSAGES:
        direction = "editor → backend" if cls in CLIENT_MESSAGES else "backend → editor"
        raw = (cls.__doc__ or "").strip()
        doc = "" if raw.startswith(cls.__name__ + "(") else " ".join(raw.split())
        intro = f"\n\n{doc}" if doc else ""
        parts.append(f"### `{cls.TYPE}` ({direction}){intro}\n\n{table(cls)}\n\nExample:\n\n{example(cls.TYPE)}\n")
    parts.append("## Nested records\n")
    nested: tuple[type[Record], ...] = (
        Point,
        Rect,
        Limits,
        ModelInfo,
        Control,
        LoraWeight,
        PreviewSettings,
        InpaintOptions,
        UpscaleOptions,
        Reference,
        DeviceStatus,
    )
    for rec in nested:
        parts.append(f"### {rec.__name__}\n\n{table(rec)}\n")
    parts.append(
        "### Image\n\n| key | type | meaning |\n|---|---|---|\n"
        "| `w` | integer, 1..65535 | width, px |\n| `h` | integer, 1..65535 | height, px |\n"
        "| `fmt` | one of 'rgba8', 'gray8', 'rgba16', 'rgbaf32' | pixel format |\n"
        "| `enc` | one of 'raw', 'zlib' (default 'raw') | payload encoding |\n"
        "| `data` | bin | w × h × bytes-per-pixel bytes (after inflating, for zlib) |\n"
        "| `buf` | integer (since 1.2, instead of `data`) | index of the buffer frame holding the payload |\n"
        "| `linear` | boolean (default false, since 1.1) | RGB samples are linear light, not sRGB-encoded |\n"
    )
    _ = Image
    return "\n".join(parts)


if __name__ == "__main__":
    print(render())
