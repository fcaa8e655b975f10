from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

logging.getLogger("websockets").setLevel(logging.WARNING)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the built-in tiny model is written (once per test run, like a user's first start)."""
    return tmp_path_factory.mktemp("sfumato-cache")


@pytest.fixture(scope="session")
def engine(model_cache: Path) -> Any:
    from sfumato.backend.engine import Engine
    from sfumato.backend.models.catalogue import Catalogue

    return Engine(Catalogue.scan([], model_cache), device="cpu")


@pytest.fixture(scope="session")
def backend_url(model_cache: Path) -> Any:
    """A real backend in its own process (`python -m sfumato.backend --port 0`), as a painter runs it."""
    from helpers import backend_process

    with backend_process(model_cache) as (url, _):
        yield url


@dataclass(frozen=True)
class PaintersBackend:
    url: str
    output: deque[str]  # the newest lines it printed, for a failing editor test to show

    def tail(self) -> str:
        return "".join(self.output.copy())  # copy: one C call, while the drain thread appends


@pytest.fixture(scope="session")
def painters_backend_url(painters_backend: PaintersBackend) -> str:
    return painters_backend.url


@pytest.fixture(scope="session")
def painters_backend(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Any:
    """A real backend process whose model folder also holds a tiny IP-Adapter and CLIP vision encoder (ComfyUI
    layout, tests/addon_files.py): what the in-editor scenarios' style-reference jobs need."""
    from addon_files import clip_vision, ip_adapter
    from diffusers import UNet2DConditionModel
    from helpers import backend_process

    from sfumato.backend.models.builtin import ensure_builtin

    tiny, _ = ensure_builtin(model_cache)
    models = tmp_path_factory.mktemp("painters-models") / "models"
    clip_vision(models / "clip_vision" / "tiny-vit.safetensors")
    unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
    ip_adapter(models / "ipadapter" / "ip-adapter_sd15.safetensors", unet, image_dim=16)
    # one torch thread: on a painter's machine the model runs on the GPU and the editor keeps the CPU; here,
    # a backend on both cores would starve the editor whose event loop the in-editor tests time
    output: deque[str] = deque(maxlen=200)
    with backend_process(model_cache, "--models", str(models), env={"OMP_NUM_THREADS": "1"}, output=output) as (url, _):
        yield PaintersBackend(url, output)
