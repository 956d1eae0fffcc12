"""Live previews: the least-squares latent -> RGB map, checked against a VAE whose encoder is
a known linear function of colour (the tiny random VAE has no colour to recover)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from allegro.preview import fit_latent_to_rgb, latents_to_preview

SCALING = 0.13
# latent = MIX @ rgb + OFFSET for the mean colour under each latent pixel (8x8 px, 4 frames)
MIX = torch.tensor([[0.9, 0.2, -0.1], [0.1, -0.7, 0.3], [0.4, 0.4, 0.4], [-0.2, 0.1, 0.8]])
OFFSET = torch.tensor([0.05, -0.1, 0.2, 0.0])


class LinearVae:
    """The parts of AutoencoderKLAllegro the fit uses, with a linear encoder."""

    config = SimpleNamespace(
        temporal_compression_ratio=4, block_out_channels=(8, 8, 8, 8), scaling_factor=SCALING
    )

    def __init__(self) -> None:
        self.kernel, self.stride = (24, 320, 320), (16, 200, 240)
        self.tile_overlap_t, self.tile_overlap_h, self.tile_overlap_w = 8, 120, 80

    def encode(self, sample: torch.Tensor):
        pooled = torch.nn.functional.avg_pool3d(sample, (4, 8, 8))  # (1, 3, t, h, w)
        latent = torch.einsum("cr,brthw->bcthw", MIX, pooled) + OFFSET.view(1, 4, 1, 1, 1)
        # The fit multiplies by the scaling factor, as the transformer sees latents.
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latent / SCALING))


def test_fitted_map_recovers_colours_and_restores_the_tiling():
    vae = LinearVae()
    mapping = fit_latent_to_rgb(vae, "cpu", torch.float32)
    assert vae.kernel == (24, 320, 320) and vae.tile_overlap_w == 80  # geometry restored

    colours = torch.tensor([[0.8, -0.5, 0.1], [-0.9, 0.9, -0.3]])  # in [-1, 1]
    pooled = colours.T.reshape(1, 3, 1, 1, 2).expand(1, 3, 6, 4, 2)  # left / right halves
    latents = torch.einsum("cr,brthw->bcthw", MIX, pooled) + OFFSET.view(1, 4, 1, 1, 1)
    image = latents_to_preview(latents, mapping, max_side=16)
    assert image.dtype == np.uint8 and image.shape == (16, 8, 3)  # 4x2 latents, upscaled x4
    expected = ((colours.numpy() + 1) * 127.5).round()
    np.testing.assert_allclose(image[0, 0], expected[0], atol=1)
    np.testing.assert_allclose(image[0, -1], expected[1], atol=1)
