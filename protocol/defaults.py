"""What a request holds when the painter changes nothing: written once, read by every editor and the backend."""

from __future__ import annotations

# The schedulers a request may name; the backend maps each to a diffusers scheduler.
SCHEDULERS = ("euler_a", "euler", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "lcm")  # lcm: since 1.6

MAX_STEPS = 200  # submit.steps
DEFAULT_MODEL = "builtin:tiny"  # the built-in test model every backend has (it paints noise)
DEFAULT_STRENGTH = 0.6
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.0
DEFAULT_SCHEDULER = SCHEDULERS[0]
DEFAULT_PREVIEWS_PER_SECOND = 4.0
INPAINT_STRENGTH = 1.0  # a selection to repaint: a new picture inside it, by default
UPSCALE_STRENGTH = 0.3  # the refine of an upscale: adds detail, keeps every shape
REFERENCE_MODES = ("style", "full", "composition")  # what of a reference image a job takes (submit.references)
DEFAULT_REFERENCE_MODE = "style"  # the look of the reference, not its content
MAX_REFERENCE_WEIGHT = 2.0  # reference.weight: 0 drops it, 1 is as trained
MAX_CONTROL_STRENGTH = 2.0  # control.strength: ControlNet's conditioning scale, 1 as trained
REFERENCE_SIDE = 224  # px: what IP-Adapters' image encoders see; editors scale a reference's shorter side to it

__all__ = [
    "DEFAULT_GUIDANCE",
    "DEFAULT_MODEL",
    "DEFAULT_PREVIEWS_PER_SECOND",
    "DEFAULT_REFERENCE_MODE",
    "DEFAULT_SCHEDULER",
    "DEFAULT_STEPS",
    "DEFAULT_STRENGTH",
    "INPAINT_STRENGTH",
    "MAX_CONTROL_STRENGTH",
    "MAX_REFERENCE_WEIGHT",
    "MAX_STEPS",
    "REFERENCE_MODES",
    "REFERENCE_SIDE",
    "SCHEDULERS",
    "UPSCALE_STRENGTH",
]
