"""Messages as plain msgpack maps, so a mutation can put any value anywhere, typed or not."""

from __future__ import annotations

from typing import Any

import msgpack


def pack(body: Any, single_float: bool = False) -> bytes:
    """Any body, valid or not, as the bytes a client would send."""
    return bytes(msgpack.packb(body, use_bin_type=True, use_single_float=single_float))


def set_path(body: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        body = body[key]
    body[path[-1]] = value


def get_path(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def all_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if prefix or k != "type":
            out.append((*prefix, k))
            out += all_paths(v, (*prefix, k))
    return out


def path_name(path: tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in path)
