"""Condition frames for Allegro-TI2V, prepared exactly as the official code does
(``single_inference_ti2v.py:preprocess_images``, ``data_process.py`` and
``AllegroTI2VPipeline.prepare_mask_masked_video``), in plain torch.

Pixel side: the video to condition on is all zeros (mid grey) except the condition frames;
the mask is 0 on condition frames and 1 elsewhere. Latent side: the mask is resized to the
latent grid and regrouped into the 4 latent channels; the masked video goes through the VAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropBox:
    """The part of a source image that is kept (then resized to the video size)."""

    top: int
    left: int
    height: int
    width: int


def crop_box(image_height: int, image_width: int, height: int, width: int) -> CropBox:
    """The official centre crop to the target aspect ratio (``center_crop_th_tw``)."""
    ratio = height / width
    if image_height / image_width > ratio:
        new_height, new_width = int(image_width * ratio), image_width
    else:
        new_height, new_width = image_height, int(image_height / ratio)
    top = round((image_height - new_height) / 2.0)  # Python rounding, as official
    left = round((image_width - new_width) / 2.0)
    return CropBox(top, left, new_height, new_width)


def prepare_image(image: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An RGB uint8 image (h, w, 3) -> (3, height, width) float32 in [-1, 1]: centre crop,
    bilinear resize with align_corners and antialias, ``2x - 1``."""
    pixels = torch.as_tensor(np.array(image))  # a copy: the caller's array may be read-only
    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (h, w, 3), got {tuple(pixels.shape)}")
    box = crop_box(pixels.shape[0], pixels.shape[1], height, width)
    clip = pixels.permute(2, 0, 1)[None].float() / 255.0
    clip = clip[..., box.top : box.top + box.height, box.left : box.left + box.width]
    clip = F.interpolate(
        clip, size=(height, width), mode="bilinear", align_corners=True, antialias=True
    )
    return (2.0 * clip - 1.0)[0]


def condition_preview(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """What the model sees of ``image`` in a height x width video (``prepare_image``), as
    an RGB uint8 image to show."""
    pixels = (prepare_image(image, height, width) + 1.0) * 127.5
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def frame_indices(indices: Sequence[int], frames: int) -> list[int]:
    """Python-style indices (``-1`` = last frame) -> positions in 0..frames-1, checked."""
    positions = []
    for index in indices:
        if not -frames <= index < frames:
            raise ValueError(f"condition frame {index} is outside a {frames}-frame video")
        positions.append(index % frames)
    if len(set(positions)) != len(positions):
        raise ValueError(f"condition frames {list(indices)} name the same frame twice")
    return positions


def pixel_condition(
    images: torch.Tensor, indices: Sequence[int], frames: int, batch_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (K, 3, H, W) at frame ``indices`` -> (masked video, pixel mask), both
    (B, 3, frames, H, W): the masked video holds the images and zeros elsewhere, the mask is
    0 on condition frames and 1 elsewhere."""
    positions = frame_indices(indices, frames)
    if images.shape[0] != len(positions):
        raise ValueError(f"{images.shape[0]} condition images for {len(positions)} frames")
    _, channels, height, width = images.shape
    video = images.new_zeros(channels, frames, height, width)
    video[:, positions] = images.transpose(0, 1)
    mask = torch.ones_like(video)
    mask[:, positions] = 0
    video = video[None].repeat(batch_size, 1, 1, 1, 1)
    mask = mask[None].repeat(batch_size, 1, 1, 1, 1)
    return video * (mask < 0.5), mask


def latent_mask(mask: torch.Tensor, temporal_scale: int = 4, spatial_scale: int = 8):
    """Pixel mask (B, C, F, H, W) -> latent mask (B, 4, F/4, H/8, W/8).

    The official regrouping (``prepare_mask_masked_video`` line 917, and the same ``view`` in
    ``train_ti2v.py:73``, so it is what the model learned): latent mask[b, c, t] is pixel
    frame ``c * F/4 + t``, not ``4t + c``. For first / first-and-last frames both readings
    agree; for a continued clip they do not, and the trained one is used. Unlike the
    official code this takes the batch from the mask itself (official: ``batch_size``,
    which breaks with ``num_images_per_prompt > 1``)."""
    batch, _, frames, height, width = mask.shape
    if frames % temporal_scale:
        raise ValueError(f"{frames} frames: Allegro-TI2V needs a multiple of {temporal_scale}")
    latent_size = (height // spatial_scale, width // spatial_scale)
    per_frame = mask[:, :1].transpose(1, 2).reshape(batch * frames, 1, height, width)
    per_frame = F.interpolate(per_frame, size=latent_size, mode="bilinear")
    return per_frame.reshape(batch, temporal_scale, frames // temporal_scale, *latent_size)
