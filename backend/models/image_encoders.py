"""CLIP vision encoders for IP-Adapters, and the reference embeddings they make, kept per image.

An encoder is one ``.safetensors`` file in transformers' layout (ComfyUI's ``models/clip_vision``,
the IP-Adapter releases' ``image_encoder``); its configuration comes from
``configs/clip-vision-<arch>/`` (never downloaded), the architecture being what detect.py read
from its widths. Embeddings are kept by the reference's pixels and the encoder, so a second job
with the same reference skips the encoder. Used from the worker thread only.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sfumato.protocol import ErrorCode, Image

from ..errors import JobFailure, is_out_of_memory
from ..imaging import pixels
from .catalogue import ModelEntry
from .detect import CLIP_VISION
from .single_file import config_folder, read_state

MAX_ENCODERS = 2  # held at once (LRU); an SDXL and an SD1.5 adapter rarely need more
MAX_EMBEDDINGS = 64  # references remembered (LRU)
MAX_EMBEDDING_BYTES = 128 << 20  # and the memory they may hold, counted in the pipeline cache's budget
_PARTS = ("vision_model.", "visual_projection.")  # a file may carry more (a whole CLIP): only these are read


@dataclass(frozen=True)
class Embedding:
    """What an IP-Adapter reads of one reference: with it (``cond``) and without it (``uncond``, for guidance)."""

    cond: Any  # tensor: (1, width) projected embedding, or (1, tokens, width) penultimate hidden states
    uncond: Any

    @property
    def bytes(self) -> int:
        return int(self.cond.numel() * self.cond.element_size() * 2)


def digest(image: Image) -> str:
    """The reference's identity: its pixels and how they are stored."""
    h = hashlib.sha256(f"{image.width}x{image.height}:{image.format}:{image.linear}\0".encode())
    h.update(image.data)
    return h.hexdigest()


def load_encoder(entry: ModelEntry, device: str, dtype: Any, configs: Path, field: str) -> Any:
    """A ``CLIPVisionModelWithProjection`` from one file, built on its architecture's committed configuration
    (ViT-H, ViT-bigG, ViT-L); an encoder of other widths on the one its tensors give (see :func:`sized`)."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    state = {k: v for k, v in read_state(entry.path).items() if k.startswith(_PARTS)}
    if entry.arch in CLIP_VISION.values():
        folder = config_folder(f"clip-vision-{entry.arch}", configs, field)
        config = CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
    else:
        config = sized(state)
    with init_empty_weights():  # the file's tensors become the weights: no random initialisation first
        model = CLIPVisionModelWithProjection(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise JobFailure(
            f"{entry.id!r} does not match the {entry.arch} CLIP vision architecture ({str(exc)[:300]})",
            field,
            ErrorCode.MISSING_WEIGHTS,
        ) from None
    return model.to(device=device, dtype=dtype).eval()


def sized(state: dict[str, Any]) -> Any:
    """The configuration of an encoder the committed ones do not cover, from its tensors: widths, depth, patch
    and picture size; the number of heads is not in the tensors, so it follows the ViT convention of 64-wide
    heads (one head below 64)."""
    from transformers import CLIPVisionConfig

    patch = state["vision_model.embeddings.patch_embedding.weight"].shape
    positions = state["vision_model.embeddings.position_embedding.weight"].shape[0]
    layers = len({k.split(".")[3] for k in state if k.startswith("vision_model.encoder.layers.")})
    return CLIPVisionConfig(
        hidden_size=patch[0],
        intermediate_size=state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=max(1, patch[0] // 64),
        projection_dim=state["visual_projection.weight"].shape[0],
        patch_size=patch[2],
        image_size=patch[2] * math.isqrt(positions - 1),
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )


class ImageEncoders:
    """The encoders a device holds and the embeddings they made."""

    def __init__(self, device: str, dtype: Any) -> None:
        self.device, self.dtype = device, dtype
        self._encoders: OrderedDict[str, Any] = OrderedDict()
        self._embeddings: OrderedDict[tuple[str, str, str], Embedding] = OrderedDict()

    def held_bytes(self) -> int:
        weights = sum(p.numel() * p.element_size() for m in self._encoders.values() for p in m.parameters())
        return weights + sum(e.bytes for e in self._embeddings.values())

    def clear(self) -> None:
        self._encoders.clear()
        self._embeddings.clear()

    def embedding(
        self, image: str, rgb: np.ndarray, encoder: ModelEntry, feature: str, configs: Path, field: str
    ) -> Embedding:
        """The features ``feature`` names (``embeds:W`` or ``hidden:W``) of the picture ``rgb`` (h, w, 3, floats
        as the model sees them), encoded once per ``image`` (its :func:`digest`) and encoder."""
        kind = feature.split(":")[0]
        key = (image, encoder.id, kind)
        found = self._embeddings.get(key)
        if found is not None:
            self._embeddings.move_to_end(key)
            return found
        made = self._encode(self._encoder(encoder, configs, field), rgb, kind)
        self._embeddings[key] = made
        while len(self._embeddings) > MAX_EMBEDDINGS or (
            len(self._embeddings) > 1 and sum(e.bytes for e in self._embeddings.values()) > MAX_EMBEDDING_BYTES
        ):
            self._embeddings.popitem(last=False)
        return made

    def _encoder(self, entry: ModelEntry, configs: Path, field: str) -> Any:
        from .loading import LOADING

        if entry.id in self._encoders:
            self._encoders.move_to_end(entry.id)
            return self._encoders[entry.id]
        try:
            with LOADING:  # building modules patches torch for the whole process (loading.py)
                model = load_encoder(entry, self.device, self.dtype, configs, field)
        except (OSError, ValueError, KeyError) as exc:  # a file detect.py took for an encoder, that is not whole
            if is_out_of_memory(exc):
                raise
            raise JobFailure(
                f"could not load {entry.id!r}: {type(exc).__name__}: {exc}", field, ErrorCode.MISSING_WEIGHTS
            ) from None
        self._encoders[entry.id] = model
        while len(self._encoders) > MAX_ENCODERS:
            self._encoders.popitem(last=False)
        return model

    def _encode(self, model: Any, rgb: np.ndarray, kind: str) -> Embedding:
        """Plain IP-Adapters read the projected image embedding (and zeros without the reference); Plus and
        Full-face read the penultimate hidden states (and those of a black image): as they were trained."""
        import torch
        from transformers import CLIPImageProcessorPil

        side = model.config.image_size
        processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        values = processor(pixels.to_pil_rgb(rgb), return_tensors="pt").pixel_values
        values = values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            if kind == "embeds":
                cond = model(values).image_embeds
                return Embedding(cond, torch.zeros_like(cond))
            cond = model(values, output_hidden_states=True).hidden_states[-2]
            uncond = model(torch.zeros_like(values), output_hidden_states=True).hidden_states[-2]
        return Embedding(cond, uncond)
