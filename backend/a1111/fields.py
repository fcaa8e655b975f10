"""A1111 request fields: their names, defaults and ranges as A1111's API has them, checked and typed.

Values are coerced the way A1111's (pydantic) models coerce them — ``20.0`` and ``"20"`` are the
integer 20, ``0``/``1`` are booleans — and unknown fields are ignored, as A1111 ignores them. A
value that cannot be used raises :class:`FieldError`, which the routes answer with 422 naming the
field. Fields A1111 has but Sfumato cannot honour are refused when they ask for something
(``restore_faces: true``), never silently dropped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from sfumato.protocol import MAX_REFERENCES, MAX_STEPS, ModelInfo

MAX_SEED = (1 << 32) - 1
MAX_MASK_BLUR = 256

Loc = tuple[str | int, ...]


class FieldError(Exception):
    """A request field that cannot be used: where it is in the body and what was expected."""

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc, self.message = loc, message
        super().__init__(f"{_dotted(loc)}: {message}" if loc else message)


def _dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))


@dataclass(frozen=True)
class Spec:
    kind: str  # str | int | float | bool | list | dict
    default: Any
    lo: float | None = None
    hi: float | None = None
    nullable: bool = False


_COMMON: dict[str, Spec] = {
    "prompt": Spec("str", ""),
    "negative_prompt": Spec("str", ""),
    "styles": Spec("list", None, nullable=True),
    "seed": Spec("int", -1, -1, MAX_SEED),
    "subseed": Spec("int", -1, -1, MAX_SEED),
    "subseed_strength": Spec("float", 0.0, 0.0, 1.0),
    "sampler_name": Spec("str", None, nullable=True),
    "sampler_index": Spec("str", "Euler"),  # the API's default sampler when sampler_name is absent
    "scheduler": Spec("str", None, nullable=True),
    "batch_size": Spec("int", 1, 1, None),  # upper bounds come from the server's limits
    "n_iter": Spec("int", 1, 1, None),
    "steps": Spec("int", 50, 1, MAX_STEPS),
    "cfg_scale": Spec("float", 7.0, 0.0, 30.0),
    "width": Spec("int", 512, 8, 65535),
    "height": Spec("int", 512, 8, 65535),
    "restore_faces": Spec("bool", None, nullable=True),
    "tiling": Spec("bool", None, nullable=True),
    "override_settings": Spec("dict", None, nullable=True),
    "script_name": Spec("str", None, nullable=True),
    "send_images": Spec("bool", True),
    "save_images": Spec("bool", False),
    "alwayson_scripts": Spec("dict", {}),
}
IMG2IMG: dict[str, Spec] = {
    **_COMMON,
    "init_images": Spec("list", None, nullable=True),
    "resize_mode": Spec("int", 0, 0, 3),
    "denoising_strength": Spec("float", 0.75, 0.0, 1.0),
    "mask": Spec("str", None, nullable=True),
    "mask_blur_x": Spec("int", 4, 0, MAX_MASK_BLUR),
    "mask_blur_y": Spec("int", 4, 0, MAX_MASK_BLUR),
    "mask_blur": Spec("int", None, 0, MAX_MASK_BLUR, nullable=True),  # when given: both of the above
    "mask_round": Spec("bool", True),
    "inpainting_fill": Spec("int", 0, 0, 3),
    "inpaint_full_res": Spec("bool", True),
    "inpaint_full_res_padding": Spec("int", 0, 0, 65535),
    "inpainting_mask_invert": Spec("int", 0, 0, 1),
    "include_init_images": Spec("bool", False),
}
TXT2IMG: dict[str, Spec] = {
    **_COMMON,
    "enable_hr": Spec("bool", False),
    "denoising_strength": Spec("float", None, 0.0, 1.0, nullable=True),  # the hires pass's; unused
}

# Fields that ask for a feature Sfumato does not have: refused when truthy, with why.
UNSUPPORTED = {
    "styles": "saved prompt styles are not supported: put the text in the prompt",
    "subseed_strength": "variation seeds (subseed_strength > 0) are not supported",
    "restore_faces": "face restoration is not supported",
    "tiling": "tiling is not supported",
    "script_name": "scripts are not supported (ControlNet through alwayson_scripts is)",
    "enable_hr": "the hires. fix is not supported: Sfumato's resolution autopilot refines large images itself",
}


@dataclass(frozen=True)
class Params:
    """A txt2img or img2img request, checked; the img2img fields keep their defaults for txt2img."""

    prompt: str
    negative_prompt: str
    seed: int
    sampler_name: str | None
    sampler_index: str
    scheduler: str | None
    batch_size: int
    n_iter: int
    steps: int
    cfg_scale: float
    width: int
    height: int
    override_settings: dict[str, Any] | None
    send_images: bool
    alwayson_scripts: dict[str, Any]
    init_images: list[Any] | None = None
    resize_mode: int = 0
    denoising_strength: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0


def parse(body: Any, specs: dict[str, Spec], max_batch: int, max_jobs: int) -> tuple[Params, dict[str, Any]]:
    """The checked request, and the ``parameters`` an A1111 response echoes (every field, defaults filled)."""
    if not isinstance(body, dict):
        raise FieldError((), f"expected a JSON object, got {_describe(body)}")
    values = {name: coerce(spec, body.get(name, spec.default), (name,)) for name, spec in specs.items()}
    for name, why in UNSUPPORTED.items():
        if values.get(name):
            raise FieldError((name,), why)
    if values["batch_size"] > max_batch:
        raise FieldError(
            ("batch_size",), f"expected at most {max_batch} (the server's max_batch), got {values['batch_size']}"
        )
    if values["n_iter"] > max_jobs:
        raise FieldError(
            ("n_iter",), f"expected at most {max_jobs} (jobs one client may queue), got {values['n_iter']}"
        )
    if values.get("mask_blur") is not None:
        values["mask_blur_x"] = values["mask_blur_y"] = values["mask_blur"]
    names = {f.name for f in fields(Params)}
    params = Params(**{k: v for k, v in values.items() if k in names})
    echo = dict(values)
    if not values.get("include_init_images"):
        echo.update({k: None for k in ("init_images", "mask") if k in echo})  # as A1111: not echoed back
    return params, echo


def coerce(spec: Spec, value: Any, loc: Loc) -> Any:
    if value is None:
        if spec.nullable or spec.default is None:
            return None
        raise FieldError(loc, f"expected {_kind_name(spec)}, got null")
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            raise FieldError(loc, f"expected a string, got {_describe(value)}")
        return value
    if kind == "bool":
        return _bool(value, loc)
    if kind in ("int", "float"):
        number = _number(value, kind == "int", loc)
        if (spec.lo is not None and number < spec.lo) or (spec.hi is not None and number > spec.hi):
            raise FieldError(loc, f"expected {_kind_name(spec)}, got {number:g}")
        return number
    if kind == "list":
        if not isinstance(value, list):
            raise FieldError(loc, f"expected a list, got {_describe(value)}")
        return value
    if not isinstance(value, dict):
        raise FieldError(loc, f"expected an object, got {_describe(value)}")
    return value


def _bool(value: Any, loc: Loc) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise FieldError(loc, f"expected a boolean, got {_describe(value)}")


_INT_TEXT = re.compile(r"\s*[+-]?\d{1,19}\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d{1,19}(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?\s*")


def _number(value: Any, integer: bool, loc: Loc) -> Any:
    what = "an integer" if integer else "a number"
    if isinstance(value, bool):
        number: float = int(value)
    elif isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and (_INT_TEXT if integer else _FLOAT_TEXT).fullmatch(value):
        number = int(value) if integer else float(value)
    else:
        raise FieldError(loc, f"expected {what}, got {_describe(value)}")
    if not math.isfinite(number):
        raise FieldError(loc, f"expected a finite number, got {value!r}")
    if integer:
        if number != int(number):
            raise FieldError(loc, f"expected an integer, got {number:g}")
        return int(number)
    return float(number)


def _kind_name(spec: Spec) -> str:
    base = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}.get(spec.kind, spec.kind)
    if spec.lo is not None and spec.hi is not None:
        return f"{base} from {spec.lo:g} to {spec.hi:g}"
    if spec.lo is not None:
        return f"{base} of at least {spec.lo:g}"
    return base


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


# --------------------------------------------------------------------------- samplers

# A1111 sampler name (and aliases) → Sfumato scheduler, per schedule type. "automatic" is the
# sampler's own default schedule: Karras for DPM++ 2M since A1111 1.9, which also split the older
# "DPM++ 2M Karras" name into sampler and schedule (clients send both forms).
SAMPLERS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "Euler a": (("k_euler_a", "k_euler_ancestral"), {"automatic": "euler_a"}),
    "Euler": (("k_euler",), {"automatic": "euler"}),
    "DPM++ 2M": (("k_dpmpp_2m",), {"automatic": "dpmpp_2m_karras", "karras": "dpmpp_2m_karras", "uniform": "dpmpp_2m"}),
    "DPM++ 2M Karras": (("k_dpmpp_2m_ka",), {"automatic": "dpmpp_2m_karras", "karras": "dpmpp_2m_karras"}),
    "DDIM": (("ddim",), {"automatic": "ddim"}),
    "UniPC": (("unipc",), {"automatic": "unipc"}),
}
SCHEDULES = {"automatic": "Automatic", "uniform": "Uniform", "karras": "Karras"}  # name → label


def scheduler_for(params: Params) -> str:
    """Sfumato's scheduler for an A1111 sampler and schedule type (labels and names both accepted)."""
    sampler = params.sampler_name or params.sampler_index
    field = "sampler_name" if params.sampler_name else "sampler_index"
    by_name = {n.lower(): n for n in SAMPLERS} | {a: n for n, (aliases, _) in SAMPLERS.items() for a in aliases}
    name = by_name.get(sampler.strip().lower())
    if name is None:
        raise FieldError((field,), f"expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    schedule = (params.scheduler or "automatic").strip().lower().replace(" ", "_")
    schedule = {label.lower(): key for key, label in SCHEDULES.items()}.get(schedule, schedule)
    ours = SAMPLERS[name][1].get(schedule)
    if ours is None:
        choices = ", ".join(SCHEDULES[s] for s in SAMPLERS[name][1])
        raise FieldError(("scheduler",), f"expected one of {choices} with {name}, got {params.scheduler!r}")
    return ours


# --------------------------------------------------------------------------- models


def find_model(name: str, models: list[ModelInfo], kind: str) -> ModelInfo | None:
    """A catalogue model by an A1111 title: ``id``, ``id [hash]``, a file name with extension, or its last part."""
    base = re.sub(r"\s*\[[0-9a-fA-F]{0,64}\]\s*$", "", name).strip()
    stem = re.sub(r"\.(safetensors|ckpt|pt|pth|bin)$", "", base, flags=re.IGNORECASE)
    candidates = [m for m in models if m.kind == kind]
    for key in (base, stem):
        for m in candidates:
            if m.id == key:
                return m
    for m in candidates:
        if m.id.rsplit("/", 1)[-1] == stem.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]:
            return m
    return None


# --------------------------------------------------------------------------- ControlNet units

CONTROLNET_UNIT: dict[str, Spec] = {
    "enabled": Spec("bool", True),
    "module": Spec("str", "none"),
    "model": Spec("str", "None"),
    "weight": Spec("float", 1.0, 0.0, 2.0),
    "guidance_start": Spec("float", 0.0, 0.0, 1.0),
    "guidance_end": Spec("float", 1.0, 0.0, 1.0),
}
# the extension's resize modes, by index and by name; "Crop and Resize" is its default
CONTROLNET_RESIZE = {"just resize": 0, "crop and resize": 1, "resize and fill": 2, "0": 0, "1": 1, "2": 2}
# the extension's preprocessor names (by prefix) → Sfumato control type; only Canny is extracted here
MODULES = {
    "canny": "canny",
    "depth": "depth",
    "lineart": "lineart",
    "openpose": "pose",
    "dw_openpose": "pose",
    "scribble": "scribble",
    "softedge": "softedge",
    "tile": "tile",
}
IP_ADAPTER_MODULE = "ip-adapter"  # the extension's IP-Adapter preprocessors (ip-adapter_clip_sd15, ip-adapter-auto, …)
MODULE_LIST = ("none", "canny", "ip-adapter-auto")  # what /controlnet/module_list offers: others need annotators


@dataclass(frozen=True)
class ControlUnit:
    index: int
    image: str | None  # base64; None: the init image
    type: str | None  # None: the model's own type
    preprocess: bool
    model: str | None  # the name as sent; None: picked by type
    weight: float
    start: float
    end: float
    resize_mode: int
    adapter: bool = False  # an IP-Adapter unit: its image is a reference (protocol 1.6), not a control map


def control_units(scripts: dict[str, Any], max_controls: int) -> list[ControlUnit]:
    """The enabled ControlNet units of ``alwayson_scripts`` (no other always-on script exists here)."""
    units: list[ControlUnit] = []
    for key, script in scripts.items():
        if key.lower() != "controlnet":
            raise FieldError(("alwayson_scripts", key), "no such always-on script: only controlnet is supported")
        args = script.get("args") if isinstance(script, dict) else None
        if not isinstance(args, list):
            raise FieldError(("alwayson_scripts", key, "args"), f"expected a list of units, got {_describe(args)}")
        for i, raw in enumerate(args):
            loc: Loc = ("alwayson_scripts", key, "args", i)
            unit = _unit(raw, i, loc)
            if unit is not None:
                units.append(unit)
    controls = sum(1 for u in units if not u.adapter)
    if controls > max_controls:
        raise FieldError(
            ("alwayson_scripts",), f"expected at most {max_controls} enabled ControlNet units, got {controls}"
        )
    if len(units) - controls > MAX_REFERENCES:
        raise FieldError(
            ("alwayson_scripts",), f"expected at most {MAX_REFERENCES} IP-Adapter units, got {len(units) - controls}"
        )
    return units


def _unit(raw: Any, index: int, loc: Loc) -> ControlUnit | None:
    if not isinstance(raw, dict):
        raise FieldError(loc, f"expected a ControlNet unit object, got {_describe(raw)}")
    v = {name: coerce(spec, raw.get(name, spec.default), (*loc, name)) for name, spec in CONTROLNET_UNIT.items()}
    if not v["enabled"]:
        return None
    image = raw.get("image", raw.get("input_image"))
    if isinstance(image, dict):  # newer versions of the extension: {"image": ..., "mask": ...}
        image = image.get("image")
    if image is not None and not isinstance(image, str):
        raise FieldError((*loc, "image"), f"expected a base64 image, got {_describe(image)}")
    mode = str(raw.get("resize_mode", "Crop and Resize")).strip().lower()
    if mode not in CONTROLNET_RESIZE:
        raise FieldError(
            (*loc, "resize_mode"), f"expected Just Resize, Crop and Resize or Resize and Fill, got {mode!r}"
        )
    control_mode = str(raw.get("control_mode", "balanced")).strip().lower()
    if control_mode not in ("balanced", "0"):
        raise FieldError((*loc, "control_mode"), f"only the Balanced control mode is supported, got {control_mode!r}")
    module = v["module"].strip().lower()
    if module.replace("_", "-").startswith(IP_ADAPTER_MODULE):
        return _adapter_unit(v, module, image, index, loc)
    if module in ("none", ""):
        control_type = None
    else:
        control_type = next((t for prefix, t in MODULES.items() if module.startswith(prefix)), None)
        if control_type is None:
            raise FieldError((*loc, "module"), f"unknown preprocessor {v['module']!r}: use none (a ready map) or canny")
    model = None if v["model"].strip().lower() in ("none", "") else v["model"]
    if control_type is None and model is None:
        raise FieldError((*loc, "model"), "name a ControlNet model, a preprocessor (module), or both")
    if not v["guidance_start"] < v["guidance_end"]:
        raise FieldError((*loc, "guidance_end"), "expected guidance_start < guidance_end")
    return ControlUnit(
        index=index,
        image=image,
        type=control_type,
        preprocess=control_type is not None,
        model=model,
        weight=v["weight"],
        start=v["guidance_start"],
        end=v["guidance_end"],
        resize_mode=CONTROLNET_RESIZE[mode],
    )


def _adapter_unit(v: dict[str, Any], module: str, image: str | None, index: int, loc: Loc) -> ControlUnit:
    """An IP-Adapter unit: its image carries its look into the job (a reference, mode full), its weight is the
    reference's weight, its model names the IP-Adapter (none: one that fits the checkpoint)."""
    if any(word in module for word in ("face", "pulid", "instant")):
        raise FieldError(
            (*loc, "module"), f"{v['module']!r}: face-identity adapters (they need insightface) are not supported"
        )
    if (v["guidance_start"], v["guidance_end"]) != (0.0, 1.0):
        raise FieldError((*loc, "guidance_start"), "an IP-Adapter unit runs over the whole schedule here: use 0 and 1")
    model = None if v["model"].strip().lower() in ("none", "") else v["model"]
    return ControlUnit(index, image, None, False, model, v["weight"], 0.0, 1.0, 0, adapter=True)
