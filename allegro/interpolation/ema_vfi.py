"""EMA-VFI frame interpolation (Zhang et al., CVPR 2023), implemented here from the paper's design.

EMA-VFI extracts motion and appearance together with inter-frame attention: in each window,
the tokens of one frame attend to the other frame's tokens; the attention-weighted
appearance refines the features, and the attention-weighted positions minus the token's own
position give a motion feature. A CNN + transformer backbone produces both at five scales,
two flow heads turn them into bidirectional flows and a blending mask (coarse to fine), and
a small U-Net adds a residual to the blended, warped frames.

The published checkpoints (``ours_t.pkl``, ``ours_small_t.pkl`` for any timestep and
``ours.pkl``, ``ours_small.pkl`` for the midpoint) are bare state dicts saved from a
DistributedDataParallel model; they load strictly into :class:`EmaVfiNet`. They were trained
on OpenCV's BGR channel order, which :class:`EmaVfiInterpolator` takes care of.

Weights are never downloaded: they come from an explicit path, ``$ALLEGRO_EMA_VFI_WEIGHTS``
or a copy already in the local Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from allegro.errors import InterpolationError

logger = logging.getLogger(__name__)

# The network needs sizes divisible by 16; the authors' scripts always pad to 32.
PAD_MULTIPLE = 32
# Keys of buffers the reference registers lazily in its shifted-window blocks; they hold a
# mask for whatever frame size ran last, so they are recomputed here instead.
_STALE_BUFFER_MARKERS = ("attn_mask", "HW")
# Additive attention bias that keeps tokens of different regions apart (as trained).
_MASKED = -100.0


@dataclass(frozen=True)
class EmaVfiConfig:
    """Architecture of one EMA-VFI variant."""

    width: int  # channels of the first stage; every later stage doubles them
    depths: tuple[int, ...]  # conv layers (stages 1-3) or blocks (4-5)
    window: int = 7  # attention window side in tokens

    @classmethod
    def small(cls) -> EmaVfiConfig:
        return cls(width=16, depths=(2, 2, 2, 2, 2))

    @classmethod
    def large(cls) -> EmaVfiConfig:
        return cls(width=32, depths=(2, 2, 2, 4, 4))

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.width * 2**stage for stage in range(5))

    def heads(self, stage: int) -> int:
        """Attention heads of transformer stage 3 or 4 (0-based)."""
        return self.stage_channels[stage] // 32

    def motion_channels(self, stage: int) -> int:
        """Motion channels one block of stage 3 or 4 adds; the blocks together give C."""
        return self.stage_channels[stage] // self.depths[stage]


# ours/ours_small (midpoint) and ours_t/ours_small_t (any timestep) share architectures.
VARIANTS: dict[str, EmaVfiConfig] = {
    "ours_small_t": EmaVfiConfig.small(),
    "ours_t": EmaVfiConfig.large(),
    "ours_small": EmaVfiConfig.small(),
    "ours": EmaVfiConfig.large(),
}


class EmaVfiOutput(NamedTuple):
    pred: Tensor  # (B, 3, H, W) in [0, 1]
    flow: Tensor  # (B, 4, H, W) pixels: x, y to sample frame 0, then x, y for frame 1
    mask: Tensor  # (B, 1, H, W) blending weight of warped frame 0


# --------------------------------------------------------------------------- helpers


def _conv_prelu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.PReLU(out_channels))


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``image`` (N, C, H, W) by ``flow`` (N, 2, H, W) in pixels, edges repeated."""
    n, _, height, width = flow.shape
    # Sample in float32 even under autocast: half precision loses sub-pixel accuracy.
    flow = flow.float()
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device).view(1, 1, width)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device).view(1, height, 1)
    grid = torch.stack(
        (
            xs.expand(n, height, width) + flow[:, 0] / ((image.shape[3] - 1.0) / 2.0),
            ys.expand(n, height, width) + flow[:, 1] / ((image.shape[2] - 1.0) / 2.0),
        ),
        dim=-1,
    )
    return F.grid_sample(
        image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )


def pad_to_multiple(
    frames: Tensor, multiple: int = PAD_MULTIPLE
) -> tuple[Tensor, tuple[slice, slice]]:
    """Replicate-pad (..., H, W) to multiples of ``multiple``, centred (odd pixel after).

    Returns the padded frames and the rows and columns that crop a result back to (H, W).
    """
    height, width = frames.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    top, left = pad_h // 2, pad_w // 2
    padded = F.pad(frames, (left, pad_w - left, top, pad_h - top), mode="replicate")
    return padded, (slice(top, top + height), slice(left, left + width))


def _to_windows(x: Tensor, window: int) -> Tensor:
    """(N, H, W, C) -> (N * windows, window * window, C), windows row-major per image."""
    n, height, width, channels = x.shape
    x = x.view(n, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def _from_windows(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`_to_windows`."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def _region_bias(
    row_cuts: Sequence[int],
    col_cuts: Sequence[int],
    height: int,
    width: int,
    window: int,
    device: torch.device,
) -> Tensor:
    """(windows, N, N) additive bias that stops attention between different grid regions.

    The grid is cut into up to 3 x 3 regions at the given row and column positions.
    """
    rows = torch.bucketize(
        torch.arange(height, device=device), torch.tensor(row_cuts, device=device), right=True
    )
    cols = torch.bucketize(
        torch.arange(width, device=device), torch.tensor(col_cuts, device=device), right=True
    )
    regions = (rows[:, None] * 3 + cols[None, :]).view(1, height, width, 1)
    ids = _to_windows(regions, window).squeeze(-1)
    differs = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(differs.shape, device=device).masked_fill(differs, _MASKED)


def _window_bias(
    height: int, width: int, window: int, shift: int, device: torch.device
) -> Tensor | None:
    """Attention bias of a block for an (height, width) token grid, built for this grid.

    Padding tokens (the grid is centre-padded to whole windows) and, in shifted blocks,
    tokens rolled in from the opposite edge are kept out of each other's attention.
    """
    pad_h, pad_w = -height % window, -width % window
    padded_h, padded_w = height + pad_h, width + pad_w
    bias = None
    if pad_h or pad_w:
        top, left = pad_h // 2, pad_w // 2
        bias = _region_bias(
            (top, top + height), (left, left + width), padded_h, padded_w, window, device
        )
    if shift:
        shift_bias = _region_bias(
            (padded_h - window, padded_h - shift),
            (padded_w - window, padded_w - shift),
            padded_h,
            padded_w,
            window,
            device,
        )
        # The padding regions are applied to the rolled windows without rolling them: that
        # is how the published checkpoints were trained, so it is kept.
        bias = shift_bias if bias is None else shift_bias.masked_fill(bias != 0, _MASKED)
    return bias


def _grid_coordinates(n: int, height: int, width: int, device: torch.device) -> Tensor:
    """(n, H, W, 2) token positions, x then y, each from -1 to 1."""
    xs = torch.linspace(-1.0, 1.0, width, device=device).view(1, 1, width).expand(n, height, -1)
    ys = torch.linspace(-1.0, 1.0, height, device=device).view(1, height, 1).expand(n, -1, width)
    return torch.stack((xs, ys), dim=-1)


# --------------------------------------------------------------------------- backbone


class ConvStage(nn.Module):
    """Stride-1 3x3 conv + PReLU layers of the three CNN stages."""

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(depth):
            layers += [
                nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, 1, 1),
                nn.PReLU(out_channels),
            ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class CrossScaleEmbed(nn.Module):
    """Stage-4 tokens from all three CNN stages at 1/8 scale, with dilated strided convs."""

    def __init__(self, in_channels: Sequence[int], embed_channels: int) -> None:
        super().__init__()
        base = in_channels[0]
        self.sources: list[int] = []  # which CNN stage feeds each conv
        layers = []
        # The coarsest stage gets one conv; each finer one twice as many, with growing
        # dilation, so the finer stages are seen at several receptive fields.
        for level in range(len(in_channels)):
            stage = len(in_channels) - 1 - level
            for dilation in range(1, 2**level + 1):
                layers.append(
                    nn.Conv2d(in_channels[stage], base, 3, 2 ** (level + 1), dilation, dilation)
                )
                self.sources.append(stage)
        self.layers = nn.ModuleList(layers)
        self.proj = nn.Conv2d(base * len(layers), embed_channels, 1)
        self.norm = nn.LayerNorm(embed_channels)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        x = torch.cat(
            [conv(features[s]) for conv, s in zip(self.layers, self.sources, strict=True)], 1
        )
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class OverlapEmbed(nn.Module):
    """Stage-5 tokens: a stride-2 3x3 conv of the stage-4 features."""

    def __init__(self, in_channels: int, embed_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_channels, 3, 2, 1)
        self.norm = nn.LayerNorm(embed_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class InterFrameAttention(nn.Module):
    """Window attention from one frame's tokens to the other's, giving appearance and motion."""

    def __init__(self, channels: int, motion_channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, channels * 2)
        self.cor_embed = nn.Linear(2, motion_channels)
        self.proj = nn.Linear(channels, channels)
        self.motion_proj = nn.Linear(motion_channels, motion_channels)

    def forward(
        self, x: Tensor, other: Tensor, coords: Tensor, bias: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """x, other: (windows, N, C); coords: (windows, N, 2); bias: (grid windows, N, N)."""
        windows, tokens, channels = x.shape
        q = self.q(x).view(windows, tokens, self.heads, -1).transpose(1, 2)
        k, v = self.kv(other).view(windows, tokens, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        positions = self.cor_embed(coords)
        position_heads = positions.view(windows, tokens, self.heads, -1).transpose(1, 2)
        if bias is not None:
            bias = bias.to(q.dtype).repeat(windows // bias.shape[0], 1, 1).unsqueeze(1)
        # One attention pass carries values and embedded positions together.
        attended = F.scaled_dot_product_attention(
            q,
            k,
            torch.cat((v, position_heads.to(v.dtype)), -1),
            attn_mask=bias,
            scale=self.scale,
        )
        attended = attended.transpose(1, 2)  # (windows, N, heads, values + positions)
        head_channels = channels // self.heads
        appearance = self.proj(attended[..., :head_channels].reshape(windows, tokens, channels))
        matched = attended[..., head_channels:].reshape(windows, tokens, -1)
        # Where a token's match in the other frame lies, relative to the token: motion.
        motion = self.motion_proj(matched - positions)
        return appearance, motion


class DepthwiseConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvMlp(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class MotionFormerBlock(nn.Module):
    """Inter-frame attention in (optionally shifted) windows, then a conv MLP."""

    def __init__(
        self, channels: int, motion_channels: int, heads: int, window: int, shift: int
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(channels, eps=1e-6)
        self.attn = InterFrameAttention(channels, motion_channels, heads)
        self.norm2 = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = ConvMlp(channels, channels * 4)

    def forward(self, x: Tensor, coords: Tensor) -> tuple[Tensor, Tensor]:
        """x: (2B, H, W, C), frame-0 images first; coords: (2B, H, W, 2).

        Returns the new tokens and this block's motion features (2B, H, W, motion).
        """
        _, height, width, _ = x.shape
        window, shift = self.window, self.shift
        pad_h, pad_w = -height % window, -width % window
        top, left = pad_h // 2, pad_w // 2
        padding = (0, 0, left, pad_w - left, top, pad_h - top)
        x_pad, coords_pad = F.pad(x, padding), F.pad(coords, padding)
        if shift:
            x_pad = torch.roll(x_pad, (-shift, -shift), (1, 2))
            coords_pad = torch.roll(coords_pad, (-shift, -shift), (1, 2))
        padded_h, padded_w = x_pad.shape[1:3]
        bias = _window_bias(height, width, window, shift, x.device)

        tokens = self.norm1(_to_windows(x_pad, window))
        half = tokens.shape[0] // 2
        other_frame = torch.cat((tokens[half:], tokens[:half]))
        appearance, motion = self.attn(tokens, other_frame, _to_windows(coords_pad, window), bias)
        # The residual is taken on the normalised tokens, as the checkpoints were trained.
        x_pad = _from_windows(tokens + appearance, window, padded_h, padded_w)
        motion = _from_windows(motion, window, padded_h, padded_w)
        if shift:
            x_pad = torch.roll(x_pad, (shift, shift), (1, 2))
            motion = torch.roll(motion, (shift, shift), (1, 2))
        x = x_pad[:, top : top + height, left : left + width]
        motion = motion[:, top : top + height, left : left + width]
        return x + self.mlp(self.norm2(x)), motion


class MotionAppearanceBackbone(nn.Module):
    """Three CNN stages, then two inter-frame transformer stages (1/8 and 1/16 scale)."""

    def __init__(self, config: EmaVfiConfig) -> None:
        super().__init__()
        channels, depths = config.stage_channels, config.depths
        self.block1 = ConvStage(3, channels[0], depths[0])
        self.patch_embed2 = _conv_prelu(channels[0], channels[1], stride=2)
        self.block2 = ConvStage(channels[1], channels[1], depths[1])
        self.patch_embed3 = _conv_prelu(channels[1], channels[2], stride=2)
        self.block3 = ConvStage(channels[2], channels[2], depths[2])
        self.patch_embed4 = CrossScaleEmbed(channels[:3], channels[3])
        self.block4 = self._blocks(config, 3)
        self.norm4 = nn.LayerNorm(channels[3], eps=1e-6)
        self.patch_embed5 = OverlapEmbed(channels[3], channels[4])
        self.block5 = self._blocks(config, 4)
        self.norm5 = nn.LayerNorm(channels[4], eps=1e-6)

    @staticmethod
    def _blocks(config: EmaVfiConfig, stage: int) -> nn.ModuleList:
        return nn.ModuleList(
            MotionFormerBlock(
                config.stage_channels[stage],
                config.motion_channels(stage),
                config.heads(stage),
                config.window,
                shift=config.window // 2 if index % 2 else 0,
            )
            for index in range(config.depths[stage])
        )

    @staticmethod
    def _transformer_stage(
        x: Tensor, blocks: nn.ModuleList, norm: nn.LayerNorm
    ) -> tuple[Tensor, Tensor]:
        n, height, width, _ = x.shape
        coords = _grid_coordinates(n, height, width, x.device)
        motions = []
        for block in blocks:
            x, motion = block(x, coords)
            motions.append(motion)
        appearance = norm(x).permute(0, 3, 1, 2).contiguous()
        return appearance, torch.cat(motions, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, img0: Tensor, img1: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Appearance features of the 5 stages and motion features of stages 4 and 5.

        Every tensor holds both frames along the batch axis, frame 0 first (NCHW).
        """
        x = torch.cat((img0, img1))
        f1 = self.block1(x)
        f2 = self.block2(self.patch_embed2(f1))
        f3 = self.block3(self.patch_embed3(f2))
        f4, motion4 = self._transformer_stage(
            self.patch_embed4((f1, f2, f3)), self.block4, self.norm4
        )
        f5, motion5 = self._transformer_stage(self.patch_embed5(f4), self.block5, self.norm5)
        return [f1, f2, f3, f4, f5], [motion4, motion5]


# --------------------------------------------------------------------------- flow + refine


class FlowHead(nn.Module):
    """Flow and mask (update) from one backbone stage, at full resolution."""

    def __init__(self, feature_channels: int, scale: int, hidden: int, image_channels: int):
        super().__init__()
        self.scale = scale
        # Features are pixel-shuffled up 4x (16 times fewer channels) before the convs.
        self.conv = nn.Sequential(
            _conv_prelu(feature_channels // 16 + image_channels, hidden),
            _conv_prelu(hidden, hidden),
            _conv_prelu(hidden, 5),
        )

    def forward(
        self, features: Tensor, images: Tensor, flow: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        features = F.pixel_shuffle(F.pixel_shuffle(features, 2), 2)
        down = 4.0 / self.scale
        images = F.interpolate(images, scale_factor=down, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=down, mode="bilinear", align_corners=False)
            images = torch.cat((images, flow * down), 1)
        out = self.conv(torch.cat((features, images), 1))
        up = self.scale // 4
        out = F.interpolate(out, scale_factor=up, mode="bilinear", align_corners=False)
        return out[:, :4].float() * up, out[:, 4:5].float()


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_prelu(in_channels, out_channels, stride=2)
        self.conv2 = _conv_prelu(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


def _deconv_prelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1), nn.PReLU(out_channels)
    )


class RefineUnet(nn.Module):
    """Residual for the blended frame, from the frames, flows and warped backbone features."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.down0 = DownBlock(17 + c, 2 * c)
        self.down1 = DownBlock(4 * c, 4 * c)
        self.down2 = DownBlock(8 * c, 8 * c)
        self.down3 = DownBlock(16 * c, 16 * c)
        self.up0 = _deconv_prelu(32 * c, 8 * c)
        self.up1 = _deconv_prelu(16 * c, 4 * c)
        self.up2 = _deconv_prelu(8 * c, 2 * c)
        self.up3 = _deconv_prelu(4 * c, c)
        self.conv = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, frames: Tensor, warped0: list[Tensor], warped1: list[Tensor]) -> Tensor:
        """frames: images, warped images, mask logit and flow (17 channels)."""
        s0 = self.down0(torch.cat((frames, warped0[0], warped1[0]), 1))
        s1 = self.down1(torch.cat((s0, warped0[1], warped1[1]), 1))
        s2 = self.down2(torch.cat((s1, warped0[2], warped1[2]), 1))
        s3 = self.down3(torch.cat((s2, warped0[3], warped1[3]), 1))
        x = self.up0(torch.cat((s3, warped0[4], warped1[4]), 1))
        x = self.up1(torch.cat((x, s2), 1))
        x = self.up2(torch.cat((x, s1), 1))
        x = self.up3(torch.cat((x, s0), 1))
        return torch.sigmoid(self.conv(x))


class EmaVfiNet(nn.Module):
    """The whole network. Frames: float (B, 3, H, W) in [0, 1], BGR, H and W divisible by 16."""

    def __init__(self, config: EmaVfiConfig) -> None:
        super().__init__()
        self.config = config
        channels, hidden = config.stage_channels, 4 * config.width
        self.feature_bone = MotionAppearanceBackbone(config)
        # A coarse head on stage 5 (1/16 scale), then a refining one on stage 4 (1/8).
        self.block = nn.ModuleList(
            [
                FlowHead(4 * channels[4], 16, hidden, image_channels=6),
                FlowHead(4 * channels[3], 8, hidden, image_channels=17),
            ]
        )
        self.unet = RefineUnet(2 * config.width)

    def forward(self, img0: Tensor, img1: Tensor, timestep: float = 0.5) -> EmaVfiOutput:
        batch = img0.shape[0]
        appearance, motion = self.feature_bone(img0, img1)

        def head_features(stage: int) -> Tensor:
            # The timestep scales each frame's motion: the flow to time t from frame 0 is
            # t of its motion, from frame 1 it is 1 - t of its motion.
            stage_motion, stage_appearance = motion[stage - 3], appearance[stage]
            return torch.cat(
                (
                    timestep * stage_motion[:batch],
                    (1 - timestep) * stage_motion[batch:],
                    stage_appearance[:batch],
                    stage_appearance[batch:],
                ),
                1,
            )

        coarse_head, fine_head = self.block
        flow, mask = coarse_head(head_features(4), torch.cat((img0, img1), 1), None)
        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:])
        images = torch.cat((img0, img1, warped0, warped1, mask), 1)
        flow_update, mask_update = fine_head(head_features(3), images, flow)
        flow, mask = flow + flow_update, mask + mask_update

        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:])
        weight0 = torch.sigmoid(mask)
        blended = warped0 * weight0 + warped1 * (1 - weight0)
        features0, features1 = self._warp_features(appearance, flow, batch)
        frames = torch.cat((img0, img1, warped0, warped1, mask, flow), 1)
        residual = self.unet(frames, features0, features1).float() * 2 - 1
        return EmaVfiOutput((blended + residual).clamp(0, 1), flow, weight0)

    @staticmethod
    def _warp_features(
        appearance: list[Tensor], flow: Tensor, batch: int
    ) -> tuple[list[Tensor], list[Tensor]]:
        warped0, warped1 = [], []
        for level, features in enumerate(appearance):
            if level:
                flow = (
                    F.interpolate(flow, scale_factor=0.5, mode="bilinear", align_corners=False)
                    * 0.5
                )
            warped0.append(warp(features[:batch], flow[:, :2]))
            warped1.append(warp(features[batch:], flow[:, 2:]))
        return warped0, warped1

    def inference(
        self, img0: Tensor, img1: Tensor, timestep: float = 0.5, tta: bool = False
    ) -> Tensor:
        """The frame at ``timestep``; with ``tta``, averaged with the run on both frames
        flipped vertically and horizontally (flipped back)."""
        pred = self(img0, img1, timestep).pred
        if tta:
            flipped = self(img0.flip(2, 3), img1.flip(2, 3), timestep).pred
            pred = (pred + flipped.flip(2, 3)) / 2
        return pred


# --------------------------------------------------------------------------- checkpoints


def _model_state(raw: object, path: Path) -> dict[str, Tensor]:
    """State dict of the bare network: ``module.`` stripped, stale mask buffers dropped."""
    if (
        not isinstance(raw, Mapping)
        or not raw
        or not all(isinstance(key, str) and isinstance(value, Tensor) for key, value in raw.items())
    ):
        raise InterpolationError(
            f"{path} is not an EMA-VFI checkpoint: it does not hold a plain set of weights."
        )
    return {
        key.removeprefix("module."): value
        for key, value in raw.items()
        if not any(marker in key for marker in _STALE_BUFFER_MARKERS)
    }


def _config_from_state(state: Mapping[str, Tensor], path: Path) -> EmaVfiConfig:
    """Work out width and depths from the weights (small and large differ in both)."""
    first_conv = state.get("feature_bone.block1.conv.0.weight")
    if first_conv is None or first_conv.ndim != 4:
        raise InterpolationError(
            f"{path} is not an EMA-VFI checkpoint (no EMA-VFI backbone weights in it)."
        )

    def count(prefix: str, suffix: str) -> int:
        return sum(key.startswith(prefix) and key.endswith(suffix) for key in state)

    depths = (
        *(count(f"feature_bone.block{stage}.conv.", ".weight") // 2 for stage in (1, 2, 3)),
        count("feature_bone.block4.", ".norm1.weight"),
        count("feature_bone.block5.", ".norm1.weight"),
    )
    return EmaVfiConfig(width=first_conv.shape[0], depths=depths)


def load_checkpoint(
    path: str | Path, variant: str | None = None, map_location: str | torch.device = "cpu"
) -> EmaVfiNet:
    """Load a published EMA-VFI checkpoint strictly into a new network in eval mode.

    ``variant`` (``ours_t``, ``ours_small_t``, ``ours``, ``ours_small``) is worked out from
    the weights when not given.
    """
    path = Path(path)
    if variant is not None and variant not in VARIANTS:
        raise InterpolationError(
            f"Unknown EMA-VFI variant {variant!r}; use one of {', '.join(VARIANTS)}."
        )
    if not path.is_file():
        raise InterpolationError(f"EMA-VFI weights not found at {path}.")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for files that are not checkpoints
        raise InterpolationError(
            f"{path} is not an EMA-VFI checkpoint: PyTorch could not read it ({exc})."
        ) from exc
    state = _model_state(raw, path)
    config = VARIANTS[variant] if variant else _config_from_state(state, path)
    # Built without memory or random init: the checkpoint's tensors become the parameters.
    with torch.device("meta"):
        model = EmaVfiNet(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise InterpolationError(
            f"{path} does not match the EMA-VFI {variant or 'network'} layout; is it one of "
            f"ours_t.pkl, ours.pkl, ours_small_t.pkl or ours_small.pkl? ({exc})"
        ) from exc
    return model.eval()


# --------------------------------------------------------------------------- user-facing


class EmaVfiInterpolator:
    """EMA-VFI midpoint frames for uint8 RGB batches (the ``Interpolator`` protocol)."""

    name = "ema-vfi"

    def __init__(
        self,
        weights: str | Path,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        tta: bool = False,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = load_checkpoint(weights).to(self.device)
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        self.tta = tta
        if self.device.type == "cpu":
            logger.warning(
                "EMA-VFI runs on the CPU here: expect seconds per interpolated frame for small "
                "videos and up to about a minute per frame at 720p with ours_t."
            )

    def _autocast(self) -> contextlib.AbstractContextManager:
        # fp16 keeps more mantissa than bf16 for flows; warping itself runs in float32.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _to_network(self, frames: np.ndarray) -> Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float BGR in [0, 1] (trained on BGR)."""
        tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return tensor.flip(-1).permute(0, 3, 1, 2).float() / 255.0

    def midframes(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        if (
            before.shape != after.shape
            or before.ndim != 4
            or before.shape[-1] != 3
            or before.dtype != np.uint8
            or after.dtype != np.uint8
        ):
            raise InterpolationError(
                "EMA-VFI needs two matching (B, H, W, 3) uint8 frame batches, got "
                f"{before.shape} {before.dtype} and {after.shape} {after.dtype}."
            )
        img0, (rows, cols) = pad_to_multiple(self._to_network(before))
        img1, _ = pad_to_multiple(self._to_network(after))
        with torch.inference_mode(), self._autocast():
            pred = self.model.inference(img0, img1, timestep=0.5, tta=self.tta)
        frames = (pred[..., rows, cols].float() * 255.0).round().clamp(0, 255).to(torch.uint8)
        return frames.permute(0, 2, 3, 1).flip(-1).cpu().numpy()
