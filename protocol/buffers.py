"""Since 1.2: large image payloads travel as their own binary frames after the message's header frame.

The header is the usual msgpack map with a ``buffers`` key listing the byte size of each buffer
frame that follows, in order; an image map whose payload was moved out has ``buf`` (the index of
its buffer) instead of ``data``. Pixels are then never copied into (or out of) a msgpack frame.

Since 1.7 a buffer may travel as several frames (*chunks*, in order, each non-empty, adding up to
its declared size): a websocket stack moves a few MiB at a time far faster than one huge frame,
which it copies whole at every stage (masking, framing, reassembly) — bench/transfer.py.

These helpers work on unpacked maps (no msgpack here); codec.py packs and unpacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .errors import InvalidMessage, LimitExceeded
from .images import BYTES_PER_PIXEL
from .limits import DecodeLimits
from .schema import describe

BUFFERS = "buffers"  # header key: byte sizes of the buffer frames that follow
REF = "buf"  # image key: index of the buffer frame holding this image's data
MIN_BUFFER_BYTES = 64 << 10  # smaller payloads stay inline: a frame costs more than copying them
BUFFERS_SINCE = (1, 2)  # the version both sides must speak
CHUNKS_SINCE = (1, 7)  # a buffer may span several frames
CHUNK_BYTES = 1 << 20  # where the reference sender cuts a buffer (1–4 MiB measure alike; 64 MiB is 6× slower)
MIN_CHUNK_BYTES = MIN_BUFFER_BYTES  # every chunk but a buffer's last: tiny chunks would cost more memory than data
MAX_BUFFERS = 256  # a submit has at most 2 + max_controls images, a result max_batch

Frame = bytes | memoryview


def split(wire_map: dict[str, Any]) -> tuple[dict[str, Any], list[memoryview]]:
    """Move every image payload of at least MIN_BUFFER_BYTES out of a dumped message (no bytes copied)."""
    buffers: list[memoryview] = []

    def visit(value: Any) -> Any:
        if isinstance(value, dict):
            data = value.get("data")
            if "fmt" in value and isinstance(data, (bytes, bytearray, memoryview)) and len(data) >= MIN_BUFFER_BYTES:
                buffers.append(memoryview(data))
                return {**{k: v for k, v in value.items() if k != "data"}, REF: len(buffers) - 1}
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, list):
            return [visit(v) for v in value]
        return value

    header = visit(wire_map)
    if buffers:
        header[BUFFERS] = [len(b) for b in buffers]
    return header, buffers


def chunked(buffers: Sequence[memoryview], chunk_bytes: int = CHUNK_BYTES) -> list[memoryview]:
    """Each buffer as consecutive frames of at most ``chunk_bytes`` (slices: no bytes copied)."""
    frames: list[memoryview] = []
    for buffer in buffers:
        frames += [buffer[i : i + chunk_bytes] for i in range(0, len(buffer), chunk_bytes)] or [buffer]
    return frames


def sizes(body: dict[str, Any], frame_bytes: int, limits: DecodeLimits, path: str) -> tuple[int, ...]:
    """The buffer sizes a header declares; the header plus its buffers must fit in ``max_message_bytes``."""
    declared = body.get(BUFFERS)
    if declared is None:
        return ()
    where = f"{path}.{BUFFERS}"
    if not isinstance(declared, list) or not 0 < len(declared) <= MAX_BUFFERS:
        raise InvalidMessage(f"expected a list of 1..{MAX_BUFFERS} byte sizes, got {describe(declared)}", where)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in declared):
        raise InvalidMessage("expected byte sizes (integers ≥ 0)", where)
    total = frame_bytes + sum(declared)
    if total > limits.max_message_bytes:
        raise LimitExceeded(f"expected at most {limits.max_message_bytes} bytes with the buffers, got {total}", where)
    return tuple(declared)


def check_references(body: dict[str, Any], declared: tuple[int, ...], path: str) -> None:
    """Every buffer is referenced by exactly one image, and a raw image's buffer holds exactly its pixels."""
    used: set[int] = set()
    for image_path, image in _references(body, path):
        index = image[REF]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(declared) or index in used:
            hi = f"0..{len(declared) - 1}" if declared else "none (no buffers declared)"
            raise InvalidMessage(f"expected a buffer index in {hi}, used once, got {describe(index)}", image_path)
        used.add(index)
        if image.get("data") is not None:
            raise InvalidMessage("expected either data or a buffer index, got both", image_path)
        expected = _raw_bytes(image)
        if expected is not None and declared[index] != expected:
            raise InvalidMessage(f"expected a buffer of {expected} bytes, got one of {declared[index]}", image_path)
    if len(used) != len(declared):
        raise InvalidMessage(
            f"expected every buffer to be used, got {len(declared) - len(used)} unused", f"{path}.{BUFFERS}"
        )


def attach(body: dict[str, Any], buffers: Sequence[bytes]) -> None:
    """Put each received buffer where its image refers to it (the bytes themselves, not a copy)."""
    for _, image in _references(body, ""):
        image["data"] = buffers[image.pop(REF)]


def _references(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, image map) for every map with a buffer reference, walking at most the frame's structure."""
    if isinstance(value, dict):
        if REF in value:
            yield path, value
            return
        for key, item in value.items():
            yield from _references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _references(item, f"{path}[{i}]")


def _raw_bytes(image: dict[str, Any]) -> int | None:
    """w × h × bytes-per-pixel of an uncompressed image map, when its header is well-formed."""
    w, h, fmt, enc = image.get("w"), image.get("h"), image.get("fmt"), image.get("enc")
    if enc not in (None, "raw") or fmt not in BYTES_PER_PIXEL or not isinstance(w, int) or not isinstance(h, int):
        return None
    return w * h * BYTES_PER_PIXEL[fmt]
