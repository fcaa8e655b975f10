"""Scheduler names painters choose from, and a fresh scheduler per job (schedulers carry state)."""

from __future__ import annotations

from typing import Any

from sfumato.protocol import ErrorCode, ProtocolError

# name → (diffusers class, extra config)
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
}


def check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise ProtocolError(
            f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}",
            "submit.scheduler",
            ErrorCode.INVALID_REQUEST,
        )


def make_scheduler(name: str, base_config: Any) -> Any:
    import diffusers

    check_scheduler(name)
    cls_name, extra = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(base_config, **extra)
