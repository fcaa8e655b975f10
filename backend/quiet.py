"""Keep notebook chatter out of a server's terminal: library advice, progress bars, duplicate log lines.

Call :func:`quiet_libraries` before diffusers or transformers is imported (their verbosity is read
from the environment at import time); a painter's own settings of these variables win.
"""

from __future__ import annotations

import logging
import os

_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # e.g. advice to install torchvision, which we do not need
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # "Writing model shards" and download bars
}


def quiet_libraries() -> None:
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("websockets.server").setLevel(logging.WARNING)  # we print our own "listening on"


def quiet_loaded_libraries() -> None:
    """The same for diffusers and transformers when they are imported already (their verbosity setters)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
