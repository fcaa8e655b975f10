"""One lock, for the whole process, around building torch modules (loading models and add-ons).

diffusers, transformers and accelerate load weights inside contexts that patch ``torch.nn`` for the
whole process, not the calling thread (accelerate's ``init_empty_weights`` replaces
``Module.register_parameter``, transformers' ``no_init_weights`` the ``torch.nn.init`` functions).
A module built meanwhile on another worker's thread would come out weightless ("Cannot copy out
of meta tensor"). So every load, LoRA or embedding change holds this lock; denoising builds no
modules and runs without it, so workers on different devices still generate at the same time.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

T = TypeVar("T")

LOADING = threading.RLock()


@contextlib.contextmanager
def entered_and_left_locked(manager: AbstractContextManager[T]) -> Iterator[T]:
    """Enter and leave ``manager`` holding the lock, without holding it in between."""
    with LOADING:
        value = manager.__enter__()
    try:
        yield value
    except BaseException:
        with LOADING:
            if not manager.__exit__(*sys.exc_info()):
                raise
    else:
        with LOADING:
            manager.__exit__(None, None, None)
