"""The valid frames every mutation starts from, built once from the protocol's own messages."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack

from sfumato.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Control,
    GetStatus,
    Hello,
    Image,
    InpaintOptions,
    Point,
    PreviewSettings,
    Rect,
    Submit,
    encode,
)
from sfumato.protocol.examples import examples

from .bodies import all_paths, get_path


class Seeds:
    """Valid frames (as msgpack maps) the mutations start from; built once."""

    def __init__(self) -> None:
        rgba = Image(width=8, height=8, format="rgba8", data=bytes(range(256)))
        mask = Image(width=8, height=8, format="gray8", data=bytes([0] * 32 + [255] * 32))
        base: dict[str, Any] = {"model": "builtin:tiny", "steps": 2, "strength": 0.5, "seed": 7, "prompt": "fuzz"}
        submits = {
            "img2img": Submit(job_id="s", task="img2img", image=rgba, **base),
            "inpaint": Submit(
                job_id="s",
                task="inpaint",
                image=rgba,
                mask=mask,
                origin=Point(x=16, y=8),
                context=Rect(x=16, y=8, w=8, h=8),
                result=Rect(x=16, y=12, w=8, h=4),
                inpaint=InpaintOptions(grow=1, feather=2, blend=1, fill="blur"),
                preview=PreviewSettings(enabled=True, max_per_second=4.0, max_size=16),
                **base,
            ),
            "controlnet": Submit(
                job_id="s",
                task="img2img",
                image=rgba,
                controls=(Control(type="canny", image=rgba, strength=0.8, start=0.0, end=0.9),),
                **base,
            ),
            "rgba16": Submit(
                job_id="s",
                task="img2img",
                image=Image(width=4, height=4, format="rgba16", data=bytes(128)),
                **base,
            ),
            "rgbaf32": Submit(
                job_id="s",
                task="img2img",
                image=Image(width=2, height=2, format="rgbaf32", data=bytes(64)),
                **base,
            ),
        }
        self.submits: dict[str, dict[str, Any]] = {k: msgpack.unpackb(encode(m)) for k, m in submits.items()}
        self.submits["zlib"] = msgpack.unpackb(encode(submits["img2img"], compress=True))
        self.paths = {k: all_paths(v) for k, v in self.submits.items()}
        self.numeric = {
            k: [p for p in v if type(get_path(self.submits[k], p)) in (int, float)] for k, v in self.paths.items()
        }
        self.hello: dict[str, Any] = msgpack.unpackb(encode(Hello(version=PROTOCOL_VERSION, client="x", kind="test")))
        self.hello_paths = all_paths(self.hello)
        self.valid: dict[str, dict[str, Any]] = {
            **{f"submit/{k}": v for k, v in self.submits.items()},
            "cancel": msgpack.unpackb(encode(Cancel(job_id="s"))),
            "get_status": msgpack.unpackb(encode(GetStatus())),
            "hello": self.hello,
        }
        client_types = {"submit", "cancel", "get_status"}
        self.wrong = {k: msgpack.unpackb(encode(m)) for k, m in examples().items() if k not in client_types}
        self.control = msgpack.unpackb(encode(submits["controlnet"]))["controls"][0]
        bomb = zlib.compressobj(9)
        self.bomb = b"".join(bomb.compress(bytes(16 << 20)) for _ in range(16)) + bomb.flush()  # 256 MiB of zeros
