"""The PDB procedures' arguments as data: registered by ``plugin`` and read back into a request here.

One table serves both procedures (and the GUI dialog GIMP builds from it), so a script, the batch
mode and the menu entries see the same names, ranges and defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sfumato.plugin.core.references import DEFAULT_REFERENCE_WEIGHT, REFERENCE_WEIGHT_RANGE, ReferenceSpec
from sfumato.plugin.core.requests import ControlSpec, GenerationParams
from sfumato.plugin.core.settings import DEFAULT_SERVER
from sfumato.protocol import (
    CONTROL_TYPES,
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_REFERENCE_MODE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    INPAINT_STRENGTH,
    MAX_CONTROL_STRENGTH,
    MAX_STEPS,
    REFERENCE_MODES,
    SCHEDULERS,
    PreviewSettings,
)

MAX_BATCH = 8  # the backend's default max_batch; a larger one is refused with the backend's own words
MAX_SEED = 2**31 - 1  # a PDB int is 32-bit signed; -1 means "random"

RESTYLE, INPAINT = "restyle", "inpaint"
PROCEDURES = {"python-fu-sfumato-restyle": RESTYLE, "python-fu-sfumato-inpaint": INPAINT}
WINDOW_PROCEDURE = "python-fu-sfumato"


class BadArguments(ValueError):
    """An argument no backend would accept; the message says which and what is allowed."""


@dataclass(frozen=True)
class Arg:
    name: str  # PDB name
    kind: str  # "string" | "int" | "double"
    nick: str
    blurb: str
    default: Any
    lo: float = 0
    hi: float = 0


def arguments(task: str) -> tuple[Arg, ...]:
    strength = INPAINT_STRENGTH if task == INPAINT else DEFAULT_STRENGTH
    return (
        Arg("server-url", "string", "Server", "Sfumato backend, ws://HOST:PORT", DEFAULT_SERVER),
        Arg("token", "string", "Token", "shared secret of a non-loopback backend (empty: none)", ""),
        Arg("model", "string", "Model", "checkpoint catalogue id (see `sfumato models`)", DEFAULT_MODEL),
        Arg("prompt", "string", "Prompt", "what to paint", ""),
        Arg("negative-prompt", "string", "Negative prompt", "what to avoid", ""),
        Arg("strength", "double", "Strength", "0 = unchanged, 0.4–0.6 restyles, 1 = new picture", strength, 0, 1),
        Arg("steps", "int", "Steps", "schedule length at strength 1", DEFAULT_STEPS, 1, MAX_STEPS),
        Arg("guidance", "double", "Guidance", "how literally the prompt is followed", DEFAULT_GUIDANCE, 0, 30),
        Arg("sampler", "string", "Sampler", ", ".join(SCHEDULERS), DEFAULT_SCHEDULER),
        Arg("seed", "int", "Seed", "-1 = random; image i of a batch uses seed + i", -1, -1, MAX_SEED),
        Arg("batch", "int", "Batch", "variations; each becomes its own layer", 1, 1, MAX_BATCH),
        Arg("reference-layer", "string", "Reference layer", "a layer whose look to take (IP-Adapter); empty: none", ""),
        Arg(
            "reference-weight",
            "double",
            "Reference weight",
            "0 = no effect, 1 = as trained",
            DEFAULT_REFERENCE_WEIGHT,
            *REFERENCE_WEIGHT_RANGE,
        ),
        Arg("reference-mode", "string", "Reference mode", ", ".join(REFERENCE_MODES), DEFAULT_REFERENCE_MODE),
        Arg("control-type", "string", "ControlNet", "empty: none; " + ", ".join(CONTROL_TYPES), ""),
        Arg("control-layer", "string", "Control layer", "the layer the control is taken from; empty: this one", ""),
        Arg("control-strength", "double", "Control strength", "1 = as trained", 1.0, 0, MAX_CONTROL_STRENGTH),
        Arg("control-is-map", "int", "Control layer is a map", "1: it already is the map (no extraction)", 0, 0, 1),
    )


@dataclass(frozen=True)
class Request:
    task: str
    server_url: str
    token: str
    params: GenerationParams


def request_from(task: str, values: Mapping[str, Any], previews: bool = True) -> Request:
    """Arguments by PDB name → what to connect to and what to generate. Missing names take their defaults."""
    if task not in (RESTYLE, INPAINT):
        raise BadArguments(f"task: expected {RESTYLE!r} or {INPAINT!r}, got {task!r}")
    v = {a.name: values.get(a.name, a.default) for a in arguments(task)}
    for a in arguments(task):  # GIMP's dialog leaves an untouched empty text argument as None, not ""
        if a.kind == "string" and v[a.name] is None:
            v[a.name] = ""
    for a in arguments(task):
        if a.kind != "string" and not a.lo <= v[a.name] <= a.hi:
            raise BadArguments(f"{a.name}: expected {a.lo:g}..{a.hi:g}, got {v[a.name]}")
    url = str(v["server-url"]).strip() or DEFAULT_SERVER
    if not url.startswith(("ws://", "wss://")):
        raise BadArguments(f"server-url: expected ws://HOST:PORT, got {url!r}")
    sampler = str(v["sampler"]).strip() or DEFAULT_SCHEDULER
    if sampler not in SCHEDULERS:
        raise BadArguments(f"sampler: expected one of {', '.join(SCHEDULERS)}, got {sampler!r}")
    mode = str(v["reference-mode"]).strip() or DEFAULT_REFERENCE_MODE
    if mode not in REFERENCE_MODES:
        raise BadArguments(f"reference-mode: expected one of {', '.join(REFERENCE_MODES)}, got {mode!r}")
    layer = str(v["reference-layer"])  # a layer's exact name (GIMP allows spaces at either end); blank: none
    references = (ReferenceSpec(layer=layer, weight=float(v["reference-weight"]), mode=mode),) if layer.strip() else ()
    control = str(v["control-type"]).strip()
    if control and control not in CONTROL_TYPES:
        raise BadArguments(f"control-type: expected one of {', '.join(CONTROL_TYPES)} (or empty), got {control!r}")
    source = str(v["control-layer"])  # exact, as the reference's; blank: the layer the procedure runs on
    spec = ControlSpec(control, source if source.strip() else None, float(v["control-strength"]))
    controls = (replace(spec, preprocess=not int(v["control-is-map"])),) if control else ()
    params = GenerationParams(
        model=str(v["model"]).strip() or DEFAULT_MODEL,
        prompt=str(v["prompt"]),
        negative_prompt=str(v["negative-prompt"]),
        strength=float(v["strength"]),
        steps=int(v["steps"]),
        guidance=float(v["guidance"]),
        seed=None if int(v["seed"]) < 0 else int(v["seed"]),
        scheduler=sampler,
        batch_size=int(v["batch"]),
        preview=PreviewSettings(enabled=previews),
        references=references,
        controls=controls,
    )
    return Request(task, url, str(v["token"]), params)
