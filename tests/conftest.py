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
    import subprocess
    import sys

    env = {**os.environ, "SFUMATO_CACHE_DIR": str(model_cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sfumato.backend", "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("listening on "):
            break
    else:
        raise RuntimeError("the backend did not start:\n" + "".join(lines))
    url = line.split()[-1]
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    yield url
    proc.terminate()
    proc.wait(30)
