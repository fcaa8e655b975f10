"""Cheap previews: latents → RGB without the VAE decoder.

By default a linear map fitted per model at first use: colour patches are encoded once with the
model's own VAE and a least-squares fit finds latent→RGB (works for any SD-family VAE, including
the tiny test model). When TAESD weights are present (AutoencoderTiny) that is used instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LatentPreviewer:
    """Latents → a quick RGB look, for one VAE. Holds no model of its own beyond the optional tiny decoder:
    the VAE is passed in each time, so a previewer never keeps an evicted pipeline alive."""

    def __init__(self, tiny_vae: Any | None = None) -> None:
        self.tiny_vae = tiny_vae
        self._matrix: np.ndarray | None = None

    def _fit(self, vae: Any) -> np.ndarray:
        import torch

        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        patch, n = 4 * scale, 6
        rng = np.random.default_rng(0)
        colours = rng.random((n * n, 3), dtype=np.float32)
        img = np.repeat(np.repeat(colours.reshape(n, n, 3), patch, 0), patch, 1)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].to(vae.device, vae.dtype) * 2 - 1
        with torch.no_grad():
            lat = vae.encode(x).latent_dist.mean.float().cpu().numpy()[0]
        lat = lat * float(getattr(vae.config, "scaling_factor", 1.0))
        lp = lat.shape[1] // n
        means = lat.reshape(lat.shape[0], n, lp, n, lp)[:, :, 1:-1, :, 1:-1].mean(axis=(2, 4))  # skip patch borders
        feats = np.concatenate([means.reshape(lat.shape[0], -1).T, np.ones((n * n, 1), np.float32)], axis=1)
        matrix, *_ = np.linalg.lstsq(feats, colours, rcond=None)
        return matrix.astype(np.float32)  # (C + 1, 3)

    def rgb(self, latents: Any, vae: Any) -> np.ndarray:
        """First image of the batch as float RGB (h, w, 3) in 0..1, at latent or TAESD resolution."""
        import torch

        with torch.no_grad():
            first = latents[:1]
            if self.tiny_vae is not None:
                out = self.tiny_vae.decode(first.to(self.tiny_vae.dtype)).sample[0]
                return np.clip(out.float().permute(1, 2, 0).cpu().numpy() * 0.5 + 0.5, 0, 1)
            if self._matrix is None:
                self._matrix = self._fit(vae)
            lat = first[0].float().permute(1, 2, 0).cpu().numpy()
        h, w, c = lat.shape
        feats = np.concatenate([lat.reshape(-1, c), np.ones((h * w, 1), np.float32)], axis=1)
        return np.clip(feats @ self._matrix, 0, 1).reshape(h, w, 3)
