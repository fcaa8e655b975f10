from __future__ import annotations

import logging
import os
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
