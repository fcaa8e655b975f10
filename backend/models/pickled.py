"""Textual-inversion embeddings saved with ``torch.save``: A1111's ``.pt``, the diffusers trainer's ``.bin``.

Many painters' negative embeddings exist only in this form. They are read with torch's weights-only
unpickler, which builds tensors and plain containers and refuses every other global, so such a file
cannot run code when it is read. Only in an embeddings folder and only files of an embedding's size:
pickled checkpoints, LoRAs and everything else stay refused (convert them to ``.safetensors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .detect import NotAModel, embedding_arch

EMBEDDING_FOLDERS = frozenset(("embeddings",))
MAX_EMBEDDING_BYTES = 8 << 20  # an embedding holds a few vectors (SDXL's: a few dozen KiB)


def read_embedding(path: Path) -> dict[str, Any]:
    """The embedding's tensors, named as in a safetensors embedding (``emb_params`` or ``{token: vector}``)."""
    import pickle

    import torch

    if path.stat().st_size > MAX_EMBEDDING_BYTES:
        raise NotAModel(f"a pickled file of {path.stat().st_size >> 20} MiB is not an embedding")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        why = f"not an embedding that loads safely (torch's weights-only reader refused it: {exc})"
        raise NotAModel(why[:500]) from None
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):  # A1111
        params = [v for v in data["string_to_param"].values() if isinstance(v, torch.Tensor)]
        if len(params) == 1:
            return {"emb_params": params[0]}
    elif isinstance(data, dict) and len(data) == 1:  # the diffusers trainer's {token: vector}
        ((name, value),) = data.items()
        if isinstance(name, str) and isinstance(value, torch.Tensor):
            return {name.strip("<>") or "emb": value}
    raise NotAModel("a pickled file without one embedding's vectors in it")


def embedding_entry_arch(path: Path) -> str:
    """The family the pickled embedding fits (as ``detect.embedding_arch`` says for safetensors)."""
    state = read_embedding(path)
    arch = embedding_arch({name: {"shape": list(t.shape)} for name, t in state.items()})
    if not arch:
        raise NotAModel("a pickled file whose tensors are not an embedding's")
    return arch
