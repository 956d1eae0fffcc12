"""VAE tile geometry fitted to each request, so every pixel of every frame is decoded.

AutoencoderKLAllegro decodes only tiles that fit entirely inside the latent; with its
default geometry (24x320x320 pixel tiles, overlaps 8/120/80) a 368x640 video keeps grey
bands. The geometry is plain attributes of the VAE, so we choose, per spatial side, a tile
count, tile size and stride that tile the side exactly, and keep the trained temporal
geometry (the request validation only accepts lengths it covers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TEMPORAL_KERNEL = 24
TEMPORAL_STRIDE = 16
# Pixel tile size and overlaps of the released VAE; we stay close to them.
DEFAULT_TILE = 320
DEFAULT_OVERLAP_H = 120
DEFAULT_OVERLAP_W = 80


@dataclass(frozen=True)
class TileGeometry:
    kernel: tuple[int, int, int]  # pixels: frames, height, width
    stride: tuple[int, int, int]

    def tile_count(self, frames: int, height: int, width: int) -> int:
        count = 1
        for size, kernel, stride in zip(
            (frames, height, width), self.kernel, self.stride, strict=True
        ):
            count *= (size - kernel) // stride + 1
        return count


def _fit_side(size: int, tile: int, overlap: int, scale: int) -> tuple[int, int]:
    """(kernel, stride) in pixels such that tiles cover ``size`` exactly: n tiles of
    ``kernel`` at ``stride`` with (n - 1) * stride + kernel == size. Everything is a
    multiple of ``scale`` (the VAE's spatial factor) so latent and pixel tiles agree."""
    latent, tile_l, overlap_l = size // scale, tile // scale, overlap // scale
    if latent <= tile_l:
        return size, size  # one tile: no blending on this side
    count = math.ceil((latent - overlap_l) / (tile_l - overlap_l))
    # Solve count * stride + overlap == latent with the overlap as close to the trained one
    # as possible; the blend needs 0 < overlap <= stride so only neighbours overlap.
    for delta in range(latent):
        for candidate in (overlap_l + delta, overlap_l - delta):
            if candidate <= 0 or (latent - candidate) % count:
                continue
            stride_l = (latent - candidate) // count
            if candidate <= stride_l:
                return (stride_l + candidate) * scale, stride_l * scale
    raise ValueError(f"no tiling covers {size} pixels")  # unreachable for accepted sizes


def fit_tiling(frames: int, height: int, width: int, spatial_scale: int = 8) -> TileGeometry:
    if frames < TEMPORAL_KERNEL or (frames - TEMPORAL_KERNEL) % TEMPORAL_STRIDE:
        raise ValueError(f"{frames} frames cannot be decoded by the Allegro VAE")
    kernel_h, stride_h = _fit_side(height, DEFAULT_TILE, DEFAULT_OVERLAP_H, spatial_scale)
    kernel_w, stride_w = _fit_side(width, DEFAULT_TILE, DEFAULT_OVERLAP_W, spatial_scale)
    return TileGeometry(
        kernel=(TEMPORAL_KERNEL, kernel_h, kernel_w),
        stride=(TEMPORAL_STRIDE, stride_h, stride_w),
    )


def apply_tiling(vae, geometry: TileGeometry) -> None:
    """Set the geometry on an AutoencoderKLAllegro (tiling itself is enabled at load)."""
    vae.kernel = geometry.kernel
    vae.stride = geometry.stride
    vae.tile_overlap_t, vae.tile_overlap_h, vae.tile_overlap_w = (
        k - s for k, s in zip(geometry.kernel, geometry.stride, strict=True)
    )
