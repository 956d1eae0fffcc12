"""The Allegro-TI2V transformer: diffusers' T2V ``AllegroTransformer3DModel`` plus the three
input branches of the official ``AllegroTransformerTI2V3DModel`` (rhymes-ai/Allegro,
``transformer_3d_allegro_ti2v.py``), under the official key names so the hub checkpoint loads
strictly.

Input: (B, 3C, T, H, W) = [noisy latent | VAE latent of the masked video | mask], C latent
channels. Output: (B, C, T, H, W), as for T2V. The masked video and the mask are patch-embedded
and added to the noisy latent's tokens; the mean token of the noisy latent's first frame is
added to the timestep embedding that the output layer uses (only there: the blocks'
modulation is computed without it).

Where this port deliberately differs from the official code (bugs, not behaviour the weights
learned): RoPE tables come from diffusers' pipeline, not the official ``RoPE3D`` cache that
keys tables without their interpolation scale (``rope.py`` 45-54: an axis can get another
axis's scale when patched lengths coincide, depending on sizes seen before); the masks are
taken in diffusers' shapes ((B, L) text mask, no self-attention mask) instead of the official
forward's, which raises ``UnboundLocalError`` unless given 4-D/3-D masks (line 295).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import AllegroTransformer3DModel
from diffusers.models.embeddings import PatchEmbed
from torch import nn

OFFICIAL_CLASS_NAME = "AllegroTransformerTI2V3DModel"
# Official-only config keys and the values this port's numerics assume (the released
# config's): anything else would need code this port does not have.
_OFFICIAL_ONLY = {"norm_type": "ada_norm_single", "use_rope": True}
_OFFICIAL_UNUSED = (
    "sa_attention_mode",  # "flash": self-attention is never masked, as in diffusers
    "ca_attention_mode",
    "use_additional_conditions",  # forced off in the official code
    "num_embeds_ada_norm",
    "use_linear_projection",
    "only_cross_attention",
    "double_self_attention",
    "upcast_attention",
    "downsampler",
    "model_max_length",
)


def diffusers_config(config: dict[str, Any]) -> dict[str, Any]:
    """Translate the official config (``sample_size``, ``sample_size_t``, as the hub's
    ``transformer/config.json`` has it) into diffusers' keys; a diffusers-style config passes
    through unchanged. The official-only keys (norm_type, use_rope, attention modes, …) do not
    change the numerics of the released configuration and are dropped."""
    config = dict(config)
    for key, expected in _OFFICIAL_ONLY.items():
        value = config.pop(key, expected)
        if value != expected:
            raise ValueError(f"Allegro-TI2V with {key}={value!r} is not supported.")
    for key in _OFFICIAL_UNUSED:
        config.pop(key, None)
    if "sample_size" in config:
        sample = config.pop("sample_size")
        height, width = (sample, sample) if isinstance(sample, int) else sample
        config.setdefault("sample_height", height)
        config.setdefault("sample_width", width)
    if "sample_size_t" in config:
        frames = config.pop("sample_size_t")
        config.setdefault("sample_frames", frames)
        # The official default differs from diffusers' (a float t/16 for even lengths,
        # transformer_3d_allegro_ti2v.py:374): resolve it the official way here.
        if config.get("interpolation_scale_t") is None:
            config["interpolation_scale_t"] = (
                (frames - 1) // 16 + 1 if frames % 2 == 1 else frames / 16
            )
    return config


class AllegroTI2VTransformer3DModel(AllegroTransformer3DModel):
    """Allegro-TI2V: same config keys as the T2V model (``in_channels`` is the latent channel
    count; the forward takes three times as many)."""

    # Same signature as the parent, so diffusers' config machinery (which reads the
    # signature, configuration_utils.py:485) sees the parent's parameters.
    @functools.wraps(AllegroTransformer3DModel.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        # Official names and structure: [2D patch embedding `proj` conv, Linear(D, D, no bias)]
        # (transformer_3d_allegro_ti2v.py:364-434).
        self.pos_embed_mask = self._condition_branch(config)
        self.pos_embed_masked_video = self._condition_branch(config)
        self.pos_embed_first_frame = self._condition_branch(config)

    def _condition_branch(self, config) -> nn.ModuleList:
        patch = PatchEmbed(
            height=config.sample_height,
            width=config.sample_width,
            patch_size=config.patch_size,
            in_channels=config.in_channels,
            embed_dim=self.inner_dim,
            pos_embed_type=None,
        )
        linear = nn.Linear(self.inner_dim, self.inner_dim, bias=False)
        nn.init.zeros_(linear.weight)  # the official zero init: a fresh model starts as T2V
        return nn.ModuleList([patch, linear])

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # The hub checkpoint's config is written by the official class, with its own keys.
        return super().extract_init_dict(diffusers_config(config_dict), **kwargs)

    @staticmethod
    def _patch_frames(branch: nn.ModuleList, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T·H/p·W/p, D), tokens ordered (t, h, w) like ``pos_embed``."""
        batch = video.shape[0]
        frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1)
        tokens = branch[1](branch[0](frames))
        return tokens.unflatten(0, (batch, -1)).flatten(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_dict: bool = True,
    ):
        channels = self.config.in_channels
        if hidden_states.shape[1] != 3 * channels:
            raise ValueError(
                f"Allegro-TI2V takes {3 * channels} input channels (noisy latent, masked-video "
                f"latent, mask), not {hidden_states.shape[1]}."
            )
        noisy, masked_video, mask = hidden_states.split(channels, dim=1)
        dtype = self.pos_embed.proj.weight.dtype
        condition_tokens = (
            self._patch_frames(self.pos_embed_masked_video, masked_video.to(dtype)),
            self._patch_frames(self.pos_embed_mask, mask.to(dtype)),
        )
        # From the noisy latent's first frame, not the masked video (official lines 448-449).
        first_frame = self._patch_frames(self.pos_embed_first_frame, noisy[:, :, :1].to(dtype))
        with self._add_condition(condition_tokens, first_frame.mean(dim=1)):
            # diffusers' own T2V forward does everything else (blocks, RoPE, masks, output).
            return super().forward(
                noisy,
                encoder_hidden_states,
                timestep,
                attention_mask=attention_mask,
                encoder_attention_mask=encoder_attention_mask,
                image_rotary_emb=image_rotary_emb,
                return_dict=return_dict,
            )

    @contextlib.contextmanager
    def _add_condition(
        self, condition_tokens: tuple[torch.Tensor, ...], first_frame: torch.Tensor
    ) -> Iterator[None]:
        """For the length of one T2V forward: add the condition tokens to ``pos_embed``'s
        output and the first-frame embedding to ``adaln_single``'s embedded timestep (the one
        the output layer uses; the blocks' modulation stays as it is, official line 478)."""

        def after_patch_embedding(_module, _inputs, tokens: torch.Tensor) -> torch.Tensor:
            # diffusers patch-embeds (B·T, C, H, W) frames: (B·T, n, D); sum in official order.
            for extra in condition_tokens:
                tokens = tokens + extra.reshape(tokens.shape)
            return tokens

        def after_timestep(_module, _inputs, output):
            modulation, embedded_timestep = output
            return modulation, embedded_timestep + first_frame.to(embedded_timestep.dtype)

        handles = (
            self.pos_embed.register_forward_hook(after_patch_embedding),
            self.adaln_single.register_forward_hook(after_timestep),
        )
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
