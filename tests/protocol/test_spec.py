"""SPEC.md stays true to the code: its generated part is what the code renders now."""

from __future__ import annotations

from pathlib import Path

from sfumato.protocol import ALL_MESSAGES, ErrorCode, JobEvent, JobState
from sfumato.protocol.spec_render import render

SPEC = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()


def test_generated_tables_and_examples_match_the_code() -> None:
    begin = SPEC.index("<!-- BEGIN GENERATED")
    begin = SPEC.index("\n", begin) + 1
    end = SPEC.index("<!-- END GENERATED -->")
    assert SPEC[begin:end].strip() == render().strip(), "run: python -m sfumato.protocol.spec_render"


def test_every_message_error_code_and_state_is_documented() -> None:
    for cls in ALL_MESSAGES:
        assert f"### `{cls.TYPE}`" in SPEC
    codes = [v for k, v in vars(ErrorCode).items() if k.isupper()]
    for code in codes:
        assert f"| `{code}` |" in SPEC, code
    for state in JobState:
        assert state.value in SPEC
    for event in JobEvent:
        assert event.value in SPEC
