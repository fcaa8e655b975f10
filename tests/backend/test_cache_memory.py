"""The pipeline cache's memory budget holds for real, and running out of memory costs one job only."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path
from typing import Any

import pytest
from helpers import pattern_rgba

from sfumato.backend.engine import Engine, NoHooks
from sfumato.backend.errors import JobFailure
from sfumato.backend.models.catalogue import Catalogue
from sfumato.backend.tasks import passes
from sfumato.protocol import Control, PreviewSettings, Submit


class Previews(NoHooks):
    def wants_preview(self) -> bool:
        return True


def submit(model: str, **kw: Any) -> Submit:
    return Submit(
        job_id="j",
        task="img2img",
        model=model,
        image=pattern_rgba(64, 64),
        prompt="a fox",
        strength=0.6,
        steps=4,
        preview=PreviewSettings(enabled=True),
        **kw,
    )


@pytest.fixture
def two_models(tmp_path: Path, model_cache: Path) -> Catalogue:
    from sfumato.backend.models.builtin import ensure_builtin

    tiny, _ = ensure_builtin(model_cache)
    shutil.copytree(tiny, tmp_path / "models" / "second")
    return Catalogue.scan([tmp_path / "models"], model_cache)


def test_an_evicted_model_is_freed_even_after_it_made_previews(two_models: Catalogue) -> None:
    engine = Engine(two_models, device="cpu", budget_bytes=1)  # room for one model at a time
    engine.run(submit("builtin:tiny"), 1, Previews())  # a preview keeps a previewer for this VAE
    first = engine.cache._models["builtin:tiny"]
    gone = [weakref.ref(first.base), weakref.ref(first.base.vae), *(weakref.ref(p) for p in first.derived.values())]
    del first
    engine.run(submit("second"), 1, Previews())
    gc.collect()
    assert engine.loaded_models() == ["second"]
    assert [r() for r in gone] == [None] * len(gone), "nothing (previews included) keeps the evicted pipeline"


def test_controlnets_count_against_the_budget(two_models: Catalogue) -> None:
    engine = Engine(two_models, device="cpu")
    engine.run(submit("builtin:tiny"), 1)
    alone = engine.cache.held_bytes()
    engine.run(submit("builtin:tiny", controls=(Control(type="canny", image=pattern_rgba(64, 64)),)), 1)
    (controlnet,) = engine.cache._controlnets.values()
    weights = sum(p.numel() * p.element_size() for p in controlnet.parameters())
    assert weights > 0 and engine.cache.held_bytes() == alone + weights


def test_out_of_memory_fails_that_job_alone_and_frees_the_cache(engine: Engine, monkeypatch: Any) -> None:
    import torch

    engine.run(submit("builtin:tiny"), 1)
    assert engine.loaded_models() == ["builtin:tiny"]
    real_pass = passes.run_pass
    calls = {"n": 0}

    def exhausted(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_pass(*args, **kw)

    monkeypatch.setattr(passes, "run_pass", exhausted)
    with pytest.raises(JobFailure) as failure:
        engine.run(submit("builtin:tiny"), 1)
    assert failure.value.code == "out_of_memory" and "smaller" in failure.value.message
    assert engine.loaded_models() == [], "the cache was emptied"
    again = engine.run(submit("builtin:tiny"), 1)  # the next job is served, loading afresh
    assert len(again.images) == 1 and engine.loaded_models() == ["builtin:tiny"]


def test_a_memory_mode_is_validated_and_reported(model_cache: Path) -> None:
    from sfumato.backend.config import Config, ConfigError

    with pytest.raises(ConfigError, match="auto, high, medium, low"):
        Config(memory="tiny").check()
    engine = Engine(Catalogue.scan([], model_cache), device="cpu", memory="low")
    engine.run(submit("builtin:tiny"), 1)
    placement = engine.cache.placements["builtin:tiny"]
    assert placement.mode == "high" and "cpu" in placement.reason  # a CPU has nothing to offload to
    assert engine.cache.memory_mode == "high"  # what the status names once a model is placed
