"""Standalone VAEs: chosen per request instead of the checkpoint's own, and SDXL's fp16 overflow.

A VAE file holds weights only; it is built with the checkpoint's own VAE configuration (A1111
does the same: the latent scale belongs to the checkpoint), so any SD-family VAE of the same
shapes fits. SDXL's original VAE overflows in fp16 (black or NaN pictures): with fp16 weights an
SDXL job uses an fp16-safe VAE when one is installed (``sdxl-vae-fp16-fix`` and the like), and
otherwise diffusers up-casts the VAE to fp32 for the encode and decode only (``force_upcast``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sfumato.protocol import ErrorCode, Submit
from sfumato.protocol import arch_family as family

from ..errors import JobFailure
from .catalogue import Catalogue, ModelEntry

FP16_SAFE = re.compile(r"fp16[-_ .]?fix", re.IGNORECASE)  # how the fixed VAEs are published and named
MAX_LOADED = 2


def fp16_safe(entry: ModelEntry) -> bool:
    return bool(FP16_SAFE.search(entry.name))


def resolve(req: Submit, catalogue: Catalogue, checkpoint: ModelEntry, fp16: bool) -> ModelEntry | None:
    """The VAE a job decodes with: the requested one, an fp16-safe one for SDXL in fp16, or None (its own)."""
    if req.vae is not None:
        return catalogue.get(req.vae, "vae", "submit.vae")
    if fp16 and family(checkpoint.arch) == "sdxl":
        safe = [e for e in catalogue.of_kind("vae") if fp16_safe(e)]
        return safe[0] if safe else None
    return None


def config_source(checkpoint: ModelEntry, configs: Path) -> Path:
    """Where the checkpoint's VAE configuration is: its diffusers folder, or the architecture's config folder."""
    if checkpoint.format == "diffusers":
        return checkpoint.path
    if checkpoint.format == "single_file":
        return configs / checkpoint.arch
    raise JobFailure(
        f"a VAE can be chosen for checkpoints in the model folders, not for {checkpoint.id!r}",
        "submit.vae",
        ErrorCode.INVALID_REQUEST,
    )


class Vaes:
    """VAEs loaded for a checkpoint configuration, the last few kept (they are small: ~160 MB in fp16)."""

    def __init__(self, device: str, dtype: Any) -> None:
        self.device, self.dtype = device, dtype
        self._loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def load(self, vae: ModelEntry, checkpoint: ModelEntry, configs: Path) -> Any:
        from diffusers import AutoencoderKL

        from .single_file import read_state

        source = config_source(checkpoint, configs)
        key = (vae.id, str(source))
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        try:  # diffusers converts the original layout and reads the diffusers one as it is
            model = AutoencoderKL.from_single_file(
                read_state(vae.path), config=str(source), subfolder="vae", torch_dtype=self.dtype, local_files_only=True
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise JobFailure(
                f"VAE {vae.id!r} does not fit {checkpoint.id!r}: {str(exc)[:500]}",
                "submit.vae",
                ErrorCode.INVALID_REQUEST,
            ) from None
        if fp16_safe(vae):
            model.register_to_config(force_upcast=False)  # made to stay finite in fp16: no up-cast needed
        self._loaded[key] = model = model.to(self.device)
        while len(self._loaded) > MAX_LOADED:
            self._loaded.popitem(last=False)
        return model


@contextmanager
def swapped(pipe: Any, vae: Any) -> Iterator[None]:
    """``pipe`` decodes (and encodes) with ``vae`` while the block runs; its own VAE is back after it."""
    if vae is None:
        yield
        return
    own = pipe.vae
    pipe.register_modules(vae=vae)
    try:
        yield
    finally:
        pipe.register_modules(vae=own)
