"""What the Ray tests run on each replica: the real replica engine (the tiny model), recording every step
it runs and able to end its replica's process at a chosen step. Replicas import this module (the test
puts this folder on their PYTHONPATH); the test reads what it wrote in ``folder``.

- ``<job id>.steps``: a line ``<pid> <step>`` per step that ran, then ``<pid> cancelled`` if it was cancelled;
- ``die-<job id>``: while the file holds a number above 0, a replica reaching ``DIE_AT`` of that job
  counts it down and ends its process on the spot (as a crashed driver or a killed machine would);
- ``lose-<job id>``: the same, but the engine raises the error of a lost device instead (after the
  ``die-`` file's count is spent), which the replica answers by ending itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sfumato.backend.cluster.replica import replica_engine
from sfumato.backend.config import Config
from sfumato.backend.devices import DeviceLost
from sfumato.backend.engine import JobCancelled
from sfumato.protocol import Image, ModelInfo, Submit

DIE_AT = 2


class _Hooks:
    def __init__(self, inner: Any, steps: Path, die: Path, lose: Path) -> None:
        self.inner, self.steps, self.die, self.lose = inner, steps, die, lose

    def started(self, steps: int, steps_requested: int, width: int, height: int, seeds: list[int]) -> None:
        self.inner.started(steps, steps_requested, width, height, seeds)

    def progress(self, step: int, total: int) -> None:
        with self.steps.open("a") as f:
            f.write(f"{os.getpid()} {step}\n")
        if step == DIE_AT and _count_down(self.die):
            os._exit(1)
        if step == DIE_AT and _count_down(self.lose):
            raise DeviceLost("CUDA error: an illegal memory access was encountered")
        self.inner.progress(step, total)

    def wants_preview(self) -> bool:
        return bool(self.inner.wants_preview())

    def preview(self, image: Image) -> None:
        self.inner.preview(image)

    def cancelled(self) -> bool:
        return bool(self.inner.cancelled())


def _count_down(path: Path) -> bool:
    """Whether ``path`` held a count above 0 (now one less)."""
    left = int(path.read_text()) if path.exists() else 0
    if left > 0:
        path.write_text(str(left - 1))
    return left > 0


class RecordingEngine:
    def __init__(self, folder: str, config: Config) -> None:
        self.inner, self.folder = replica_engine(config), Path(folder)

    def check(self, req: Submit) -> Any:
        return self.inner.check(req)

    def run(self, req: Submit, seed: int, hooks: Any) -> Any:
        steps = self.folder / f"{req.job_id}.steps"
        try:
            hooks = _Hooks(hooks, steps, self.folder / f"die-{req.job_id}", self.folder / f"lose-{req.job_id}")
            return self.inner.run(req, seed, hooks)
        except JobCancelled:
            with steps.open("a") as f:
                f.write(f"{os.getpid()} cancelled\n")
            raise

    def device_label(self) -> str:
        return str(self.inner.device_label())

    def models(self) -> list[ModelInfo]:
        return list(self.inner.models())

    def loaded_models(self) -> list[str]:
        return list(self.inner.loaded_models())
