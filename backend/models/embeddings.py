"""Textual-inversion embeddings, used by name in the prompts as in A1111 (``easynegative``).

A prompt word that is an embedding's name (its file name, any case) becomes that embedding's
token; diffusers' own loader adds the token and its vectors for the job, and removes them after
it, so the tokenizer and the embedding matrix are exactly what they were.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sfumato.protocol import ErrorCode
from sfumato.protocol import arch_family as family

from ..errors import JobFailure
from .catalogue import Catalogue, ModelEntry
from .pickled import read_embedding


def token(entry: ModelEntry) -> str:
    """The token an embedding gets: bracketed, so it can never be a word of CLIP's own vocabulary."""
    return f"<{entry.name.lower()}>"


def resolve(catalogue: Catalogue, checkpoint: ModelEntry, prompts: list[str]) -> tuple[list[str], list[ModelEntry]]:
    """The prompts with every embedding name replaced by its token, and the embeddings they use."""
    used: list[ModelEntry] = []
    out = list(prompts)
    for entry in catalogue.of_kind("embedding"):
        if family(entry.arch) != family(checkpoint.arch):
            continue
        word = re.compile(rf"(?<![\w<]){re.escape(entry.name)}(?![\w>])", re.IGNORECASE)
        replaced = [word.sub(token(entry), p) for p in out]
        if replaced != out:
            used.append(entry)
            out = replaced
    return out, used


def _vectors(entry: ModelEntry) -> dict[str, Any]:
    """The embedding's vectors per text encoder (``clip_l``/``clip_g`` for SDXL, one otherwise)."""
    from safetensors.torch import load_file

    state = read_embedding(entry.path) if entry.format == "pickled_embedding" else load_file(str(entry.path))
    if set(state) == {"clip_l", "clip_g"}:
        return {"text_encoder": state["clip_l"], "text_encoder_2": state["clip_g"]}
    (vectors,) = state.values()
    return {"text_encoder": vectors if vectors.ndim == 2 else vectors[None]}


@contextmanager
def applied(pipe: Any, checkpoint: ModelEntry, embeddings: list[ModelEntry]) -> Iterator[None]:
    """The embeddings' tokens known to ``pipe``'s tokenizers while the block runs, and gone after it."""
    added: list[tuple[Any, Any, list[str]]] = []  # (tokenizer, text encoder, its new tokens)
    try:
        for entry in embeddings:
            for encoder_name, vectors in _vectors(entry).items():
                tokenizer = getattr(pipe, encoder_name.replace("text_encoder", "tokenizer"), None)
                encoder = getattr(pipe, encoder_name, None)
                if tokenizer is None or encoder is None:
                    raise JobFailure(
                        f"embedding {entry.id!r} does not fit {checkpoint.id!r}",
                        "submit.prompt",
                        ErrorCode.INVALID_REQUEST,
                    )
                before = set(tokenizer.get_added_vocab())
                try:
                    pipe.load_textual_inversion(vectors, token=token(entry), tokenizer=tokenizer, text_encoder=encoder)
                except (ValueError, RuntimeError) as exc:
                    raise JobFailure(
                        f"embedding {entry.id!r} does not fit {checkpoint.id!r}: {str(exc)[:500]}",
                        "submit.prompt",
                        ErrorCode.INVALID_REQUEST,
                    ) from None
                finally:
                    new = sorted(set(tokenizer.get_added_vocab()) - before)
                    if new:
                        added.append((tokenizer, encoder, new))
        yield
    finally:
        for tokenizer, encoder, tokens in reversed(added):
            pipe.unload_textual_inversion(tokens, tokenizer=tokenizer, text_encoder=encoder)
