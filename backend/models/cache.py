"""Load each checkpoint once; derive the img2img / inpaint / ControlNet pipelines from the same weights.

Used from the worker thread only (one worker per device), so it needs no locking.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfumato.protocol import ErrorCode

from ..errors import JobFailure, is_out_of_memory
from .catalogue import ModelEntry
from .image_encoders import ImageEncoders
from .ipadapters import Adapters
from .placement import Placement, choose, component_bytes, free_memory, place
from .single_file import CONFIGS, load_checkpoint, load_controlnet
from .vaes import Vaes

log = logging.getLogger(__name__)
HIGH = Placement("high", "")

# task → (SD1.x/2.x class name, SDXL class name)
PIPELINE_CLASSES = {
    "base": ("StableDiffusionPipeline", "StableDiffusionXLPipeline"),
    "img2img": ("StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline"),
    "inpaint": ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline"),
    "img2img+control": ("StableDiffusionControlNetImg2ImgPipeline", "StableDiffusionXLControlNetImg2ImgPipeline"),
    "inpaint+control": ("StableDiffusionControlNetInpaintPipeline", "StableDiffusionXLControlNetInpaintPipeline"),
}


def pipeline_class(task: str, arch: str) -> Any:
    import diffusers

    names = PIPELINE_CLASSES[task]
    return getattr(diffusers, names[1] if arch.startswith("sdxl") else names[0])


def module_bytes(*modules: Any) -> int:
    total = 0
    for m in modules:
        if m is not None and hasattr(m, "parameters"):
            total += sum(p.numel() * p.element_size() for p in m.parameters())
    return total


@dataclass
class LoadedModel:
    entry: ModelEntry
    base: Any
    derived: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)


class PipelineCache:
    def __init__(
        self, device: str, dtype: Any, budget_bytes: int, configs: Path = CONFIGS, memory: str = "auto"
    ) -> None:
        self.device, self.dtype, self.budget = device, dtype, budget_bytes
        self.memory = memory  # the requested memory mode; each model's placement is chosen when it loads
        self.placements: dict[str, Placement] = {}
        self._memory_mode = memory
        self.configs = configs  # architecture configs of single files (tests point it at tiny ones)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._controlnets: OrderedDict[str, Any] = OrderedDict()
        self._decoders: dict[str, Any] = {}
        self.vaes = Vaes(device, dtype)  # standalone VAEs chosen by requests
        self.encoders = ImageEncoders(device, dtype)  # CLIP vision encoders and the reference embeddings they made
        self.adapters = Adapters()  # IP-Adapter files, loaded into a UNet for one job at a time

    @property
    def fp16(self) -> bool:
        import torch

        return bool(self.dtype == torch.float16)

    @property
    def loaded(self) -> list[str]:
        return list(self._models)

    def pipeline(self, entry: ModelEntry, task: str, controlnets: list[ModelEntry]) -> Any:
        model = self._model(entry)
        key = (task, tuple(c.id for c in controlnets))
        pipe = model.derived.get(key)
        if pipe is None:
            cls = pipeline_class(task, entry.arch)
            extra: dict[str, Any] = {}
            if controlnets:
                from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

                nets = [self._controlnet(c) for c in controlnets]
                extra["controlnet"] = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
            pipe = cls.from_pipe(model.base, **extra)  # shares the weights, keeps the dtype
            if self.placements.get(entry.id, HIGH).mode == "medium":  # offload hooks belong to a pipeline
                pipe.enable_model_cpu_offload(device=self.device)
            pipe.set_progress_bar_config(disable=True)
            model.derived[key] = pipe
        return pipe

    def _model(self, entry: ModelEntry) -> LoadedModel:
        if entry.id in self._models:
            self._models.move_to_end(entry.id)
            return self._models[entry.id]
        base = self._load_checkpoint(entry)
        loaded = LoadedModel(entry, base)
        self._models[entry.id] = loaded
        self._evict(keep=entry.id)
        return loaded

    def held_bytes(self) -> int:
        """Weights held now: checkpoints (with the LoRA adapters loaded into them), ControlNets, preview decoders,
        image encoders with the reference embeddings, IP-Adapter files."""
        models = sum(module_bytes(*m.base.components.values()) for m in self._models.values())
        references = self.encoders.held_bytes() + self.adapters.held_bytes()
        return models + module_bytes(*self._controlnets.values(), *self._decoders.values()) + references

    def _evict(self, keep: str) -> None:
        """Least recently used first: checkpoints other than ``keep``, then ControlNets, then what references hold."""
        while self.held_bytes() > self.budget:
            victims = [k for k in self._models if k != keep]
            if victims:
                log.info("evicting %s from the pipeline cache", victims[0])
                del self._models[victims[0]]
                self.placements.pop(victims[0], None)
            elif len(self._controlnets) > 1:
                self._controlnets.popitem(last=False)
            elif self.encoders.held_bytes() or self.adapters.held_bytes():
                self.encoders.clear()  # loaded again, or encoded again, by the next job with references
                self.adapters.clear()
            else:
                break  # what is left is what the job needs
            self._free()

    def clear(self) -> None:
        """Drop every model (after running out of memory): the next job loads what it needs afresh."""
        self._models.clear()
        self._controlnets.clear()
        self.encoders.clear()
        self.adapters.clear()
        self.placements.clear()
        self._memory_mode = self.memory
        self._free()

    def _free(self) -> None:
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass

    def _load_checkpoint(self, entry: ModelEntry) -> Any:
        cls = pipeline_class("base", entry.arch)
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if not entry.arch.startswith("sdxl"):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        try:
            if entry.format == "diffusers":
                pipe = cls.from_pretrained(entry.path, local_files_only=True, **kwargs)
            elif entry.format == "hub":
                pipe = cls.from_pretrained(str(entry.path), **kwargs)
            else:
                pipe = load_checkpoint(entry.path, entry.arch, self.dtype, self.configs)
        except JobFailure:
            raise
        except Exception as exc:  # any loading failure is this job's, with words the painter can act on
            if is_out_of_memory(exc):
                raise
            raise JobFailure(
                f"could not load {entry.id!r}: {type(exc).__name__}: {exc}",
                "submit.model",
                ErrorCode.MISSING_WEIGHTS,
            ) from None
        pipe.set_progress_bar_config(disable=True)
        sizes = component_bytes(pipe)
        placement = choose(self.memory, self.device, free_memory(self.device), sum(sizes), max(sizes, default=0))
        log.info("%s: memory %s", entry.id, placement.reason)
        self.placements[entry.id] = placement
        self._memory_mode = placement.mode
        return place(pipe, placement, self.device)

    @property
    def memory_mode(self) -> str:
        """The placement of the model loaded last, or the requested mode before any has loaded.

        One attribute read: the event loop asks while the worker thread may be loading or evicting."""
        return self._memory_mode

    def preview_decoder(self, entry: ModelEntry) -> Any:
        """A TAESD (AutoencoderTiny) decoder, loaded once."""
        if entry.id not in self._decoders:
            from diffusers import AutoencoderTiny

            decoder = AutoencoderTiny.from_pretrained(entry.path, dtype=self.dtype, local_files_only=True)
            self._decoders[entry.id] = decoder.to(self.device)
        return self._decoders[entry.id]

    def _controlnet(self, entry: ModelEntry) -> Any:
        if entry.id in self._controlnets:
            self._controlnets.move_to_end(entry.id)
            return self._controlnets[entry.id]
        from diffusers import ControlNetModel

        try:
            if entry.format == "diffusers":
                net = ControlNetModel.from_pretrained(entry.path, dtype=self.dtype, local_files_only=True)
            else:
                net = load_controlnet(entry.path, entry.arch, self.dtype, self.configs)
        except (OSError, ValueError) as exc:
            raise JobFailure(
                f"could not load ControlNet {entry.id!r}: {exc}", "submit.controls", ErrorCode.MISSING_WEIGHTS
            ) from None
        net = net.to(self.device)
        self._controlnets[entry.id] = net
        while len(self._controlnets) > 4:
            self._controlnets.popitem(last=False)
        self._evict(keep=next(reversed(self._models), ""))
        return net
