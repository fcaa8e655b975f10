"""The diffusion engine: one ``Submit`` in, result pixels out. Runs on the worker thread.

A dispatcher: :meth:`Engine.run` checks the request, has its task module (``tasks/img2img.py``,
``tasks/inpaint.py``, with ``tasks/control.py`` for ControlNet and ``tasks/reference.py`` for reference
images, ``tasks/upscale.py``) prepare the
job, and has it run it (``tasks/passes.py`` for the pipeline passes). Each task module lists its steps in order.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from sfumato.protocol import MODEL_KINDS, ErrorCode, ModelInfo, Submit

from .errors import JobFailure
from .imaging.preview import LatentPreviewer
from .models import addons
from .models.cache import PipelineCache
from .models.catalogue import Catalogue, ModelEntry
from .models.schedulers import check_scheduler
from .quiet import quiet_loaded_libraries
from .tasks import TASKS, control, passes, reference
from .tasks.job import EngineResult, JobCancelled, JobHooks, Models, NoHooks, steps_run

__all__ = ["Engine", "EngineResult", "JobCancelled", "JobHooks", "NoHooks", "pick_device", "pick_dtype", "steps_run"]


def pick_device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, precision: str = "auto") -> Any:
    import torch

    if precision == "fp32" or device == "cpu":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    return torch.float16


class Engine:
    def __init__(
        self,
        catalogue: Catalogue,
        device: str = "auto",
        precision: str = "auto",
        budget_bytes: int = 12 << 30,
        memory: str = "auto",
    ) -> None:
        quiet_loaded_libraries()  # progress bars and advice are meant for notebooks; a server logs
        self.catalogue = catalogue
        self.device = pick_device(device)
        self.cache = PipelineCache(self.device, pick_dtype(self.device, precision), budget_bytes, memory=memory)
        # one previewer per VAE object, forgotten with it (a VAE's id() may be reused by a later model)
        self._previewers: weakref.WeakKeyDictionary[Any, LatentPreviewer] = weakref.WeakKeyDictionary()

    def device_label(self) -> str:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            name = torch.cuda.get_device_name(torch.device(self.device))
            return f"{self.device} ({name}), memory {self.cache.memory_mode}"[:128]
        return self.device

    def models(self) -> list[ModelInfo]:
        return [e.info() for e in self.catalogue.all() if e.kind in MODEL_KINDS]

    def loaded_models(self) -> list[str]:
        return self.cache.loaded

    # ------------------------------------------------------------------ 1. checks

    def check(self, req: Submit) -> Models:
        """Everything that can be rejected before the job is queued; the models the job will run with."""
        entry = self.catalogue.get(req.model)
        check_scheduler(req.scheduler)
        if req.strength > 0 and steps_run(req.steps, req.strength) < 1:
            raise JobFailure(
                f"steps × strength = {req.steps} × {req.strength:g} runs no denoising step; it must be at least 1: "
                "raise steps or strength",
                "submit.steps",
                ErrorCode.INVALID_REQUEST,
            )
        controls = control.check(self.catalogue, req.controls, entry)
        references = reference.check(self.catalogue, req.references, entry)
        TASKS[req.task].check(req, self.catalogue)
        # LoRAs, embeddings and a VAE that do not exist or fit are refused before queueing
        return Models(entry, controls, self.addons(req, entry), references)

    def addons(self, req: Submit, entry: ModelEntry) -> addons.Addons:
        return addons.resolve(req, self.catalogue, entry, self.cache.fp16)

    # ------------------------------------------------------------------ 2. the task

    def run(self, req: Submit, seed: int, hooks: JobHooks | None = None) -> EngineResult:
        t0 = time.perf_counter()
        task = TASKS[req.task]
        job = task.prepare(req, self.check(req), seed)
        timings = {"prepare": time.perf_counter() - t0}
        runtime = passes.Runtime(self.catalogue, self.cache, self._previewers)
        out = task.generate(runtime, job, hooks or NoHooks(), timings)
        timings["total"] = time.perf_counter() - t0
        return out
