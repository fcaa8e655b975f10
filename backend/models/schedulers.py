"""Scheduler names painters choose from, and a fresh scheduler per job (schedulers carry state)."""

from __future__ import annotations

from typing import Any

from sfumato.protocol import SCHEDULERS as NAMES
from sfumato.protocol import ErrorCode

from ..errors import JobFailure

# protocol name → (diffusers class, extra config); tests/backend/test_engine.py checks it covers NAMES
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),  # for LCM-distilled checkpoints and LoRAs (live painting's fast preset)
}


def check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise JobFailure(
            f"unknown scheduler {name!r}; expected one of {', '.join(NAMES)}",
            "submit.scheduler",
            ErrorCode.INVALID_REQUEST,
        )


# Settings some entries change: dropped from the config a new scheduler starts from, so a job never
# inherits them from the scheduler of the job before (dpmpp_2m after dpmpp_2m_karras stays plain).
_OURS = frozenset(key for _, extra in SCHEDULERS.values() for key in extra)


def make_scheduler(name: str, base_config: Any) -> Any:
    import diffusers

    check_scheduler(name)
    cls_name, extra = SCHEDULERS[name]
    config = {k: v for k, v in dict(base_config).items() if k not in _OURS}
    return getattr(diffusers, cls_name).from_config(config, **extra)
