"""LoRAs: chosen in a request (or A1111-style in the prompt) and applied for that job only.

diffusers' own loader reads them (kohya/A1111 and diffusers layouts, LoCon convolutions too) and
injects peft adapters into the UNet and text encoders. An adapter stays loaded, disabled, after
its job: a disabled adapter runs the untouched base layer (the next job without it is
bit-identical to one that never saw it), and the next job with it skips the disk.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sfumato.protocol import ErrorCode, Submit
from sfumato.protocol import arch_family as family

from ..errors import JobFailure
from .catalogue import Catalogue, ModelEntry

# A1111's extra-network syntax: <lora:NAME>, <lora:NAME:WEIGHT> (it also knows separate text-encoder
# and UNet weights, <lora:NAME:TE:UNET>, which Sfumato refuses rather than half-honours)
PROMPT_TAG = re.compile(r"<lora:([^<>:]+)((?::[^<>:]*)*)>")
MAX_ADAPTERS = 8  # adapters kept loaded per model; beyond that, ones the job did not use are deleted

Applied = list[tuple[ModelEntry, float]]


def split_prompt(prompt: str, field: str = "submit.prompt") -> tuple[str, list[tuple[str, float]]]:
    """The prompt without its ``<lora:…>`` tags, and the (name, weight) of each tag in order."""
    found: list[tuple[str, float]] = []
    for m in PROMPT_TAG.finditer(prompt):
        weights = m[2].split(":")[1:]
        if len(weights) > 1:
            raise JobFailure(
                f"{m[0]}: separate text-encoder and UNet weights are not supported; give one weight",
                field,
                ErrorCode.INVALID_REQUEST,
            )
        try:
            weight = float(weights[0]) if weights and weights[0].strip() else 1.0
        except ValueError:
            raise JobFailure(f"{m[0]}: the weight is not a number", field, ErrorCode.INVALID_REQUEST) from None
        found.append((m[1].strip(), weight))
    return " ".join(PROMPT_TAG.sub(" ", prompt).split()) if found else prompt, found


def resolve(req: Submit, catalogue: Catalogue, checkpoint: ModelEntry) -> tuple[str, Applied]:
    """The prompt to encode and the LoRAs of a request: the field's, then the prompt's (a LoRA in both keeps
    the field's weight). Each must fit the checkpoint's family."""
    prompt, tags = split_prompt(req.prompt)
    chosen: Applied = []
    for i, lora in enumerate(req.loras):
        chosen.append((catalogue.get(lora.id, "lora", f"submit.loras[{i}].id"), lora.weight))
    for name, weight in tags:
        entry = catalogue.named("lora", name, "submit.prompt")
        if all(entry.id != e.id for e, _ in chosen):
            chosen.append((entry, weight))
    for entry, _ in chosen:
        if family(entry.arch) != family(checkpoint.arch):
            raise JobFailure(
                f"LoRA {entry.id!r} is for {family(entry.arch)} models; {checkpoint.id!r} is {family(checkpoint.arch)}",
                "submit.loras",
                ErrorCode.INVALID_REQUEST,
            )
    return prompt, chosen


def adapter_name(entry: ModelEntry) -> str:
    """A peft adapter name (no dots) for this file as it is on disk now: an edited file loads afresh."""
    stat = entry.path.stat()
    key = f"{entry.id}\0{stat.st_mtime_ns}\0{stat.st_size}"
    return "lora_" + hashlib.sha1(key.encode()).hexdigest()[:16]


def _loaded(pipe: Any) -> list[str]:
    return sorted({name for names in pipe.get_list_adapters().values() for name in names})


@contextmanager
def applied(pipe: Any, checkpoint: ModelEntry, loras: Applied) -> Iterator[None]:
    """``loras`` active in ``pipe`` (and every pipeline sharing its modules) while the block runs."""
    if not loras:
        yield
        return
    names = [_load(pipe, checkpoint, entry) for entry, _ in loras]
    pipe.enable_lora()
    pipe.set_adapters(names, [weight for _, weight in loras])
    try:
        yield
    finally:
        pipe.disable_lora()  # adapters stay loaded; a disabled adapter runs only the base layer
        _trim(pipe, keep=names)


def _load(pipe: Any, checkpoint: ModelEntry, entry: ModelEntry) -> str:
    name = adapter_name(entry)
    if name in _loaded(pipe):
        return name
    with warnings.catch_warnings():
        # peft warns when a model gets a second adapter (the design here) and, when diffusers removes a
        # failed one, names the adapter it marks active instead (all stay disabled; see below)
        warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
        warnings.filterwarnings("ignore", "Adapter .* was active which is now deleted", UserWarning)
        try:
            pipe.load_lora_weights(str(entry.path), adapter_name=name)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            if name in _loaded(pipe):  # a partly injected adapter must not linger
                pipe.delete_adapters(name)
            pipe.disable_lora()
            raise JobFailure(
                f"LoRA {entry.id!r} does not fit {checkpoint.id!r}: {str(exc)[:500]}",
                "submit.loras",
                ErrorCode.INVALID_REQUEST,
            ) from None
    return name


def _trim(pipe: Any, keep: list[str]) -> None:
    loaded = _loaded(pipe)
    extra = [n for n in loaded if n not in keep][: max(0, len(loaded) - MAX_ADAPTERS)]
    if extra:
        pipe.delete_adapters(extra)
