"""Property-based round trips of every message, with strategies derived from the message schema itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from sfumato.protocol import (
    ALL_MESSAGES,
    BYTES_PER_PIXEL,
    Image,
    InvalidMessage,
    ProtocolError,
    Rect,
    Result,
    Submit,
    decode,
    encode,
)
from sfumato.protocol import schema as S
from sfumato.protocol.images import ImageKind


def images(formats: tuple[str, ...], size: tuple[int, int] | None = None) -> st.SearchStrategy[Image]:
    dims = st.just(size) if size else st.tuples(st.integers(1, 6), st.integers(1, 6))

    @st.composite
    def build(draw: Any) -> Image:
        w, h = draw(dims)
        fmt = draw(st.sampled_from(formats))
        data = draw(st.binary(min_size=w * h * BYTES_PER_PIXEL[fmt], max_size=w * h * BYTES_PER_PIXEL[fmt]))
        return Image(width=w, height=h, format=fmt, data=data)

    return build()


def for_kind(kind: S.Kind, size: tuple[int, int] | None = None) -> st.SearchStrategy[Any]:
    if isinstance(kind, ImageKind):
        return images(kind.formats, size)
    if isinstance(kind, S.Str):
        if kind.choices:
            return st.sampled_from(kind.choices)
        if kind.pattern is not None:
            return st.from_regex(kind.pattern, fullmatch=True).filter(lambda s: kind.min_len <= len(s) <= kind.max_len)
        return st.text(min_size=kind.min_len, max_size=min(kind.max_len, 20))
    if isinstance(kind, S.Int):
        return st.integers(kind.lo, kind.hi)
    if isinstance(kind, S.Float):
        return st.floats(kind.lo, kind.hi, allow_nan=False)
    if isinstance(kind, S.Bool):
        return st.booleans()
    if isinstance(kind, S.Optional):
        return st.none() | for_kind(kind.inner, size)
    if isinstance(kind, S.ListOf):
        return st.lists(for_kind(kind.inner, size), min_size=kind.min_len, max_size=min(kind.max_len, 3)).map(tuple)
    if isinstance(kind, S.Timings):
        return st.dictionaries(st.text(max_size=8), st.floats(0, 100, allow_nan=False), max_size=4)
    if isinstance(kind, S.Nested):
        return records(kind.cls, size)
    raise AssertionError(f"no strategy for {kind!r}")


def records(cls: type, size: tuple[int, int] | None = None) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw: Any) -> Any:
        kwargs = {f.name: draw(for_kind(f.metadata["wire"], size)) for f in dataclasses.fields(cls)}
        try:
            return cls(**kwargs)
        except InvalidMessage:  # cross-field rules (start ≤ end, rects inside the image, ...)
            return draw(st.nothing())

    return build()


@st.composite
def submits(draw: Any) -> Submit:
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    kwargs = {f.name: draw(for_kind(f.metadata["wire"], size)) for f in dataclasses.fields(Submit)}
    kwargs["context"] = kwargs["result"] = None
    if kwargs["task"] == "inpaint" and kwargs["mask"] is None:
        kwargs["mask"] = draw(images(("gray8",), size))
    try:
        return Submit(**kwargs)
    except InvalidMessage:  # cross-field rules (each LoRA once, ...)
        return draw(st.nothing())


@st.composite
def results(draw: Any) -> Result:
    n = draw(st.integers(1, 3))
    w, h = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return Result(
        job_id=draw(for_kind(Result.__dataclass_fields__["job_id"].metadata["wire"])),
        images=tuple(draw(images(("rgba8", "rgba16", "rgbaf32"), (w, h))) for _ in range(n)),
        rect=Rect(x=draw(st.integers(-100, 100)), y=draw(st.integers(-100, 100)), w=w, h=h),
        seeds=tuple(draw(st.integers(0, 2**32 - 1)) for _ in range(n)),
        timings=draw(for_kind(S.Timings())),
    )


def strategy_for(cls: type) -> st.SearchStrategy[Any]:
    special = {Submit: submits, Result: results}
    return special[cls]() if cls in special else records(cls)


ANY_MESSAGE = st.one_of(*[strategy_for(cls) for cls in ALL_MESSAGES])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(ANY_MESSAGE, st.booleans())
def test_round_trip(msg: Any, compress: bool) -> None:
    assert decode(encode(msg, compress=compress)) == msg


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda c: c.TYPE)
def test_every_message_type_has_a_working_strategy(cls: type) -> None:
    msg = find(strategy_for(cls), lambda m: True, settings=settings(database=None))
    assert type(msg) is cls and decode(encode(msg)) == msg


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(ANY_MESSAGE, st.data())
def test_wrong_field_types_raise_protocol_errors(msg: Any, data: Any) -> None:
    body = msgpack.unpackb(encode(msg))
    fields = [k for k in body if k != "type"]
    if not fields:
        return
    name = data.draw(st.sampled_from(fields))
    body[name] = data.draw(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.text(max_size=5),
            st.binary(max_size=5),
            st.none(),
            st.lists(st.integers(-5, 5), max_size=2),
            st.floats(allow_nan=True),
            st.dictionaries(st.text(max_size=2), st.integers(-5, 5), max_size=2),
        )
    )
    try:
        out = decode(msgpack.packb(body))
    except ProtocolError as exc:
        assert exc.field.startswith(f"{msg.TYPE}."), exc.field
        assert "expected" in exc.message or "missing" in exc.message
    else:
        assert out.TYPE == msg.TYPE  # the replacement happened to be valid


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass
