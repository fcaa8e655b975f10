"""Image transfer: a 4096² RGBA layer plus an 8-bit mask, editor → backend, over real loopback sockets.

Three ways, measured in the same run (the machine is shared; only the ratios are meaningful):

* sfumato – a protocol ``submit`` over a websocket, sent by an editor's ClientConnection and
  received, decoded and validated by a backend's ServerConnection (since 1.2 the pixels travel as
  buffer frames of their own: no copy into or out of msgpack; since 1.7 cut into 1 MiB chunks);
  the same with a 1.6 peer (one frame per buffer) and a 1.1 peer (one frame per message) beside it;
* a1111   – PNG + base64 inside JSON over the same websocket transport (how AUTOMATIC1111's API and
  the plugins built on it move images);
* raw     – the same bytes copied over a plain loopback TCP socket with asyncio streams, written and
  read 1 MiB at a time and joined at the end (the floor: a single 80 MiB read is 3× slower).

Each trip ends when the receiver has the decoded pixels and its small acknowledgement is back.

    python bench/transfer.py [--size 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import struct
import time

import numpy as np
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from sfumato.protocol import (
    PROTOCOL_VERSION,
    ClientConnection,
    DecodeLimits,
    Image,
    Limits,
    ServerConnection,
    Submit,
)

RAW_CHUNK = 1 << 20
LIMITS = DecodeLimits(max_message_bytes=1 << 30, max_pixels=1 << 26)
WELCOME_LIMITS = Limits(
    max_message_bytes=1 << 30, max_pixels=1 << 26, max_batch=1, max_queued_per_editor=1, max_controls=0
)


def painting(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Something like a painted layer: smooth gradients, strokes and a little noise (PNG-friendly, not random)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgba = np.empty((size, size, 4), np.uint8)
    rgba[..., 0] = (128 + 100 * np.sin(6 * x + 3 * y)).astype(np.uint8)
    rgba[..., 1] = (128 + 100 * np.cos(5 * y - 2 * x)).astype(np.uint8)
    rgba[..., 2] = (255 * x * y).astype(np.uint8)
    rgba[..., :3] += rng.integers(0, 6, (size, size, 3), dtype=np.uint8)
    rgba[..., 3] = 255
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : size // 2, size // 3 : 2 * size // 3] = 255
    return rgba, mask


async def sfumato_trip(url: str, submit: Submit, minor: int) -> float:
    async with connect(url, max_size=None, compression=None) as ws:
        editor = ClientConnection("bench", version=(PROTOCOL_VERSION[0], minor))
        for frame in editor.hello():
            await ws.send(frame)
        while editor.welcome is None:
            editor.receive(await ws.recv())
        t = time.perf_counter()
        for frame in editor.send(submit):
            await ws.send(frame)
        await ws.recv()
        return time.perf_counter() - t


async def a1111_trip(url: str, rgba: np.ndarray, mask: np.ndarray) -> float:
    from PIL import Image as PILImage

    async with connect(url, max_size=None, compression=None) as ws:
        t = time.perf_counter()
        payload = {}
        for key, arr, mode in (("init_images", rgba, "RGBA"), ("mask", mask, "L")):
            buf = io.BytesIO()
            PILImage.fromarray(arr, mode=mode).save(buf, format="PNG")
            payload[key] = base64.b64encode(buf.getvalue()).decode()
        payload |= {"prompt": "a red fox", "denoising_strength": 0.75, "steps": 24}
        await ws.send(json.dumps(payload))
        await ws.recv()
        return time.perf_counter() - t


async def raw_trip(port: int, blob: bytes) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t = time.perf_counter()
    writer.write(struct.pack("<Q", len(blob)))
    view = memoryview(blob)
    for i in range(0, len(blob), RAW_CHUNK):
        writer.write(view[i : i + RAW_CHUNK])
        await writer.drain()
    await reader.readexactly(1)
    elapsed = time.perf_counter() - t
    writer.close()
    await writer.wait_closed()
    return elapsed


async def main(size: int, repeats: int) -> dict[str, float]:
    from PIL import Image as PILImage

    rgba, mask = painting(size)
    image = Image(width=size, height=size, format="rgba8", data=rgba.tobytes())
    mask_img = Image(width=size, height=size, format="gray8", data=mask.tobytes())
    submit = Submit(
        job_id="bench",
        task="inpaint",
        model="builtin:tiny",
        image=image,
        mask=mask_img,
        prompt="a red fox",
        strength=0.75,
    )

    async def ws_handler(ws: object) -> None:
        backend = ServerConnection(LIMITS, "bench", ())
        async for frame in ws:  # type: ignore[attr-defined]
            if isinstance(frame, bytes):
                event = backend.receive(frame)  # full validation, pixels ready to use
                if event is None:  # buffer frames still due
                    continue
                if not isinstance(event, Submit):  # the hello
                    for reply in backend.welcome("bench", False, WELCOME_LIMITS, (), "cpu"):
                        await ws.send(reply)  # type: ignore[attr-defined]
                    continue
                assert len(event.image.data) == size * size * 4
            else:
                body = json.loads(frame)
                img = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(body["init_images"]))))
                m = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(body["mask"]))))
                assert img.shape == (size, size, 4) and m.shape == (size, size)
            await ws.send(b"ok")  # type: ignore[attr-defined]

    async def raw_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (n,) = struct.unpack("<Q", await reader.readexactly(8))
        chunks, got = [], 0
        while got < n:
            chunks.append(await reader.readexactly(min(RAW_CHUNK, n - got)))  # (read() would spin at EOF)
            got += len(chunks[-1])
        data = b"".join(chunks)
        assert len(data) == n
        writer.write(b"k")
        await writer.drain()
        writer.close()

    blob = image.data + mask_img.data
    async with serve(ws_handler, "127.0.0.1", 0, max_size=None, compression=None) as ws_server:
        url = f"ws://127.0.0.1:{next(iter(ws_server.sockets)).getsockname()[1]}"
        raw_server = await asyncio.start_server(raw_handler, "127.0.0.1", 0)
        raw_port = raw_server.sockets[0].getsockname()[1]
        times: dict[str, list[float]] = {"sfumato": [], "sfumato 1.6": [], "sfumato 1.1": [], "a1111": [], "raw": []}
        for _ in range(repeats):  # interleaved, so load on the machine hits all of them alike
            times["raw"].append(await raw_trip(raw_port, blob))
            times["sfumato"].append(await sfumato_trip(url, submit, PROTOCOL_VERSION[1]))
            times["sfumato 1.6"].append(await sfumato_trip(url, submit, 6))  # a 1.6 peer: a frame per buffer
            times["sfumato 1.1"].append(await sfumato_trip(url, submit, 1))  # a 1.1 peer: one frame
            times["a1111"].append(await a1111_trip(url, rgba, mask))
        raw_server.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    mib = len(blob) / 2**20
    print(f"{size}×{size} RGBA8 + 8-bit mask = {mib:.0f} MiB, median of {repeats} interleaved trips")
    for k in ("sfumato", "sfumato 1.6", "sfumato 1.1", "a1111", "raw"):
        print(f"  {k:11s} {med[k] * 1000:9.1f} ms   ({mib / med[k]:7.0f} MiB/s)")
    print(f"  a1111 / sfumato = {med['a1111'] / med['sfumato']:.1f}×   (goal ≥ 50×)")
    print(f"  sfumato / raw   = {med['sfumato'] / med['raw']:.2f}×   (goal ≤ 1.5×)")
    print(f"  1.6 a frame per buffer / raw = {med['sfumato 1.6'] / med['raw']:.2f}×   (before chunks)")
    print(f"  1.1 single frame / raw = {med['sfumato 1.1'] / med['raw']:.2f}×   (before buffer frames)")
    return med


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main(a.size, a.repeats))
