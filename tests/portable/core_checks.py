"""plugin.core against a real backend, with only the standard library, msgpack and websockets.

Run as ``python tests/portable/core_checks.py ws://127.0.0.1:PORT`` on Python 3.10+ (Krita's
situation); tests/plugin/test_py310.py runs it in a python3.10 virtualenv.
"""

from __future__ import annotations

import asyncio
import sys

from sfumato.plugin.core.client import Client
from sfumato.plugin.core.controller import Controller
from sfumato.plugin.core.live import LivePainting, fast_params
from sfumato.plugin.core.requests import GenerationParams
from sfumato.plugin.core.transport import WebSocketTransport
from sfumato.protocol import Image, Rect, Result, reference_size


class ListDocument:
    """A 64×64 document in plain bytes with a rectangular hard selection."""

    def __init__(self, selection: Rect | None) -> None:
        self.size = 64
        self.pixels = bytes((x * 3 + y) % 256 if c < 3 else 255 for y in range(64) for x in range(64) for c in range(4))
        self.selection = selection
        self.layers: list[tuple[Image, Rect, str]] = []
        self.reads: list[Rect] = []

    def is_open(self) -> bool:
        return True

    def title(self) -> str:
        return "list"

    def canvas(self) -> Rect:
        return Rect(x=0, y=0, w=64, h=64)

    def selection_bounds(self) -> Rect | None:
        return self.selection

    def read_layer(self, rect: Rect, layer: str | None = None) -> Image:
        self.reads.append(rect)
        rows = [
            self.pixels[((rect.y + j) * 64 + rect.x) * 4 : ((rect.y + j) * 64 + rect.right) * 4] for j in range(rect.h)
        ]
        return Image(width=rect.w, height=rect.h, format="rgba8", data=b"".join(rows))

    def read_selection(self, rect: Rect) -> Image:
        s = self.selection
        assert s is not None
        data = bytes(
            255 if s.x <= rect.x + i < s.right and s.y <= rect.y + j < s.bottom else 0
            for j in range(rect.h)
            for i in range(rect.w)
        )
        return Image(width=rect.w, height=rect.h, format="gray8", data=data)

    def show_preview(self, image: Image, rect: Rect) -> None:
        pass

    def clear_preview(self) -> None:
        pass

    def insert_result(self, image: Image, rect: Rect, name: str) -> None:
        self.layers.append((image, rect, name))


async def run(url: str) -> None:
    done = asyncio.Event()
    events: list[object] = []

    def listener(event: object, job: object) -> None:
        events.append(event)
        controller.handle(event, job)
        if isinstance(event, Result):
            done.set()

    client = Client(lambda: WebSocketTransport.connect(url), "core-checks", "test", listener=listener)
    controller = Controller(client, lambda coro: asyncio.ensure_future(coro))
    task = asyncio.ensure_future(client.run())
    welcome = await client.wait_connected(30)
    assert any(m.id == "builtin:tiny" for m in welcome.models)
    doc = ListDocument(Rect(x=20, y=24, w=16, h=12))
    controller.generate(doc, GenerationParams(prompt="x", strength=1.0, steps=4, seed=5))
    await asyncio.wait_for(done.wait(), 120)
    ((image, rect, name),) = doc.layers
    assert rect == Rect(x=20, y=24, w=16, h=12), rect
    assert name == "x [seed 5]", name
    assert all(r.w < 64 or r.h < 64 for r in doc.reads), "only the context around the selection is read"
    alpha = image.data[3::4]
    assert max(alpha) == 255 and len(alpha) == 16 * 12
    # live painting (plugin/core/live.py): a live job's picture is kept as a preview until Apply
    done.clear()
    doc.selection = None
    live = LivePainting(controller, doc, lambda: GenerationParams(prompt="live", strength=0.5, seed=3), 0.0)
    live.changed(0.0)
    sent = live.tick(0.0)
    assert sent is not None and sent.live and sent.steps == fast_params(GenerationParams(), ()).steps
    await asyncio.wait_for(done.wait(), 120)
    assert live.picture is not None and live.picture.job_id == sent.job_id and len(doc.layers) == 1
    assert live.apply() == "live [seed 3]" and len(doc.layers) == 2
    await client.close()
    await task
    references()
    print(f"core checks passed on Python {sys.version.split()[0]}")


def references() -> None:
    """A reference layer is scaled down before it travels, in pure Python (no numpy in an editor)."""
    from sfumato.plugin.core.references import ReferenceSpec, reference_for, shrink

    layer = Image(width=500, height=300, format="rgba8", data=bytes(range(250)) * 2400)
    small = shrink(layer, *reference_size(500, 300))
    assert (small.width, small.height) == (373, 224) and len(small.data) == 373 * 224 * 4
    ref = reference_for(ListDocument(None), ReferenceSpec(weight=0.5, mode="full"), Rect(x=0, y=0, w=64, h=64))
    assert (ref.image.width, ref.weight, ref.mode) == (64, 0.5, "full")


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
