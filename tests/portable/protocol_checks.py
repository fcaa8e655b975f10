"""Protocol checks that need only the standard library and msgpack (Krita's situation).

Run directly (``python tests/portable/protocol_checks.py``) on Python 3.10+, or through pytest,
which collects ``tests/protocol/test_portable.py``. Each check raises AssertionError on failure.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "protocol" / "golden"
sys.path.insert(0, str(HERE))

from sfumato.protocol import (  # noqa: E402
    BadFrame,
    DecodeLimits,
    IllegalTransition,
    Image,
    InvalidMessage,
    JobEvent,
    JobState,
    LimitExceeded,
    ProtocolError,
    Submit,
    Unknown,
    advance,
    decode,
    encode,
)
from sfumato.protocol.examples import examples  # noqa: E402


def check_round_trip() -> None:
    for name, msg in examples().items():
        assert decode(encode(msg)) == msg, name
        assert decode(encode(msg, compress=True)) == msg, name


def check_golden() -> None:
    for name, msg in examples().items():
        fixture = GOLDEN / f"{name}.hex"
        assert fixture.exists(), f"missing golden fixture {fixture}"
        expected = bytes.fromhex(fixture.read_text().strip())
        assert encode(msg) == expected, f"the wire form of {name!r} changed"
        assert decode(expected) == msg, name


def check_unknown_type_skipped() -> None:
    import msgpack

    out = decode(msgpack.packb({"type": "from_the_future", "x": 1}))
    assert isinstance(out, Unknown) and out.type == "from_the_future"


def check_unknown_fields_ignored() -> None:
    import msgpack

    body = msgpack.unpackb(encode(examples()["cancel"]))
    body["added_in_1_1"] = [1, 2, 3]
    assert decode(msgpack.packb(body)) == examples()["cancel"]


def _expect(exc_type: type, data: bytes, limits: DecodeLimits | None = None, field: str = "") -> ProtocolError:
    try:
        decode(data, limits) if limits else decode(data)
    except ProtocolError as exc:
        assert isinstance(exc, exc_type), f"expected {exc_type.__name__}, got {type(exc).__name__}: {exc}"
        if field:
            assert exc.field == field, f"expected field {field!r}, got {exc.field!r} ({exc})"
        return exc
    raise AssertionError(f"expected {exc_type.__name__} for {data[:40]!r}")


def check_errors_name_fields() -> None:
    import msgpack

    sub = msgpack.unpackb(encode(examples()["submit"]))
    bad = dict(sub, strength="high")
    exc = _expect(InvalidMessage, msgpack.packb(bad), field="submit.strength")
    assert "expected a number" in exc.message and "high" in exc.message
    bad = dict(sub, steps=True)
    _expect(InvalidMessage, msgpack.packb(bad), field="submit.steps")
    bad = dict(sub)
    del bad["job_id"]
    _expect(InvalidMessage, msgpack.packb(bad), field="submit.job_id")
    bad = dict(sub, controls=[dict(sub["controls"][0], end=2.0)])
    _expect(InvalidMessage, msgpack.packb(bad), field="submit.controls[0].end")
    bad = dict(sub, mask=dict(sub["mask"], w=1, data=b"\0\0"))
    _expect(InvalidMessage, msgpack.packb(bad), field="submit.mask")


def check_declared_sizes() -> None:
    """A header that promises far more pixels than it carries fails before anything is allocated."""
    import msgpack

    sub = msgpack.unpackb(encode(examples()["submit"]))
    huge = dict(sub, image={"w": 60000, "h": 60000, "fmt": "rgba8", "enc": "raw", "data": b"1234"})
    _expect(LimitExceeded, msgpack.packb(huge), field="submit.image")
    lying = dict(sub, image={"w": 100, "h": 100, "fmt": "rgba8", "enc": "raw", "data": b"1234"})
    _expect(InvalidMessage, msgpack.packb(lying), field="submit.image.data")
    bomb = dict(
        sub,
        image={"w": 2, "h": 2, "fmt": "rgba8", "enc": "zlib", "data": __import__("zlib").compress(bytes(10_000_000))},
    )
    _expect(InvalidMessage, msgpack.packb(bomb), field="submit.image.data")
    small = DecodeLimits(max_message_bytes=1024)
    _expect(LimitExceeded, encode(examples()["welcome"]) + bytes(2000), small, field="frame")


def check_structure_is_refused_before_unpacking() -> None:
    """Frames full of tiny containers fail at the headers: nothing is built, nothing is walked."""
    import time
    import tracemalloc

    many_maps = b"\xdd" + (4000).to_bytes(4, "big") + b"\xdc\x10\x00" + b"\x80" * 4096 * 4000  # 16 M maps
    nested_empty = b"\x81\xa1k" * 17 + b"\x80"  # 18 levels of maps
    tracemalloc.start()
    t = time.perf_counter()
    _expect(BadFrame, many_maps)
    _expect(BadFrame, nested_empty)
    _expect(BadFrame, b"\x93\x80\x80\x80\x00")  # one value, then trailing bytes
    _expect(BadFrame, b"\xc7\x01\x05x")  # extension types are not used
    elapsed = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, f"refusing a 64 MiB frame of empty maps allocated {peak} bytes"
    assert elapsed < 5.0, f"refusing took {elapsed:.1f} s"  # bounded by max_objects iterations, not frame size
    few = DecodeLimits(max_objects=100)
    exc = _expect(BadFrame, b"\xdc\x01\x00" + b"\xc0" * 256, few)
    assert "at most 100 values" in exc.message


def check_limits_are_enforced_before_inflating() -> None:
    """Batch, controls and image bytes after inflating are refused from declared sizes: no inflate happens."""
    import tracemalloc
    import zlib

    import msgpack

    sub = msgpack.unpackb(encode(examples()["submit"]))
    side = 2048
    raw = zlib.compress(bytes(side * side * 4), 9)  # 16 MiB of pixels in ~16 KiB
    img = {"w": side, "h": side, "fmt": "rgba8", "enc": "zlib", "data": raw}
    control = dict(sub["controls"][0], image=img)
    frame = msgpack.packb(dict(sub, image=img, mask=None, task="img2img", controls=[control] * 8))
    limits = DecodeLimits(max_pixels=side * side, max_controls=4)
    tracemalloc.start()
    _expect(LimitExceeded, frame, limits, field="submit.controls")
    _expect(LimitExceeded, frame, DecodeLimits(max_pixels=side * side, max_message_bytes=64 << 20), field="submit")
    exc = _expect(LimitExceeded, msgpack.packb(dict(sub, batch_size=9)), DecodeLimits(max_batch=8))
    assert exc.field == "submit.batch_size" and exc.code == "too_large"
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, f"refusing allocated {peak} bytes: an image was inflated"
    within = DecodeLimits(max_pixels=side * side, max_message_bytes=256 << 20)
    assert len(decode(frame, within).controls) == 8  # the same frame is legal when the limits allow it


def check_nil_means_absent() -> None:
    import msgpack

    sub = msgpack.unpackb(encode(examples()["submit"]))
    loaded = decode(
        msgpack.packb(dict(sub, origin=None, context=None, result=None, strength=None, preview=None, controls=None))
    )
    defaults = Submit(job_id="x", task="img2img", model="m", image=examples()["submit"].image)
    assert (loaded.origin, loaded.strength, loaded.preview, loaded.controls) == (
        defaults.origin,
        defaults.strength,
        defaults.preview,
        (),
    )
    exc = _expect(InvalidMessage, msgpack.packb(dict(sub, job_id=None)), field="submit.job_id")
    assert "nil" in exc.message and "None" not in exc.message
    exc = _expect(InvalidMessage, msgpack.packb(dict(sub, strength=True)), field="submit.strength")
    assert "got true" in exc.message


def check_refused_frames_name_their_job() -> None:
    import msgpack

    sub = msgpack.unpackb(encode(examples()["submit"]))
    exc = _expect(InvalidMessage, msgpack.packb(dict(sub, job_id="mine-7", strength="high")))
    assert exc.job_id == "mine-7"
    exc = _expect(InvalidMessage, msgpack.packb(dict(sub, job_id="bad id!", strength="high")))
    assert exc.job_id is None  # not a legal id: nothing to name


def check_message_types_are_bounded() -> None:
    import msgpack

    exc = _expect(BadFrame, msgpack.packb({"type": "x" * 60000}), field="type")
    assert len(exc.message) < 200
    assert isinstance(decode(msgpack.packb({"type": "y" * 64})), Unknown)


def check_controls_need_a_window() -> None:
    import msgpack

    sub = msgpack.unpackb(encode(examples()["submit"]))
    for start, end in ((0.5, 0.5), (0.0, -0.0), (0.7, 0.2)):
        bad = dict(sub, controls=[dict(sub["controls"][0], start=start, end=end)])
        exc = _expect(InvalidMessage, msgpack.packb(bad), field="submit.controls[0].end")
        assert exc.code == "invalid_request", exc.code


def check_malformed() -> None:
    rnd = random.Random(1234)
    frames = [encode(m) for m in examples().values()]
    _expect(BadFrame, b"")
    _expect(BadFrame, b"\x91" * 100_000)  # deep nesting
    _expect(BadFrame, b"\xdd\xff\xff\xff\xff")  # an array claiming 4 G entries
    _expect(BadFrame, b"\xc6\xff\xff\xff\xf0abc")  # a bin claiming 4 GB
    for _ in range(3000):
        kind = rnd.random()
        if kind < 0.3:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
        elif kind < 0.6:
            f = rnd.choice(frames)
            data = f[: rnd.randrange(len(f))]
        else:
            f = bytearray(rnd.choice(frames))
            for _ in range(rnd.randrange(1, 6)):
                f[rnd.randrange(len(f))] = rnd.randrange(256)
            data = bytes(f)
        try:
            decode(data)
        except ProtocolError:
            pass  # the only acceptable failure
        except Exception as exc:  # pragma: no cover - a failure of the check
            raise AssertionError(f"decode({data!r}) raised {type(exc).__name__}: {exc}") from None


def check_state_machine() -> None:
    s = JobState.QUEUED
    for ev in (JobEvent.QUEUED, JobEvent.STARTED, JobEvent.PROGRESS, JobEvent.RESULT):
        s = advance(s, ev)
    assert s is JobState.DONE
    try:
        advance(JobState.DONE, JobEvent.PROGRESS)
    except IllegalTransition as exc:
        assert "progress" in str(exc) and "done" in str(exc)
    else:
        raise AssertionError("progress after done must be illegal")


def check_connection_handshake() -> None:
    """Both sides of a connection, bytes only: hello, welcome, a job followed through the table."""
    from sfumato.protocol import ClientConnection, ConnectionState, JobState, Limits, ServerConnection, Started

    client = ClientConnection("portable")
    server = ServerConnection(DecodeLimits(), "backend", ("zlib",))
    (hello,) = client.hello()
    server.receive(hello)
    limits = Limits(max_message_bytes=1 << 20, max_pixels=1 << 20, max_batch=1, max_queued_per_editor=1, max_controls=0)
    for frame in server.welcome("S", False, limits, (), "cpu"):
        client.receive(frame)
    assert client.state is server.state is ConnectionState.OPEN
    layer = Image(width=128, height=128, format="rgba8", data=bytes(range(256)) * 256)
    sent = Submit(job_id="krita-7", task="img2img", model="m", image=layer)
    frames = client.send(sent)
    assert len(frames) == 2 and bytes(frames[1]) == layer.data  # 1.2: the pixels as a frame of their own
    received = [server.receive(bytes(frame)) for frame in frames]
    assert received == [None, sent]
    for frame in server.send(Started(job_id="krita-7", steps=1, steps_requested=1, width=2, height=2, seeds=(1,))):
        client.receive(frame)
    assert client.jobs.get("krita-7") is JobState.RUNNING


def check_image_repr_is_short() -> None:
    img = Image(width=64, height=64, format="rgba8", data=bytes(64 * 64 * 4))
    assert len(repr(img)) < 40


CHECKS = [v for k, v in dict(globals()).items() if k.startswith("check_") and callable(v)]


def main() -> int:
    failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok    {check.__name__}")
        except AssertionError as exc:
            failed += 1
            print(f"FAIL  {check.__name__}: {exc}")
    print(f"{len(CHECKS) - failed} passed, {failed} failed on Python {sys.version.split()[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
