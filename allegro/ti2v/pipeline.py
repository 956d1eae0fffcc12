"""Allegro-TI2V on top of diffusers' ``AllegroPipeline``: the same prompt handling,
scheduler loop, guidance, callbacks and offload, plus the condition frames.

``__call__`` takes ``condition`` (which frames are given, as pixels); everything else is
``AllegroPipeline.__call__``'s. The condition is VAE-encoded right after the initial noise is
drawn, from the same generator (the official order: ``prepare_latents`` then
``vae.encode(...).latent_dist.sample(generator)``, ``pipeline_allegro_ti2v.py`` 771-786), and a
forward pre-hook on the transformer appends [masked-video latent, latent mask] to the
noisy latent at every step, for both guidance halves.

``motion`` (a ``MotionGuide``, Time-to-Move: ``allegro/ti2v/motion.py``) starts denoising
part-way from a motion signal and holds its masked region to it for longer, through the
scheduler's own ``set_begin_index`` / ``add_noise`` and diffusers' ``callback_on_step_end``:
the denoising loop is the pipeline's, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AllegroPipeline

from allegro.ti2v.condition import latent_mask, pixel_condition
from allegro.ti2v.motion import MotionGuide, motion_latent_mask
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
    _motion: MotionGuide | None = None
    _motion_latents: torch.Tensor | None = None
    _motion_mask: torch.Tensor | None = None
    _motion_noise: torch.Tensor | None = None

    def __call__(
        self,
        *args: Any,
        condition: ConditionFrames | None = None,
        motion: MotionGuide | None = None,
        **kwargs: Any,
    ):
        if condition is None:
            raise ValueError("Allegro-TI2V needs at least one condition frame (`condition`).")
        self._condition, self._condition_latents = condition, None
        self._motion = motion if motion is not None and motion.active else None
        hook = self.transformer.register_forward_pre_hook(self._feed_condition, with_kwargs=True)
        scheduler_set_timesteps = self.scheduler.set_timesteps
        if self._motion is not None:
            self.scheduler.set_timesteps = self._motion_timesteps(scheduler_set_timesteps)
            kwargs = self._with_motion_callback(kwargs)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            hook.remove()
            if self._motion is not None:
                del self.scheduler.set_timesteps  # the instance attribute: the class's again
            self._condition, self._condition_latents = None, None
            self._motion = self._motion_latents = self._motion_mask = self._motion_noise = None

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
        if self._motion is not None:
            latents = self._start_from_motion(latents, batch_size, num_frames, dtype, device)
        self._offload_vae()
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
        images = condition.images.to(device=device, dtype=dtype)
        masked_video, mask = pixel_condition(images, condition.indices, num_frames)
        posterior = self._encode_video(masked_video, dtype)
        parameters = posterior.parameters.repeat(batch_size, 1, 1, 1, 1)
        posterior = type(posterior)(parameters)
        # The same scale the pipeline decodes with (pipeline_allegro.py:609).
        video_latents = posterior.sample(generator) * self.vae.config.scaling_factor
        mask_latents = latent_mask(
            mask.repeat(batch_size, 1, 1, 1, 1),
            self.vae_scale_factor_temporal,
            self.vae_scale_factor_spatial,
        )
        return torch.cat([video_latents, mask_latents.to(video_latents.dtype)], dim=1).to(dtype)

    def _encode_video(self, video: torch.Tensor, dtype: torch.dtype):
        """A pixel video (1, 3, F, H, W) in [-1, 1] -> the VAE's posterior."""
        height, width = video.shape[-2:]
        num_frames = video.shape[2]
        # The official script hands the images over in the transformer's dtype (bf16) before
        # the VAE casts them to its own; round the same way so a seed gives the same video.
        video = video.to(dtype).to(self.vae.dtype)
        # diffusers' Allegro VAE encodes only tiled (autoencoder_kl_allegro.py:801), with
        # tiles fitted to cover this size exactly.
        self.vae.enable_tiling()
        apply_tiling(self.vae, fit_tiling(num_frames, height, width, self.vae_scale_factor_spatial))
        # diffusers' tiled encode handles one video at a time (autoencoder_kl_allegro.py:900):
        # encode once, draw the posterior sample for the whole batch in one call, as the
        # official code does for its repeated batch.
        return self.vae.encode(video).latent_dist

    def _offload_vae(self) -> None:
        """Under model offload accelerate sends a model back to the CPU only when the next one
        in the chain runs, and the VAE is last: it would sit on the GPU through every step.
        Send it back now (UserCpuOffloadHook.offload -> CpuOffload.init_hook, accelerate
        hooks.py:777; diffusers keeps the hooks in _all_hooks, pipeline_utils.py:1255)."""
        for hook in getattr(self, "_all_hooks", ()):
            if hook.model is self.vae:
                hook.offload()

    def _motion_timesteps(self, set_timesteps):
        """The scheduler's ``set_timesteps``, then the loop starts at ``tweak``: the
        timesteps before it are dropped and ``set_begin_index`` tells the scheduler where
        its sigmas start (Euler ancestral's ``_init_step_index`` and ``add_noise`` read it,
        scheduling_euler_ancestral_discrete.py:369-374, 510-518)."""
        tweak = self._motion.tweak

        def start_at_tweak(*args: Any, **kwargs: Any) -> None:
            set_timesteps(*args, **kwargs)
            self._full_timesteps = self.scheduler.timesteps
            self.scheduler.timesteps = self.scheduler.timesteps[tweak:]
            self.scheduler.set_begin_index(tweak)

        return start_at_tweak

    def _start_from_motion(self, latents, batch_size, num_frames, dtype, device):
        """Encode the motion signal; start from it noised to ``tweak`` (plain noise at 0)."""
        motion = self._motion
        scale = self.vae_scale_factor_spatial
        expected = (num_frames, 3, latents.shape[-2] * scale, latents.shape[-1] * scale)
        if (
            tuple(motion.video.shape) != expected
            or tuple(motion.mask.shape) != expected[:1] + expected[2:]
        ):
            raise ValueError(
                f"the motion signal is {tuple(motion.video.shape)} with a mask of "
                f"{tuple(motion.mask.shape)}; this video needs {expected}"
            )
        video = motion.video.to(device).transpose(0, 1)[None]  # (1, 3, F, H, W)
        # The posterior's mean: no random draw, so the seed's draws stay a plain run's.
        encoded = self._encode_video(video, dtype).mode() * self.vae.config.scaling_factor
        self._motion_latents = encoded.repeat(batch_size, 1, 1, 1, 1).to(latents)
        self._motion_mask = motion_latent_mask(
            motion.mask, self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        ).to(latents)
        # The fixed noise is the initial noise itself (prepare_latents scaled it by
        # init_noise_sigma, pipeline_allegro.py:605).
        self._motion_noise = latents / self.scheduler.init_noise_sigma
        if motion.tweak == 0:
            return latents
        return self._noised_motion(self.scheduler.timesteps[:1])

    def _noised_motion(self, timestep: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(self._motion_latents, self._motion_noise, timestep)

    def _with_motion_callback(self, kwargs: dict) -> dict:
        """Put the dual-clock replacement before the caller's ``callback_on_step_end``."""
        callback = kwargs.get("callback_on_step_end")
        inputs = list(kwargs.get("callback_on_step_end_tensor_inputs") or ["latents"])
        if "latents" not in inputs:
            inputs.append("latents")

        def hold_motion(pipe, step: int, timestep, tensors: dict) -> dict:
            tensors = dict(tensors)
            tensors["latents"] = self._hold_motion(step, tensors["latents"])
            outputs = dict(callback(pipe, step, timestep, tensors) or {}) if callback else {}
            return {"latents": tensors["latents"], **outputs}

        return {**kwargs, "callback_on_step_end": hold_motion,
                "callback_on_step_end_tensor_inputs": inputs}  # fmt: skip

    def _hold_motion(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        """After step ``step`` (counted from ``tweak``): until ``strong``, the masked region
        becomes the motion latents noised to the next timestep (clean after the last)."""
        motion = self._motion
        done = motion.tweak + step + 1  # steps of the full schedule taken so far
        if done > motion.strong:
            return latents
        if done < len(self._full_timesteps):
            held = self._noised_motion(self._full_timesteps[done : done + 1])
        else:
            held = self._motion_latents
        mask = self._motion_mask
        return latents * (1 - mask) + held.to(latents) * mask

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
