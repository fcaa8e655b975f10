"""One module per task and per kind of conditioning, each a list of numbered straight-line steps.

* ``img2img.py`` – restyle the layer;
* ``inpaint.py`` – repaint the selection (transparent canvas in it is filled: expand);
* ``control.py`` – ControlNet conditioning, added to either task;
* ``job.py`` – what a job is (hooks, the prepared job, the result), ``common.py`` – preparing and
  finishing pixels, ``passes.py`` – running the pipeline with progress, cancel and previews.
"""

from __future__ import annotations

from typing import Any, Protocol

from sfumato.protocol import Submit

from . import img2img, inpaint
from .job import Job, Models


class Task(Protocol):
    """What a task module provides (img2img.py, inpaint.py)."""

    def check(self, req: Submit) -> None: ...  # refusals of this task beyond the common ones
    def prepare(self, req: Submit, models: Models, seed: int) -> Job: ...
    def inputs(self, job: Job, width: int, height: int) -> dict[str, Any]: ...  # its own pipeline arguments


TASKS: dict[str, Task] = {"img2img": img2img, "inpaint": inpaint}
