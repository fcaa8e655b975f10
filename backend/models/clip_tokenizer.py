"""The CLIP tokenizer of every Stable Diffusion model, built offline from data an installed package ships.

Single-file checkpoints carry no tokenizer. CLIP's byte-pair vocabulary (``bpe_simple_vocab_16e6.txt.gz``,
the merge list OpenAI published) is data inside the ``open-clip-torch`` wheel; it is installed without
its dependencies (``pip install --no-deps``) and only that file is read, so neither open_clip nor
torchvision is ever imported. The vocabulary is rebuilt from the merges the way CLIP numbers it: the
256 byte symbols, the same with the end-of-word mark, one token per merge, then the two specials.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
from pathlib import Path
from typing import Any

from sfumato.protocol import ErrorCode

from ..errors import JobFailure

VOCAB_PACKAGE = "open-clip-torch"
VOCAB_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # CLIP keeps this many merges, so the vocabulary has 49408 entries
START, END = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
# CLIP ViT-L (SD1.x, SDXL's first encoder) pads with the end token; OpenCLIP (SD2.x, SDXL's bigG) with "!".
PAD = {"clip-l": END, "openclip": "!"}


def _read_merges() -> list[str]:
    try:
        dist = importlib.metadata.distribution(VOCAB_PACKAGE)
        data = gzip.decompress(Path(str(dist.locate_file(VOCAB_FILE))).read_bytes())
    except (importlib.metadata.PackageNotFoundError, OSError) as exc:
        raise JobFailure(
            f"the CLIP tokenizer's vocabulary is missing ({exc}); install it with "
            f"`.venv/bin/python -m pip install --no-deps {VOCAB_PACKAGE}` (./install/start does this)",
            "submit.model",
            ErrorCode.MISSING_WEIGHTS,
        ) from None
    lines = data.decode("utf-8").split("\n")
    return lines[1 : MERGES + 1]  # the first line is a version header


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in CLIP's order: printable bytes stand for
    themselves and come first, the others map to code points from 256 on, so code-point order is it."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


@functools.lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's vocabulary (token → id) and merges (pairs), as its ``vocab.json`` and ``merges.txt`` hold them."""
    merges = [tuple(line.split()) for line in _read_merges()]
    if len(merges) != MERGES or any(len(m) != 2 for m in merges):
        raise JobFailure(
            f"{VOCAB_FILE} in {VOCAB_PACKAGE} is not CLIP's merge list; reinstall {VOCAB_PACKAGE}",
            "submit.model",
            ErrorCode.MISSING_WEIGHTS,
        )
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), START, END]
    return {t: i for i, t in enumerate(tokens)}, tuple((a, b) for a, b in merges)


def clip_tokenizer(kind: str = "clip-l") -> Any:
    """A ``CLIPTokenizer`` for ``clip-l`` or ``openclip`` (same vocabulary, different padding)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=PAD[kind], model_max_length=MAX_LENGTH)
