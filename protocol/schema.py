"""Field kinds and the ``Record`` base: one declaration per field gives validation, decoding and encoding.

A record is a frozen dataclass whose fields carry their wire kind in ``metadata["wire"]`` (use
:func:`wire`). Constructing a record validates it; :meth:`Record.load` builds one from a decoded
msgpack map (unknown keys are ignored because minor versions only add fields); :meth:`Record.dump`
produces the map again. Every failure is an :class:`InvalidMessage` naming the dotted field path.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from .errors import InvalidMessage, LimitExceeded
from .limits import DEFAULT_LIMITS, DecodeLimits

R = TypeVar("R", bound="Record")


def describe(value: object) -> str:
    """A short, safe description of a received value for error messages."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"bytes of length {len(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"  # repr: a newline or a control character cannot forge log lines
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, (list, tuple)):
        return f"list of {len(value)} items"
    if isinstance(value, dict):
        return f"map of {len(value)} entries"
    return type(value).__name__


class Kind:
    """How one field is checked, loaded from the wire and dumped to it."""

    doc: str = ""

    def check(self, value: Any, path: str) -> Any:
        """Validate an already-typed value (local construction). Returns the value to store."""
        raise NotImplementedError

    def load(self, value: Any, path: str, limits: DecodeLimits) -> Any:
        """Validate a decoded wire value and convert it to its Python form."""
        return self.check(value, path)

    def accepts(self, value: Any) -> bool:
        try:
            self.check(value, "")
        except InvalidMessage:
            return False
        return True

    def dump(self, value: Any) -> Any:
        return value

    def declared_bytes(self, value: Any, path: str, limits: DecodeLimits) -> int:
        """Image bytes ``value`` will occupy once decoded, from declared sizes only (nothing inflated).

        Also enforces the limits that can be read off the undecoded value (list lengths, pixels)."""
        return 0


def _limit(kind_hi: int, limit: str, limits: DecodeLimits) -> int:
    return min(kind_hi, getattr(limits, limit)) if limit else kind_hi


class Str(Kind):
    def __init__(self, min_len: int = 0, max_len: int = 256, choices: tuple[str, ...] = (), pattern: str = "") -> None:
        self.min_len, self.max_len, self.choices = min_len, max_len, choices
        self.pattern = re.compile(pattern) if pattern else None
        self.doc = (
            f"one of {', '.join(repr(c) for c in choices)}"
            if choices
            else (f"string, {min_len}..{max_len} characters" + (f", matching {pattern}" if pattern else ""))
        )

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidMessage(f"expected a string, got {describe(value)}", path)
        if self.choices and value not in self.choices:
            raise InvalidMessage(f"expected {self.doc}, got {describe(value)}", path)
        if not self.min_len <= len(value) <= self.max_len:
            raise InvalidMessage(f"expected {self.min_len}..{self.max_len} characters, got {len(value)}", path)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise InvalidMessage(f"expected a string matching {self.pattern.pattern}, got {describe(value)}", path)
        return value


class Int(Kind):
    """An integer in ``lo..hi``; ``limit`` names a :class:`DecodeLimits` field that may lower ``hi``."""

    def __init__(self, lo: int, hi: int, limit: str = "") -> None:
        self.lo, self.hi, self.limit = lo, hi, limit
        self.doc = f"integer, {lo}..{hi}" + (f" (at most limits.{limit})" if limit else "")

    def check(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidMessage(f"expected an integer, got {describe(value)}", path)
        if not self.lo <= value <= self.hi:
            raise InvalidMessage(f"expected an integer in {self.lo}..{self.hi}, got {value}", path)
        return value

    def load(self, value: Any, path: str, limits: DecodeLimits) -> int:
        number = self.check(value, path)
        hi = _limit(self.hi, self.limit, limits)
        if number > hi:
            raise LimitExceeded(f"expected at most {hi} (limits.{self.limit}), got {number}", path)
        return number


class Float(Kind):
    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.doc = f"number, {lo}..{hi}"

    def check(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidMessage(f"expected a number, got {describe(value)}", path)
        number = float(value)
        if not self.lo <= number <= self.hi:  # also rejects NaN
            raise InvalidMessage(f"expected a number in {self.lo}..{self.hi}, got {number!r}", path)
        return number


class Bool(Kind):
    doc = "boolean"

    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise InvalidMessage(f"expected a boolean, got {describe(value)}", path)
        return value


class Optional(Kind):
    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.doc = f"{inner.doc}, or nil"

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)

    def load(self, value: Any, path: str, limits: DecodeLimits) -> Any:
        return None if value is None else self.inner.load(value, path, limits)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)

    def declared_bytes(self, value: Any, path: str, limits: DecodeLimits) -> int:
        return 0 if value is None else self.inner.declared_bytes(value, path, limits)


class ListOf(Kind):
    """A list of ``min_len..max_len`` items; ``limit`` names a :class:`DecodeLimits` field that may lower it."""

    def __init__(self, inner: Kind, min_len: int = 0, max_len: int = 64, limit: str = "") -> None:
        self.inner, self.min_len, self.max_len, self.limit = inner, min_len, max_len, limit
        self.doc = f"list of {min_len}..{max_len} × ({inner.doc})" + (f", at most limits.{limit}" if limit else "")

    def _length(self, value: Any, path: str, limits: DecodeLimits | None = None) -> None:
        if not self.min_len <= len(value) <= self.max_len:
            raise InvalidMessage(f"expected {self.min_len}..{self.max_len} items, got {len(value)}", path)
        hi = _limit(self.max_len, self.limit, limits) if limits is not None else self.max_len
        if len(value) > hi:
            raise LimitExceeded(f"expected at most {hi} items (limits.{self.limit}), got {len(value)}", path)

    def check(self, value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise InvalidMessage(f"expected a list, got {describe(value)}", path)
        self._length(value, path)
        return tuple(self.inner.check(v, f"{path}[{i}]") for i, v in enumerate(value))

    def load(self, value: Any, path: str, limits: DecodeLimits) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise InvalidMessage(f"expected a list, got {describe(value)}", path)
        self._length(value, path, limits)
        return tuple(self.inner.load(v, f"{path}[{i}]", limits) for i, v in enumerate(value))

    def dump(self, value: Any) -> list[Any]:
        return [self.inner.dump(v) for v in value]

    def declared_bytes(self, value: Any, path: str, limits: DecodeLimits) -> int:
        if not isinstance(value, (list, tuple)):
            return 0  # load() reports the wrong type
        self._length(value, path, limits)
        return sum(self.inner.declared_bytes(v, f"{path}[{i}]", limits) for i, v in enumerate(value))


class Timings(Kind):
    """A map of stage name → seconds."""

    doc = "map of string → number (seconds)"

    def check(self, value: Any, path: str) -> dict[str, float]:
        if not isinstance(value, Mapping):
            raise InvalidMessage(f"expected a map, got {describe(value)}", path)
        if len(value) > 32:
            raise InvalidMessage(f"expected at most 32 entries, got {len(value)}", path)
        out: dict[str, float] = {}
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > 64:
                raise InvalidMessage(f"expected string keys, got {describe(k)}", path)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidMessage(f"expected a number, got {describe(v)}", f"{path}.{k}")
            out[k] = float(v)
        return out


class Nested(Kind):
    """A nested record."""

    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls
        self.doc = f"{cls.__name__} map"

    def check(self, value: Any, path: str) -> Record:
        if not isinstance(value, self.cls):
            raise InvalidMessage(f"expected {self.cls.__name__}, got {describe(value)}", path)
        return value

    def load(self, value: Any, path: str, limits: DecodeLimits) -> Record:
        return self.cls.load(value, path, limits)

    def dump(self, value: Any) -> Any:
        return value.dump()

    def declared_bytes(self, value: Any, path: str, limits: DecodeLimits) -> int:
        return self.cls.declared_bytes(value, path, limits)


def wire(kind: Kind, doc: str = "", **field_args: Any) -> Any:
    """Declare a record field with its wire kind (and dataclass default, if any)."""
    return dataclasses.field(metadata={"wire": kind, "doc": doc}, **field_args)


@dataclasses.dataclass(frozen=True)
class Record:
    """A validated, immutable piece of a message. Subclasses are ``@dataclass(frozen=True)``."""

    PATH: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind: Kind = f.metadata["wire"]
            value = kind.check(getattr(self, f.name), self._path(f.name))
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in subclasses."""

    @classmethod
    def _path(cls, name: str, prefix: str = "") -> str:
        base = prefix or cls.PATH or cls.__name__.lower()
        return f"{base}.{name}"

    @classmethod
    def load(cls: type[R], value: Any, path: str, limits: DecodeLimits = DEFAULT_LIMITS) -> R:
        """Build a record from a decoded map. A missing key and ``nil`` both mean "absent"."""
        if not isinstance(value, Mapping):
            raise InvalidMessage(f"expected a map, got {describe(value)}", path)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            kind: Kind = f.metadata["wire"]
            fpath = f"{path}.{f.name}"
            if value.get(f.name) is not None:
                kwargs[f.name] = kind.load(value[f.name], fpath, limits)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidMessage("expected a value, got nil or nothing (required field)", fpath)
        try:
            return cls(**kwargs)
        except LimitExceeded:
            raise
        except InvalidMessage as exc:  # re-root the path of cross-field errors at the wire path
            root = cls.PATH or cls.__name__.lower()
            field = exc.field.replace(root, path, 1) if exc.field.startswith(root) else exc.field
            raise type(exc)(exc.message, field, exc.code) from None

    @classmethod
    def declared_bytes(cls, value: Any, path: str, limits: DecodeLimits = DEFAULT_LIMITS) -> int:
        """Image bytes of the undecoded map ``value`` once decoded (see :meth:`Kind.declared_bytes`)."""
        if not isinstance(value, Mapping):
            return 0
        return sum(
            f.metadata["wire"].declared_bytes(value[f.name], f"{path}.{f.name}", limits)
            for f in dataclasses.fields(cls)
            if value.get(f.name) is not None
        )

    def dump(self) -> dict[str, Any]:
        return {f.name: f.metadata["wire"].dump(getattr(self, f.name)) for f in dataclasses.fields(self)}
