"""The built-in test model ``builtin:tiny``: SD1.5 architecture, tiny random weights, made deterministically.

It is written to disk as a regular diffusers folder (the format of a user's downloaded models) and
then loaded through the same code path as any user model, so the tests exercise real loading code.
The weights are random: the pictures are noise-like, but every stage of the pipeline runs for real.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from sfumato.protocol import DEFAULT_MODEL

TINY_ID = DEFAULT_MODEL
TINY_CONTROLNET_ID = "builtin:tiny-controlnet"
TINY_NATIVE_SIZE = 64  # sample_size 32 × VAE scale factor 2

_FORMAT_VERSION = "2"  # bump when the architecture below changes, so caches are rebuilt

# The tiny SD1.5-shaped architecture (also used by bench/gpu.py --tiny).
TINY_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=64,
)
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)


def builtin_root(cache_dir: Path) -> Path:
    return cache_dir / f"builtin-v{_FORMAT_VERSION}"


def ensure_builtin(cache_dir: Path) -> tuple[Path, Path]:
    """Create (once) and return the folders of the tiny checkpoint and the tiny ControlNet."""
    root = builtin_root(cache_dir)
    model_dir, control_dir = root / "tiny", root / "tiny-controlnet"
    if (root / "complete").exists():
        return model_dir, control_dir
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".builtin-", dir=root.parent))
    try:
        _write_tiny(staging / "tiny", staging / "tiny-controlnet")
        (staging / "complete").write_text("ok\n")
        try:
            os.replace(staging, root)  # atomic: a concurrent builder either wins or finds it complete
        except OSError:
            if not (root / "complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir, control_dir


def _tokenizer_files(folder: Path) -> None:
    """A CLIP tokenizer whose vocabulary is the 256 byte-level symbols, alone and word-final."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tok.save_pretrained(folder)


def _write_tiny(model_dir: Path, control_dir: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = model_dir / "tokenizer"
    _tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET)
    torch.manual_seed(1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            **TINY_TEXT,
        )
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(model_dir, safe_serialization=True)
    torch.manual_seed(3)
    controlnet = ControlNetModel(
        in_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        conditioning_embedding_out_channels=(16, 32),
    )
    # A trained ControlNet starts from zero convolutions; random ones make the control measurable in tests.
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, 0.05)
    controlnet.save_pretrained(control_dir, safe_serialization=True)
