"""Allegro-TI2V on top of diffusers' ``AllegroPipeline``: the same prompt handling,
scheduler loop, guidance, callbacks and offload, plus the condition frames.

``__call__`` takes ``condition`` (which frames are given, as pixels); everything else is
``AllegroPipeline.__call__``'s. The condition is VAE-encoded right after the initial noise is
drawn, from the same generator (the official order: ``prepare_latents`` then
``vae.encode(...).latent_dist.sample(generator)``, ``pipeline_allegro_ti2v.py`` 771-786), and a
forward pre-hook on the transformer appends [masked-video latent, latent mask] to the
noisy latent at every step, for both guidance halves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AllegroPipeline

from allegro.ti2v.condition import latent_mask, pixel_condition
from allegro.tiling import apply_tiling, fit_tiling

# The official script's sampling settings (single_inference_ti2v.py): guidance 8, 100 steps.
TI2V_GUIDANCE = 8.0


@dataclass(frozen=True)
class ConditionFrames:
    """Prepared images (K, 3, H, W) in [-1, 1] (``condition.prepare_image``) and the frames
    they fix: ``(0,)`` first frame, ``(0, -1)`` first and last, ``(0, 1, …, k-1)`` the first
    k frames of a continued clip."""

    images: torch.Tensor
    indices: tuple[int, ...]

    @classmethod
    def of(cls, images: Sequence[torch.Tensor], indices: Sequence[int]) -> ConditionFrames:
        return cls(torch.stack(list(images)), tuple(indices))


class AllegroTI2VPipeline(AllegroPipeline):
    """``AllegroPipeline`` with an ``AllegroTI2VTransformer3DModel`` and condition frames."""

    _condition: ConditionFrames | None = None
    _condition_latents: torch.Tensor | None = None

    def __call__(self, *args: Any, condition: ConditionFrames | None = None, **kwargs: Any):
        if condition is None:
            raise ValueError("Allegro-TI2V needs at least one condition frame (`condition`).")
        self._condition, self._condition_latents = condition, None
        hook = self.transformer.register_forward_pre_hook(self._feed_condition, with_kwargs=True)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            hook.remove()
            self._condition, self._condition_latents = None, None

    def prepare_latents(
        self, batch_size, num_channels_latents, num_frames, height, width, dtype, device,
        generator, latents=None,
    ):  # fmt: skip
        latents = super().prepare_latents(
            batch_size, num_channels_latents, num_frames, height, width, dtype, device,
            generator, latents,
        )  # fmt: skip
        if self._condition is not None:  # after the noise: the official order of draws
            self._condition_latents = self.encode_condition(
                self._condition, batch_size, num_frames, dtype, device, generator
            )
        return latents

    def encode_condition(
        self,
        condition: ConditionFrames,
        batch_size: int,
        num_frames: int,
        dtype: torch.dtype,
        device: torch.device | str,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[masked-video latent | latent mask]: (B, 2C, T/4, H/8, W/8) in ``dtype``."""
        height, width = condition.images.shape[-2:]
        vae_dtype = self.vae.dtype
        # The official script hands the images over in the transformer's dtype (bf16) before
        # the VAE casts them to its own; round the same way so a seed gives the same video.
        images = condition.images.to(device=device, dtype=dtype).to(vae_dtype)
        masked_video, mask = pixel_condition(images, condition.indices, num_frames)
        # diffusers' Allegro VAE encodes only tiled (autoencoder_kl_allegro.py:801), with
        # tiles fitted to cover this size exactly.
        self.vae.enable_tiling()
        apply_tiling(self.vae, fit_tiling(num_frames, height, width, self.vae_scale_factor_spatial))
        # diffusers' tiled encode handles one video at a time (autoencoder_kl_allegro.py:900):
        # encode once, draw the posterior sample for the whole batch in one call, as the
        # official code does for its repeated batch.
        posterior = self.vae.encode(masked_video).latent_dist
        parameters = posterior.parameters.repeat(batch_size, 1, 1, 1, 1)
        posterior = type(posterior)(parameters)
        # The same scale the pipeline decodes with (pipeline_allegro.py:609).
        video_latents = posterior.sample(generator) * self.vae.config.scaling_factor
        # Under model offload accelerate sends a model back to the CPU only when the next one
        # in the chain runs, and the VAE is last: it would sit on the GPU through every step.
        # Send it back now (UserCpuOffloadHook.offload -> CpuOffload.init_hook, accelerate
        # hooks.py:777; diffusers keeps the hooks in _all_hooks, pipeline_utils.py:1255).
        for hook in getattr(self, "_all_hooks", ()):
            if hook.model is self.vae:
                hook.offload()
        mask_latents = latent_mask(
            mask.repeat(batch_size, 1, 1, 1, 1),
            self.vae_scale_factor_temporal,
            self.vae_scale_factor_spatial,
        )
        return torch.cat([video_latents, mask_latents.to(video_latents.dtype)], dim=1).to(dtype)

    def _feed_condition(self, _module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Transformer pre-hook: noisy latent (2B with guidance) -> 12-channel input."""
        hidden_states = kwargs["hidden_states"]
        condition = self._condition_latents
        if condition is None:
            raise RuntimeError("the transformer ran before the condition was encoded")
        repeats = hidden_states.shape[0] // condition.shape[0]
        condition = condition.to(hidden_states).repeat(repeats, 1, 1, 1, 1)
        kwargs["hidden_states"] = torch.cat([hidden_states, condition], dim=1)
        return args, kwargs
