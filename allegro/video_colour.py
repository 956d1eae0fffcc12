"""Which colours a video's YUV numbers mean, and the one conversion to the I420 the app writes.

A decoded frame's numbers mean nothing without their colour description: the YUV matrix
(BT.601, BT.709, ...), the range (limited 16..235, as TV and most cameras, or full 0..255, as
phones' ``yuvj420p``), and the primaries and transfer curve. The interpolate command works in
I420 (8-bit 4:2:0) and writes H.264 in it, so each input is brought there once, with its own
matrix and range, and the output is tagged with what it then is:

- 8-bit 4:2:0 YUV, limited or full range: the decoder's planes as they are (no conversion);
  the output keeps the source's matrix, range and tags (a phone's full-range video stays full
  range, tagged so).
- Other YUV (4:2:2, 4:4:4, 10-bit): chroma halved and/or bits reduced, with the source's own
  matrix and range on both sides, so the colours do not move.
- RGB (``libx264rgb``, screen recorders): converted to limited-range YUV with BT.709 for HD
  (1280 wide or more, or taller than 576: what mpv assumes for untagged video) or BT.601
  below, and tagged so.

Primaries and transfer are copied from the source where it states them; the app converts no
gamut. Values are FFmpeg's AVColorSpace / AVColorRange / AVColorPrimaries /
AVColorTransferCharacteristic numbers, as PyAV's frames and codec contexts carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# FFmpeg's libavutil/pixfmt.h values (stable ABI).
MATRIX_BT709 = 1
UNSPECIFIED = 2  # AVCOL_SPC_, AVCOL_PRI_ and AVCOL_TRC_UNSPECIFIED are all 2
MATRIX_BT601 = 6  # AVCOL_SPC_SMPTE170M, what the H.264 spec calls BT.601 (525 lines)
RANGE_LIMITED, RANGE_FULL = 1, 2  # AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG
HD_MIN_WIDTH, SD_MAX_HEIGHT = 1280, 576
# swscale's SWS_CS_* numbers for each AVColorSpace (PyAV's reformat takes the former:
# av/video/reformatter.py, _set_frame_colorspace). Unknown matrices are BT.601, as swscale
# assumes for untagged YUV.
_SWS_CS_BT601 = 5
# BT709, FCC, BT470BG, SMPTE170M, SMPTE240M, BT2020_NCL, BT2020_CL:
_SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
# The decoder's own planes go through when they are in one of these layouts.
I420_FORMATS = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class VideoColour:
    """What a stream's YUV numbers mean (see the module doc for the values)."""

    matrix: int = UNSPECIFIED
    full_range: bool = False
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED

    @property
    def color_range(self) -> int:
        return RANGE_FULL if self.full_range else RANGE_LIMITED


def i420_colour(codec_context: Any) -> VideoColour:
    """The colours of a decoded stream once in I420 (PyAV's video ``codec_context`` of the
    input stream): the source's own for YUV, a YUV matrix of the app's choice for RGB."""
    primaries = _specified(codec_context.color_primaries)
    transfer = _specified(codec_context.color_trc)
    pix_fmt = str(codec_context.pix_fmt or "")
    if _is_rgb(pix_fmt):
        hd = codec_context.width >= HD_MIN_WIDTH or codec_context.height > SD_MAX_HEIGHT
        matrix = MATRIX_BT709 if hd else MATRIX_BT601
        return VideoColour(matrix, False, primaries, transfer)
    full_range = codec_context.color_range == RANGE_FULL or pix_fmt.startswith("yuvj")
    matrix = _specified(codec_context.colorspace)
    return VideoColour(matrix, full_range, primaries, transfer)


def frame_to_i420(frame: Any, colour: VideoColour) -> np.ndarray:
    """A decoded PyAV frame as a (3H/2, W) uint8 I420 array in ``colour``: its own planes
    when it is already that (the fast, usual case), else one swscale conversion from the
    frame's own matrix and range (a frame that states no matrix has the stream's)."""
    matrix = _specified(frame.colorspace)
    if matrix == UNSPECIFIED:
        matrix = colour.matrix
    if (
        frame.format.name in I420_FORMATS
        and _full_range(frame) == colour.full_range
        and matrix == colour.matrix
    ):
        return frame.to_ndarray()
    if frame.format.is_rgb:  # RGB is full range; its matrix is unused, but swscale wants one
        source_matrix, source_range = _SWS_CS_BT601, RANGE_FULL
    else:
        source_matrix = _sws_colorspace(matrix)
        source_range = RANGE_FULL if _full_range(frame) else RANGE_LIMITED
    converted = frame.reformat(
        format="yuv420p",
        src_colorspace=source_matrix,
        dst_colorspace=_sws_colorspace(colour.matrix),
        src_color_range=source_range,
        dst_color_range=colour.color_range,
    )
    return converted.to_ndarray()


def i420_frame(frame: np.ndarray, colour: VideoColour | None) -> Any:
    """A (3H/2, W) I420 array as a PyAV frame tagged with ``colour`` (None: untagged)."""
    import av

    video_frame = av.VideoFrame.from_ndarray(frame, format="yuv420p")
    if colour is not None:
        tag(video_frame, colour)
    return video_frame


def rgb_to_i420_frame(frame: np.ndarray, colour: VideoColour) -> Any:
    """An (H, W, 3) RGB array converted once to an I420 PyAV frame in ``colour``."""
    import av

    return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        format="yuv420p",
        dst_colorspace=_sws_colorspace(colour.matrix),
        dst_color_range=colour.color_range,
    )


def tag(target: Any, colour: VideoColour) -> None:
    """Write ``colour`` into a PyAV frame or encoder codec context (libx264 puts the codec
    context's into the H.264 stream's VUI, which players read)."""
    target.colorspace = colour.matrix
    target.color_range = colour.color_range
    target.color_primaries = colour.primaries
    target.color_trc = colour.transfer


def _specified(value: int) -> int:
    """The value, with anything reserved or unknown to us read as unspecified."""
    return int(value) if int(value) not in (0, 3) else UNSPECIFIED


def _is_rgb(pix_fmt: str) -> bool:
    import av

    try:
        return av.VideoFormat(pix_fmt).is_rgb
    except ValueError:  # no pixel format known (yet)
        return False


def _full_range(frame: Any) -> bool:
    return frame.color_range == RANGE_FULL or frame.format.name.startswith("yuvj")


def _sws_colorspace(matrix: int) -> int:
    return _SWS_COLORSPACE.get(int(matrix), _SWS_CS_BT601)
