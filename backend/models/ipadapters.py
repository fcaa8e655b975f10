"""IP-Adapters: loaded into the UNet for one job, with a scale per reference and block, and taken out after.

diffusers' own loader builds the adapters (``load_ip_adapter`` with the file's state dict: plain,
Plus and Full-face layouts). Each reference gets its own copy of its adapter, so each keeps its own
weight and mode. After the job the UNet gets back the very attention processors and the
(absent) image projection it had, so the next job without references is bit-identical to one on a
UNet that never saw an adapter. The files' tensors are kept in memory (LRU), so the next job with
the same adapter skips the disk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sfumato.protocol import ErrorCode

from ..errors import JobFailure
from .catalogue import ModelEntry

MAX_STATES = 4  # adapter files kept in memory (LRU)

Scale = float | dict[str, Any]  # diffusers' set_ip_adapter_scale: one number, or per block


def mode_scale(unet_config: Any, mode: str, weight: float) -> Scale:
    """Where a reference is heard, by mode (InstantStyle, Wang et al. 2024): the UNet's lowest-resolution
    cross-attention carries the most abstract content; of it, the middle attention of the first up block
    with attentions carries the style (colour, texture, strokes) and the second attention of the last down
    block with attentions the layout. For SDXL these are ``up_blocks.0.attentions.1`` and
    ``down_blocks.2.attentions.1``, the blocks InstantStyle names; SD1.5 has the same U shape one level
    deeper (``up_blocks.1.attentions.1``, ``down_blocks.2.attentions.1``). ``full`` is every layer."""
    if mode == "full":
        return weight
    per_block = unet_config.layers_per_block
    if not isinstance(per_block, int):
        raise JobFailure(
            "style and composition references need a UNet with the same layers in every block; use full",
            "submit.references",
            ErrorCode.INVALID_REQUEST,
        )
    if mode == "style":
        block = next(i for i, t in enumerate(unet_config.up_block_types) if "CrossAttn" in t)
        n = per_block + 1  # an up block has one attention more than a down block
        return {"up": {f"block_{block}": [weight if j == min(1, n - 1) else 0.0 for j in range(n)]}}
    block = max(i for i, t in enumerate(unet_config.down_block_types) if "CrossAttn" in t)
    return {"down": {f"block_{block}": [weight if j == min(1, per_block - 1) else 0.0 for j in range(per_block)]}}


class Adapters:
    """The adapter files a device's jobs used lately, as the state dicts diffusers' loader takes."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

    def held_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self._states.values() for p in s.values() for t in p.values())

    def clear(self) -> None:
        self._states.clear()

    def state(self, entry: ModelEntry) -> dict[str, dict[str, Any]]:
        """``{"image_proj": …, "ip_adapter": …}`` of the file, read once."""
        if entry.id in self._states:
            self._states.move_to_end(entry.id)
            return self._states[entry.id]
        from safetensors import safe_open

        state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
        with safe_open(str(entry.path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                part, _, name = key.partition(".")
                if part in state:
                    state[part][name] = f.get_tensor(key)
        self._states[entry.id] = state
        while len(self._states) > MAX_STATES:
            self._states.popitem(last=False)
        return state


@contextmanager
def applied(
    pipe: Any, adapters: list[tuple[ModelEntry, dict[str, dict[str, Any]]]], scales: list[Scale]
) -> Iterator[None]:
    """One adapter per reference in ``pipe``'s UNet (every pipeline of the checkpoint shares it) during the block."""
    if not adapters:
        yield
        return
    unet = pipe.unet
    before = Before(
        dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type, pipe.feature_extractor
    )
    try:
        try:
            pipe.load_ip_adapter(
                [state for _, state in adapters],
                subfolder=[""] * len(adapters),
                weight_name=[""] * len(adapters),
                image_encoder_folder=None,  # the embeddings are made (and kept) by image_encoders.py
            )
        except (ValueError, RuntimeError, KeyError) as exc:
            names = ", ".join(sorted({e.id for e, _ in adapters}))
            raise JobFailure(
                f"IP-Adapter {names} does not fit this checkpoint's UNet: {str(exc)[:400]}",
                "submit.references",
                ErrorCode.INVALID_REQUEST,
            ) from None
        pipe.set_ip_adapter_scale(scales)
        yield
    finally:
        restore(pipe, before)


@dataclass(frozen=True)
class Before:
    """What loading adapters changes: the UNet's attention processors and image projection, the pipeline's
    feature extractor (diffusers' loader adds one)."""

    processors: dict[str, Any]
    encoder_hid_proj: Any
    encoder_hid_dim_type: Any
    feature_extractor: Any


def restore(pipe: Any, before: Before) -> None:
    """The UNet and pipeline as they were: the very processor objects, the projection they had."""
    unet = pipe.unet
    unet.encoder_hid_proj = before.encoder_hid_proj
    unet.config.encoder_hid_dim_type = before.encoder_hid_dim_type
    unet.set_attn_processor(before.processors)
    pipe.register_modules(feature_extractor=before.feature_extractor)
