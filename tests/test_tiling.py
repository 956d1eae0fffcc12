"""VAE tile geometry: every pixel of every frame is decoded at every accepted size."""

import numpy as np
import pytest
import torch

from allegro.request import ACCEPTED_FRAMES, MAX_PIXELS, MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE
from allegro.tiling import apply_tiling, fit_tiling


def covered(size: int, kernel: int, stride: int) -> int:
    return ((size - kernel) // stride) * stride + kernel


def test_every_accepted_size_is_tiled_exactly():
    sides = range(MIN_SIDE, MAX_SIDE + 1, SIZE_MULTIPLE)
    for frames in ACCEPTED_FRAMES:
        for height in sides:
            for width in sides:
                if height * width > MAX_PIXELS:
                    continue
                geometry = fit_tiling(frames, height, width)
                for size, kernel, stride in zip(
                    (frames, height, width), geometry.kernel, geometry.stride, strict=True
                ):
                    assert covered(size, kernel, stride) == size
                    overlap = kernel - stride
                    # Only neighbouring tiles may overlap, or the blend weights break.
                    assert kernel == size or 0 < overlap <= stride


def test_official_size_keeps_the_released_geometry():
    geometry = fit_tiling(88, 720, 1280)
    assert geometry.kernel == (24, 320, 320)
    assert geometry.stride == (16, 200, 240)


@pytest.fixture(scope="module")
def tiny_vae(tiny_model):
    from diffusers import AutoencoderKLAllegro

    vae = AutoencoderKLAllegro.from_pretrained(tiny_model, subfolder="vae")
    vae.enable_tiling()
    return vae


def decode(vae, latents):
    with torch.inference_mode():
        return vae.decode(latents).sample[0].float().numpy()  # (frames, 3, H, W)


def test_fitted_tiling_decodes_the_strips_the_default_leaves_grey(tiny_vae):
    # 176x208: the tiny VAE's default 160-px tiles (stride 40/80) miss the last rows/columns.
    frames, height, width = 24, 176, 208
    latents = torch.randn(
        1, 4, frames // 4, height // 8, width // 8, generator=torch.Generator().manual_seed(0)
    )
    default = decode(tiny_vae, latents)
    bottom, right = default[:, :, -8:, :], default[:, :, :, -8:]
    assert np.abs(bottom).max() == 0 and np.abs(right).max() == 0  # never decoded

    apply_tiling(tiny_vae, fit_tiling(frames, height, width))
    fitted = decode(tiny_vae, latents)
    assert fitted.shape == default.shape
    for strip in (fitted[:, :, -8:, :], fitted[:, :, :, -8:], fitted[:, :, :8, :]):
        assert strip.std() > 1e-3  # real content, not a flat fill
    # Per-pixel: no zero-filled (grey after postprocessing) region anywhere.
    assert (np.abs(fitted).max(axis=(0, 1)) > 0).all()
