"""Causal 3D convolution of the video VAE.

Two evaluations of the same convolution, chosen by backend: MLX's 3D convolution on Metal is
slow (ml-explore/mlx#3625), so there (and on the CPU) a k×k×k convolution is the sum over the
temporal kernel of per-frame k×k convolutions, out[t] = Σ_i conv2d(x[t·s + i], W[:, i]);
on CUDA, cuDNN's 3D convolution is faster. Only the order of the sums differs.
"""

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.video_vae import pad_kernel


def torch_conv_weight_to_mlx(weight: mx.array) -> mx.array:
    """PyTorch (O, I, kT, kH, kW) -> MLX (O, kT, kH, kW, I), laid out in memory so that the
    convolution reads it without a copy (MLX copies a weight that is not row-contiguous at
    every call): in that order for the native 3D convolution; temporal tap first for the
    per-frame path, whose weight[:, tap] is then one contiguous block (the same values)."""
    if _native_conv3d_is_faster():
        return mx.contiguous(weight.transpose(0, 2, 3, 4, 1))
    return mx.contiguous(weight.transpose(2, 0, 3, 4, 1)).transpose(1, 0, 2, 3, 4)


def pad_spatial(x: mx.array, pad: tuple[int, int], mode: str) -> mx.array:
    """Pad H and W of a (N, H, W, C) array as torch's Conv padding_mode does.

    Each padded axis is one concatenation of the array and its edge strips: one copy of the
    array per axis. (mx.pad's reflect and edge modes fill zeros, copy the array in, then update
    each strip in place or, where the buffer is shared, with another whole copy: 1.9x the time
    on the CPU for a decoder-sized input.)"""
    ph, pw = pad
    if ph == 0 and pw == 0:
        return x
    if mode == "zeros":
        return mx.pad(x, [(0, 0), (ph, ph), (pw, pw), (0, 0)])
    if mode not in ("reflect", "replicate", "circular"):
        raise ValueError(f"unknown spatial padding mode {mode!r}; use zeros, reflect, replicate or circular")
    for axis, width in ((1, ph), (2, pw)):
        if width:
            before, after = _edge_strips(x, axis, width, mode)
            x = mx.concatenate([before, x, after], axis)
    return x


def _edge_strips(x: mx.array, axis: int, width: int, mode: str) -> tuple[mx.array, mx.array]:
    """The `width` samples that go before and after `axis` of x under `mode`."""

    def take(start, stop, step=1):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, stop, step)
        return x[tuple(index)]

    if mode == "reflect":  # the edge sample not repeated
        if width >= x.shape[axis]:
            raise ValueError(f"reflect padding of {width} needs more than {x.shape[axis]} samples along the axis")
        return take(width, 0, -1), take(-2, -width - 2, -1)
    if mode == "replicate":
        shape = list(x.shape)
        shape[axis] = width
        return mx.broadcast_to(take(0, 1), shape), mx.broadcast_to(take(-1, None), shape)
    return take(-width, None), take(0, width)  # circular


def temporal_padding(kernel_frames: int, causal: bool) -> tuple[int, int]:
    """(front, back) edge frames: k-1 copies of the first frame when causal, (k-1)/2 of the
    first and of the last frame otherwise."""
    return (kernel_frames - 1, 0) if causal else ((kernel_frames - 1) // 2,) * 2


def pad_temporal(x: mx.array, kernel_frames: int, causal: bool) -> mx.array:
    """Repeat edge frames of (B, F, H, W, C) (temporal_padding)."""
    front, back = temporal_padding(kernel_frames, causal)
    if front == back == 0:
        return x
    parts = [x[:, :1]] * front + [x] + [x[:, -1:]] * back
    return mx.concatenate(parts, axis=1)


def _pad(x: mx.array, kernel: tuple[int, int, int], padding_mode: str, causal: bool):
    """Time padded with edge frames; space padded here unless zeros (left to the convolution).
    Returns the padded (B, F, H, W, C) array and the (H, W) padding the convolution must add.
    On CUDA the padding is one kernel (pad_kernel) where space is padded too."""
    kt, kh, kw = kernel
    if padding_mode != "zeros":
        padded = pad_kernel.pad_video(x, temporal_padding(kt, causal), (kh // 2, kw // 2), padding_mode)
        if padded is not None:
            return padded, (0, 0)
    x = pad_temporal(x, kt, causal)
    if padding_mode == "zeros":
        return x, (kh // 2, kw // 2)
    b, f = x.shape[:2]
    x = pad_spatial(x.reshape(b * f, *x.shape[2:]), (kh // 2, kw // 2), padding_mode)
    return x.reshape(b, f, *x.shape[1:]), (0, 0)


def conv3d_by_frames(x, weight, bias, stride, padding_mode, causal) -> mx.array:
    """The sum over temporal taps of 2D convolutions of frames (the Metal and CPU path)."""
    kt = weight.shape[1]
    st, sh, sw = stride
    x, padding = _pad(x, weight.shape[1:4], padding_mode, causal)
    b, f = x.shape[:2]
    frames_out = (f - kt) // st + 1
    out = None
    for tap in range(kt):
        # Frames go on the convolution's batch axis; with B == 1 each tap's run of frames is
        # one contiguous block of the padded input.
        frames = x[:, tap : tap + st * (frames_out - 1) + 1 : st]
        frames = frames.reshape(b * frames_out, *frames.shape[2:])
        y = mx.conv2d(frames, weight[:, tap], stride=(sh, sw), padding=padding)
        out = y if out is None else out + y
    if bias is not None:
        out = out + bias
    return out.reshape(b, frames_out, *out.shape[1:])


def conv3d_native(x, weight, bias, stride, padding_mode, causal) -> mx.array:
    """One 3D convolution (fast with cuDNN on CUDA)."""
    x, padding = _pad(x, weight.shape[1:4], padding_mode, causal)
    out = mx.conv3d(x, weight, stride=stride, padding=(0, *padding))
    return out + bias if bias is not None else out


def _native_conv3d_is_faster() -> bool:
    # Measured on an H100 (benchmarks/vae_decode.py): cuDNN's 3D convolution decodes
    # 768x512x121 in 0.204 s against 0.244 s by frames. On Metal, MLX's 3D convolution is an
    # explicit im2col GEMM, 2-5x slower than by frames (ml-explore/mlx#3625) and far larger.
    cuda = getattr(mx, "cuda", None)
    return mx.default_device() == mx.gpu and cuda is not None and cuda.is_available()


def causal_conv3d(
    x: mx.array,
    weight: mx.array,
    bias: mx.array | None,
    stride: tuple[int, int, int],
    padding_mode: str,
    causal: bool,
) -> mx.array:
    """ltx-core's CausalConv3d on channels-last input.

    x: (B, F, H, W, C); weight: (O, kT, kH, kW, C). Time is padded with repeated edge frames
    (kT-1 copies of the first when causal, (kT-1)/2 at each end otherwise), space with
    `padding_mode` (k//2 on each side).
    """
    formulation = conv3d_native if _native_conv3d_is_faster() else conv3d_by_frames
    return formulation(x, weight, bias, stride, padding_mode, causal)


class CausalConv3d(nn.Module):
    """A k×k×k convolution padded in time with repeated edge frames (causal: past only).

    Its parameters sit in `conv` (weight (O, kT, kH, kW, I), bias (O,)), matching ltx-core's
    `<name>.conv.weight` keys.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | tuple[int, int, int] = 1,
        spatial_padding_mode: str = "zeros",
    ):
        super().__init__()
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.spatial_padding_mode = spatial_padding_mode
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=self.stride)

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        return causal_conv3d(x, self.conv.weight, self.conv.get("bias"), self.stride, self.spatial_padding_mode, causal)


class PointwiseConv3d(nn.Module):
    """ltx-core's 1×1×1 Conv3d (`make_linear_nd`): a per-position linear map over channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = mx.zeros((out_channels, 1, 1, 1, in_channels))
        self.bias = mx.zeros((out_channels,))

    def __call__(self, x: mx.array) -> mx.array:
        weight = self.weight.reshape(self.weight.shape[0], -1)
        return x @ weight.T + self.bias
