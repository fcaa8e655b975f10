"""The fuzzed frames: the strategies and their mutations, one random stream per connection."""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from sfumato.protocol import Cancel, encode

from .bodies import get_path, pack, path_name, set_path
from .seeds import Seeds
from .values import EXTREME, ID_CHARS, NASTY, TYPES

STRATEGIES = {  # share of the frames
    "random": 0.15,
    "truncated": 0.15,
    "flipped": 0.20,
    "structure": 0.35,
    "wrong_type": 0.07,
    "cancel": 0.07,
    "handshake": 0.01,
}
SPLICE = "\x00@@splice@@\x00"
SPLICE_BYTES = msgpack.packb(SPLICE)


@dataclass
class Frame:
    """One fuzzed frame and its labels; ``expect`` is set for frames too costly for the fuzzer to decode itself."""

    data: bytes | str
    strategy: str
    mutation: str
    expect: tuple[str, str | None] | None = None  # (kind, job id) when the decoder should not be asked


class Generator:
    """The frames of one fuzz connection, from its own random stream (reproducible for a seed)."""

    def __init__(self, seeds: Seeds, seed: int, worker: int) -> None:
        self.s = seeds
        self.rng = random.Random(f"{seed}:{worker}")
        self.worker = worker
        self.n = 0
        self.used_ids: deque[str] = deque(maxlen=64)
        self.names = list(STRATEGIES)
        self.weights = list(STRATEGIES.values())
        self.structure: list[tuple[Callable[[dict[str, Any], str], tuple[str, bool]], float]] = [
            (self.m_set_value, 40),
            (self.m_extreme, 15),
            (self.m_drop, 5),
            (self.m_unknown_keys, 3),
            (self.m_type, 6),
            (self.m_newlines, 4),
            (self.m_long_strings, 3),
            (self.m_lying_image, 6),
            (self.m_zlib_lie, 5),
            (self.m_zlib_bomb, 0.3),
            (self.m_lists, 2),
            (self.m_nesting, 2),
            (self.m_empty_maps, 0.06),
            (self.m_reuse_id, 1),
            (self.m_utf8, 1),
        ]

    def job_id(self) -> str:
        jid = f"w{self.worker}-{self.n}"
        self.used_ids.append(jid)
        return jid

    def next(self) -> Frame:
        self.n += 1
        strategy = self.rng.choices(self.names, self.weights)[0]
        if strategy == "handshake":
            return self.handshake()
        return getattr(self, "g_" + strategy)()

    # ------------------------------------------------------------------ strategies

    def g_random(self) -> Frame:
        rng = self.rng
        r = rng.random()
        size = rng.randrange(1, 65) if r < 0.7 else rng.randrange(65, 1025) if r < 0.95 else rng.randrange(1025, 65537)
        kind = rng.random()
        if kind < 0.1:
            return Frame("".join(chr(rng.randrange(32, 0x2FF)) for _ in range(min(size, 512))), "random", "text frame")
        if kind < 0.3:
            head = bytes([0x80 + rng.randrange(1, 16)]) + b"\xa4type"
            return Frame(head + rng.randbytes(size), "random", "bytes after a map header")
        return Frame(rng.randbytes(size), "random", "random bytes")

    def valid_frame(self) -> tuple[str, bytearray]:
        name = self.rng.choice(list(self.s.valid))
        body = dict(self.s.valid[name])
        if "job_id" in body:
            body["job_id"] = self.job_id()
        return name, bytearray(pack(body))

    def g_truncated(self) -> Frame:
        name, data = self.valid_frame()
        return Frame(bytes(data[: self.rng.randrange(0, len(data))]), "truncated", f"truncated {name}")

    def g_flipped(self) -> Frame:
        name, data = self.valid_frame()
        flips = self.rng.randrange(1, 9)
        for _ in range(flips):
            i = self.rng.randrange(len(data))
            data[i] = self.rng.randrange(256) if self.rng.random() < 0.5 else data[i] ^ (1 << self.rng.randrange(8))
        return Frame(bytes(data), "flipped", f"flipped {name}")

    def g_wrong_type(self) -> Frame:
        rng = self.rng
        name = rng.choice([*self.s.wrong, "hello", "hello v2.0", "hello resume"])
        if name.startswith("hello"):
            body = dict(self.s.hello)
            if name == "hello v2.0":
                body["version"] = [2, 0]
            elif name == "hello resume":
                body["resume"] = "".join(rng.choice(ID_CHARS) for _ in range(32))
        else:
            body = dict(self.s.wrong[name])
            if "job_id" in body:
                body["job_id"] = self.job_id()
        return Frame(pack(body), "wrong_type", f"a client sends {name}")

    def g_cancel(self) -> Frame:
        rng = self.rng
        mode = rng.randrange(4)
        if mode == 0 or not self.used_ids:
            jid, label = "".join(rng.choice(ID_CHARS) for _ in range(rng.randrange(1, 65))), "random id"
        elif mode == 1:
            jid, label = rng.choice(self.used_ids), "an old id of this connection"
        elif mode == 2:
            jid, label = f"honest-{rng.randrange(0, 400)}", "another editor's job id"
        else:
            jid, label = "z" * 64, "64-character id"
        return Frame(encode(Cancel(job_id=jid)), "cancel", f"cancel {label}")

    def g_structure(self) -> Frame:
        rng = self.rng
        seed = rng.choice(list(self.s.submits))
        body = msgpack.unpackb(pack(self.s.submits[seed]))  # a deep copy
        body["job_id"] = self.job_id()
        fns = [f for f, _ in self.structure]
        mutate = rng.choices(fns, [w for _, w in self.structure])[0]
        label, heavy = mutate(body, seed)
        if isinstance(body.get("prompt"), bytes) and body["prompt"].startswith(b"\x00raw:"):
            data = pack({**body, "prompt": SPLICE}).replace(SPLICE_BYTES, body["prompt"][5:], 1)
        else:
            data = pack(body, single_float=label == "float32 numbers")
        expect = ("refuse", body["job_id"]) if heavy else None
        return Frame(data, "structure", label, expect)

    # ------------------------------------------------------------------ structure mutations

    def m_set_value(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        path = self.rng.choice(self.s.paths[seed])
        label, value = self.rng.choice(NASTY)
        set_path(body, path, value)
        return f"{path_name(path)} = {label}", False

    def m_extreme(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        if self.rng.random() < 0.05:
            return "float32 numbers", False
        path = self.rng.choice(self.s.numeric[seed])
        label, value = self.rng.choice(EXTREME)
        set_path(body, path, value)
        if path == ("strength",) and self.rng.random() < 0.5:
            body["steps"] = self.rng.choice([1, 20, 200])
            label += f", steps {body['steps']}"
        return f"{path_name(path)} = {label}", False

    def m_drop(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        path = self.rng.choice(self.s.paths[seed])
        parent = get_path(body, path[:-1])
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
        return f"drop {path_name(path)}", False

    def m_unknown_keys(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        for _ in range(self.rng.randrange(1, 20)):
            body[f"x-{self.rng.randrange(1 << 30)}"] = self.rng.choice(NASTY)[1]
        return "unknown keys", False

    def m_type(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        if self.rng.random() < 0.1:
            del body["type"]
            return "type missing", False
        label, value = self.rng.choice(TYPES)
        body["type"] = value
        return f"type = {label}", False

    def m_newlines(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        strings = [p for p in self.s.paths[seed] if isinstance(get_path(body, p), str)]
        path = self.rng.choice(strings)
        old = get_path(body, path)
        sep = self.rng.choice(["\n", "\r\n", "\u2028", "\x00", "\n\n\n"])
        set_path(body, path, self.rng.choice([old + sep, sep + old, sep.join(old) or sep]))
        return f"{path_name(path)} with {sep!r}", False

    def m_long_strings(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        key, n = self.rng.choice(
            [
                ("prompt", 8000),
                ("prompt", 8001),
                ("prompt", 65537),
                ("negative_prompt", 60000),
                ("job_id", 64),
                ("job_id", 65),
                ("model", 256),
                ("model", 257),
                ("scheduler", 32),
                ("scheduler", 33),
                ("task", 5000),
            ]
        )
        body[key] = ("é" if key == "prompt" and n < 65537 else "m") * n
        return f"{key} of {n} characters", False

    def image_of(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        images = [("image", body["image"])]
        if isinstance(body.get("mask"), dict):
            images.append(("mask", body["mask"]))
        if body.get("controls"):
            images.append(("controls.0.image", body["controls"][0]["image"]))
        return self.rng.choice(images)

    def m_lying_image(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        where, img = self.image_of(body)
        lie = self.rng.randrange(11)
        if lie == 0:
            img["w"] += 1
        elif lie == 1:
            img["w"] = img["h"] = 65535
        elif lie == 2:
            img["w"] = img["h"] = 4096
        elif lie == 3:
            img["w"] = 0
        elif lie == 4:
            img["h"] = -1
        elif lie == 5:
            img["w"] = 1 << 32
        elif lie == 6:
            img["fmt"] = self.rng.choice(["rgbaf32", "gray8", "rgba16", "bgra8"])
        elif lie == 7:
            img["data"] = b""
        elif lie == 8:
            img["data"] = bytes(img["data"]) * 2
        elif lie == 9:
            del img["data"]
        else:
            img["w"] = img["h"] = 8192
        names = ["w+1", "65535²", "4096² with 8² data", "w 0", "h -1", "w 2^32", "other fmt", "no bytes", "twice"]
        return f"{where}: {[*names, 'data missing', '8192²'][lie]}", False

    def m_zlib_lie(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        where, img = self.image_of(body)
        raw = zlib.decompress(img["data"]) if img.get("enc") == "zlib" else bytes(img["data"])
        lie = self.rng.randrange(9)
        img["enc"] = "zlib"
        if lie == 0:
            img["data"], img["w"] = zlib.compress(raw), img["w"] + 1
        elif lie == 1:
            img["data"] = zlib.compress(raw + bytes(64))
        elif lie == 2:
            img["data"] = zlib.compress(raw)[:-5]
        elif lie == 3:
            img["data"] = zlib.compress(raw) + b"garbage"
        elif lie == 4:
            img["data"] = raw
        elif lie == 5:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            img["data"] = c.compress(raw) + c.flush()
        elif lie == 6:
            c = zlib.compressobj(6, zlib.DEFLATED, 31)
            img["data"] = c.compress(raw) + c.flush()
        elif lie == 7:
            img["enc"] = self.rng.choice(["gzip", "ZLIB", "", "raw\n"])
        else:
            img["data"], img["w"], img["h"] = zlib.compress(raw), 4096, 4096
        names = ["w+1", "more bytes inside", "truncated stream", "trailing garbage", "not zlib", "raw deflate"]
        return f"{where}: zlib, {[*names, 'gzip', 'bad enc', 'declared 4096²'][lie]}", False

    def m_zlib_bomb(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        where, img = self.image_of(body)
        img["enc"], img["data"] = "zlib", self.s.bomb
        size = self.rng.choice(["as declared", "4096²", "4096² rgba16"])
        if size != "as declared":
            img["w"] = img["h"] = 4096
            if size.endswith("rgba16") and where == "image":
                img["fmt"] = "rgba16"
        return f"{where}: zlib bomb of 256 MiB, {size}", True

    def m_lists(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        kind = self.rng.randrange(5)
        if kind == 0:
            body["controls"] = [self.s.control] * 4096
        elif kind == 1:
            body["controls"] = [self.s.control] * 4097
        elif kind == 2:
            body["prompt"] = ["a"] * 4096
        elif kind == 3:
            body["x-list"] = list(range(4096))
        else:
            body["origin"] = {f"k{i}": i for i in range(4094)} | {"x": 0, "y": 0}
        return [
            "4096 controls",
            "4097 controls",
            "prompt: list of 4096",
            "unknown key: 4096 ints",
            "origin: 4096 keys",
        ][kind], kind < 2

    def m_nesting(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        depth = self.rng.choice([14, 15, 16, 17, 64, 1000, 100_000])
        maps = self.rng.random() < 0.5
        raw = (b"\x81\xa1k" if maps else b"\x91") * depth + b"\xc0"
        body["prompt"] = b"\x00raw:" + raw
        return f"prompt nested {depth} {'maps' if maps else 'lists'} deep", depth > 1000

    def m_empty_maps(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        rows = self.rng.choice([16, 256, 1024])
        raw = b"\xdc" + rows.to_bytes(2, "big") + (b"\xdc\x10\x00" + b"\x80" * 4096) * rows
        body["prompt"] = b"\x00raw:" + raw
        return f"prompt: {rows * 4096} empty maps", True

    def m_reuse_id(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        body["job_id"] = self.rng.choice(self.used_ids)
        return "a job id used before", False

    def m_utf8(self, body: dict[str, Any], seed: str) -> tuple[str, bool]:
        body["prompt"] = b"\x00raw:" + self.rng.choice([b"\xa4\xff\xfe\xfd\xfc", b"\xa3\xed\xa0\x80", b"\xa2\xc3("])
        return "prompt: invalid UTF-8", False

    # ------------------------------------------------------------------ handshake

    def handshake(self) -> Frame:
        rng = self.rng
        mode = rng.randrange(6)
        if mode == 0:
            inner = getattr(self, "g_" + rng.choice(["random", "truncated", "flipped", "structure"]))()
            return Frame(inner.data, "handshake", f"first frame: {inner.mutation}")
        if mode == 1:
            name = rng.choice(["submit/img2img", "cancel", "get_status"])
            return Frame(pack(self.s.valid[name]), "handshake", f"first frame: {name}")
        if mode == 2:
            body = msgpack.unpackb(pack(self.s.hello))
            path = rng.choice(self.s.hello_paths)
            label, value = rng.choice(NASTY)
            set_path(body, path, value)
            return Frame(pack(body), "handshake", f"hello.{path_name(path)} = {label}")
        if mode == 3:
            label, value = rng.choice(TYPES)
            return Frame(pack({**self.s.hello, "type": value}), "handshake", f"first frame type = {label}")
        if mode == 4:
            name = rng.choice(list(self.s.wrong))
            return Frame(pack(self.s.wrong[name]), "handshake", f"first frame: {name}")
        return Frame(pack({**self.s.hello, "type": "T" * 60000}), "handshake", "first frame type = 60000 chars")
