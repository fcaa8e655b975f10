"""One module per task and per kind of conditioning, each a list of numbered straight-line steps.

* ``img2img.py`` – restyle the layer;
* ``inpaint.py`` – repaint the selection (transparent canvas in it is filled: expand);
* ``upscale.py`` – enlarge ×2/×4 and refine in blended tiles;
* ``control.py`` – ControlNet conditioning, added to img2img or inpaint;
* ``reference.py`` – reference images through IP-Adapters, added to img2img or inpaint;
* ``job.py`` – what a job is (hooks, the prepared job, the result), ``common.py`` – preparing and
  finishing pixels, ``passes.py`` – running the pipeline with progress, cancel and previews.
"""

from __future__ import annotations

from typing import Any, Protocol

from sfumato.protocol import Submit

from ..models.catalogue import Catalogue
from . import img2img, inpaint, upscale
from .job import EngineResult, Job, JobHooks, Models
from .passes import Runtime


class Task(Protocol):
    """What a task module provides (img2img.py, inpaint.py, upscale.py)."""

    def check(self, req: Submit, catalogue: Catalogue) -> None: ...  # refusals beyond the common ones
    def prepare(self, req: Submit, models: Models, seed: int) -> Job: ...
    def inputs(self, job: Job, width: int, height: int) -> dict[str, Any]: ...  # its own pipeline arguments
    def generate(self, rt: Runtime, job: Job, hooks: JobHooks, timings: dict[str, float]) -> EngineResult: ...


TASKS: dict[str, Task] = {"img2img": img2img, "inpaint": inpaint, "upscale": upscale}
