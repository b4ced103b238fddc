from enum import Enum

import mlx.core as mx


class CausalityAxis(Enum):
    """The spectrogram axis along which convolutions see only the past.

    Named after ltx-core's (B, C, H, W) layout: HEIGHT is time, WIDTH is the mel axis.
    WIDTH_COMPATIBILITY pads like WIDTH in convolutions but resamples like older checkpoints did.
    """

    NONE = None
    WIDTH = "width"
    HEIGHT = "height"
    WIDTH_COMPATIBILITY = "width-compatibility"


def pad_spatial(x: mx.array, padding: tuple[int, int, int, int]) -> mx.array:
    """Zero-pad a channels-last (B, H, W, C) map by torch's (left, right, top, bottom) tuple."""
    left, right, top, bottom = padding
    if not any(padding):
        return x
    return mx.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
