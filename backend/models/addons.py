"""What a job adds to its checkpoint — LoRAs, embeddings, a VAE — worked out once and applied for the job only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sfumato.protocol import Submit

from . import embeddings, loras, vaes
from .cache import PipelineCache
from .catalogue import Catalogue, ModelEntry


@dataclass(frozen=True)
class Addons:
    prompt: str  # without <lora:…> tags, embedding names as their tokens
    negative_prompt: str
    loras: loras.Applied = field(default_factory=list)
    embeddings: list[ModelEntry] = field(default_factory=list)
    vae: ModelEntry | None = None


def resolve(req: Submit, catalogue: Catalogue, checkpoint: ModelEntry, fp16: bool) -> Addons:
    """Everything a request adds, found in the catalogue and checked against the checkpoint (typed errors)."""
    prompt, chosen = loras.resolve(req, catalogue, checkpoint)
    (prompt, negative), used = embeddings.resolve(catalogue, checkpoint, [prompt, req.negative_prompt])
    return Addons(prompt, negative, chosen, used, vaes.resolve(req, catalogue, checkpoint, fp16))


@contextmanager
def applied(pipe: Any, checkpoint: ModelEntry, addons: Addons, cache: PipelineCache) -> Iterator[None]:
    with ExitStack() as stack:
        vae = cache.vaes.load(addons.vae, checkpoint, cache.configs) if addons.vae is not None else None
        stack.enter_context(vaes.swapped(pipe, vae))
        stack.enter_context(loras.applied(pipe, checkpoint, addons.loras))
        stack.enter_context(embeddings.applied(pipe, checkpoint, addons.embeddings))
        yield
