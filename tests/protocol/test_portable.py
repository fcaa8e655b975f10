"""The portable protocol checks, collected by pytest (they also run under python3.10: test_py310.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "portable"))
import protocol_checks


@pytest.mark.parametrize("check", protocol_checks.CHECKS, ids=lambda c: c.__name__)
def test_portable(check):  # type: ignore[no-untyped-def]
    check()
