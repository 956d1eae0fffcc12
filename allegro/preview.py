"""Cheap live previews: a linear latent -> RGB map, no VAE decode.

The map is fitted once per loaded VAE by least squares: a few synthetic colour clips (flat
colours and colour blocks) are encoded, and each latent vector is regressed onto the mean
colour of the pixels it covers. Applying it costs one 4x3 matrix product per latent pixel.
"""

from __future__ import annotations

import numpy as np

from allegro.tiling import apply_tiling, fit_tiling

_FIT_FRAMES, _FIT_SIZE, _BLOCK = 24, 32, 8


def _synthetic_clips(rng: np.random.Generator, count: int = 8) -> np.ndarray:
    """(count, 3, frames, size, size) clips in [-1, 1]: flat colours, and colour blocks the
    size of one latent pixel (so each latent vector sees one colour)."""
    clips = np.empty((count, 3, _FIT_FRAMES, _FIT_SIZE, _FIT_SIZE), dtype=np.float32)
    blocks = _FIT_SIZE // _BLOCK
    for index in range(count):
        if index < count // 2:
            colours = rng.uniform(-1, 1, size=(3, 1, 1, 1))
            clips[index] = np.broadcast_to(colours, clips[index].shape)
        else:
            grid = rng.uniform(-1, 1, size=(3, 1, blocks, blocks))
            clips[index] = np.kron(grid, np.ones((1, _FIT_FRAMES, _BLOCK, _BLOCK)))
    return clips


def fit_latent_to_rgb(vae, device, dtype) -> np.ndarray:
    """A (5, 3) matrix: [latent channels..., 1] @ map -> RGB in [-1, 1]. ``device`` is the
    pipeline's execution device (under offload the weights themselves may sit elsewhere)."""
    import torch

    rng = np.random.default_rng(0)
    clips = _synthetic_clips(rng)
    scale_t = int(vae.config.temporal_compression_ratio)
    scale_s = 2 ** (len(vae.config.block_out_channels) - 1)
    saved = (vae.kernel, vae.stride, vae.tile_overlap_t, vae.tile_overlap_h, vae.tile_overlap_w)
    apply_tiling(vae, fit_tiling(_FIT_FRAMES, _FIT_SIZE, _FIT_SIZE, scale_s))
    latents, targets = [], []
    try:
        with torch.inference_mode():
            for clip in clips:
                sample = torch.from_numpy(clip)[None].to(device=device, dtype=dtype)
                latent = vae.encode(sample).latent_dist.mode()[0].float().cpu().numpy()
                latent = latent * vae.config.scaling_factor  # what the transformer sees
                c, t, h, w = latent.shape
                pooled = clip.reshape(3, t, scale_t, h, scale_s, w, scale_s).mean(axis=(2, 4, 6))
                latents.append(latent.reshape(c, -1).T)
                targets.append(pooled.reshape(3, -1).T)
    finally:
        vae.kernel, vae.stride = saved[0], saved[1]
        vae.tile_overlap_t, vae.tile_overlap_h, vae.tile_overlap_w = saved[2:]
    design = np.concatenate(latents)
    design = np.concatenate([design, np.ones((len(design), 1), np.float32)], axis=1)
    mapping, *_ = np.linalg.lstsq(design, np.concatenate(targets), rcond=None)
    return mapping.astype(np.float32)


def latents_to_preview(latents, mapping: np.ndarray, max_side: int = 320) -> np.ndarray:
    """Middle latent frame of (1, C, T, h, w) latents -> RGB uint8 image, upscaled x8
    (nearest) but no larger than ``max_side``."""
    frame = latents[0, :, latents.shape[2] // 2].float().cpu().numpy()  # (C, h, w)
    c, h, w = frame.shape
    flat = np.concatenate([frame.reshape(c, -1).T, np.ones((h * w, 1), np.float32)], axis=1)
    rgb = (flat @ mapping).reshape(h, w, 3)
    image = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    factor = max(1, min(8, max_side // max(h, w)))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
