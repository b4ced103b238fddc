"""Our CUDA kernels on the GPU (model/common/cuda_kernels.py and its users): each against
ltx-core's own expression in torch bf16 on the same GPU and inputs, beside the portable MLX path
it replaces (LTX2_MLX_CUDA_KERNELS=0), with both timed. Real DiT and vocoder shapes.

What each must show (the process exits 1 when one does not):
- modulation, gated residual, split rotation: equal to ltx-core bit for bit;
- norm + modulation, q/k norm + rotation: differ from ltx-core in no more values than the
  portable path does (they sum squares in another order than torch);
- the video decoder's padding (edge frames, reflect): equal to ltx-core's bit for bit;
- anti-aliased Snake (BigVGAN's Activation1d): within one bf16 step of the portable float32
  path everywhere (or float32 noise at the output's scale, where terms cancel), differing in at
  most 1% of the values; against ltx-core (which rounds to bf16 after every step) its error is
  reported beside the portable path's.

    python benchmarks/cuda_kernels_check.py                 # on a CUDA GPU
    python benchmarks/cuda_kernels_check.py --json out.json
"""

import argparse
import os
import statistics
import sys
import time
import types
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import torch
from harness import versions, write_json

try:
    import torchaudio  # noqa: F401  (ltx_core.model.audio_vae imports it)
except ImportError:
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
from ltx_core.model.audio_vae.vocoder import Activation1d as ReferenceActivation1d
from ltx_core.model.audio_vae.vocoder import SnakeBeta as ReferenceSnakeBeta
from ltx_core.model.transformer.rope import LTXRopeType as ReferenceRopeType
from ltx_core.model.transformer.rope import apply_rotary_emb as reference_rotary_emb
from ltx_core.utils import rms_norm as reference_rms_norm

from LTX_2_MLX.model.audio_vae.vocoder import Activation1d, SnakeBeta
from LTX_2_MLX.model.common import cuda_kernels
from LTX_2_MLX.model.transformer import modulation, rope
from LTX_2_MLX.model.transformer.modulation import AdaValue, Normed
from LTX_2_MLX.model.video_vae.convolution import _pad

ADA_ROWS = 9


def to_torch(array: mx.array) -> torch.Tensor:
    return torch.from_numpy(np.array(array.view(mx.int16))).view(torch.bfloat16).cuda()


def to_mlx(tensor: torch.Tensor) -> mx.array:
    return mx.array(tensor.contiguous().view(torch.int16).cpu().numpy()).view(mx.bfloat16)


def portable(fn: Callable) -> mx.array:
    os.environ["LTX2_MLX_CUDA_KERNELS"] = "0"
    try:
        out = fn()
        mx.eval(out)
        return out
    finally:
        os.environ.pop("LTX2_MLX_CUDA_KERNELS")


def microseconds(fn: Callable, calls: int = 30) -> float:
    mx.eval(fn())
    times = []
    for _ in range(5):
        mx.synchronize()
        start = time.perf_counter()
        mx.eval([fn() for _ in range(calls)])
        mx.synchronize()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def compare(name: str, shape: str, fn: Callable, reference: mx.array, rule: str, calls: int = 30) -> dict:
    """Kernel and portable outputs of `fn` against `reference`, timings, and whether `rule`
    holds: "equal" (bit for bit), "no_worse" (no more differing values than the portable path)."""
    kernel_out = fn()
    mx.eval(kernel_out)
    portable_out = portable(fn)

    def differing(a):
        return (a != reference).astype(mx.float32).mean().item()

    def max_abs(a):
        return mx.abs(a.astype(mx.float32) - reference.astype(mx.float32)).max().item()

    row = {
        "kernel": name,
        "shape": shape,
        "differing_from_ltx_core": differing(kernel_out),
        "max_abs_from_ltx_core": max_abs(kernel_out),
        "portable_differing_from_ltx_core": differing(portable_out),
        "portable_max_abs_from_ltx_core": max_abs(portable_out),
        "reference_scale": mx.abs(reference.astype(mx.float32)).max().item(),
        "kernel_us": microseconds(fn, calls),
    }
    os.environ["LTX2_MLX_CUDA_KERNELS"] = "0"
    row["portable_us"] = microseconds(fn, calls)
    os.environ.pop("LTX2_MLX_CUDA_KERNELS")
    if rule == "equal":
        row["ok"] = row["differing_from_ltx_core"] == 0.0
    else:
        row["ok"] = row["differing_from_ltx_core"] <= row["portable_differing_from_ltx_core"]
    return row


def ada_inputs(batch: int, tokens: int, dim: int, timestep_tokens: int):
    mx.random.seed(0)
    x = (2 * mx.random.normal((batch, tokens, dim))).astype(mx.bfloat16)
    update = (2 * mx.random.normal((batch, tokens, dim))).astype(mx.bfloat16)
    table = (0.5 * mx.random.normal((ADA_ROWS, dim))).astype(mx.bfloat16)
    timestep = (0.5 * mx.random.normal((batch, timestep_tokens, ADA_ROWS * dim))).astype(mx.bfloat16)
    mx.eval(x, update, table, timestep)
    return x, update, table, timestep


def adaln_rows(batch: int, tokens: int, dim: int, timestep_tokens: int) -> list[dict]:
    x, update, table, timestep = ada_inputs(batch, tokens, dim, timestep_tokens)
    shift, scale, gate = (AdaValue(table, timestep, index) for index in (3, 4, 5))
    ada = to_torch(table)[None, None] + to_torch(timestep).reshape(batch, timestep_tokens, ADA_ROWS, dim)
    shape = f"({batch}, {tokens}, {dim}), timesteps per {'token' if timestep_tokens > 1 else 'row'}"
    with torch.no_grad():
        modulated = to_mlx(to_torch(x) * (1 + ada[:, :, 4]) + ada[:, :, 3])
        residual = to_mlx(to_torch(x) + to_torch(update) * ada[:, :, 5])
        normed = to_mlx(reference_rms_norm(to_torch(x), eps=1e-6) * (1 + ada[:, :, 4]) + ada[:, :, 3])
    return [
        compare("modulation", shape, lambda: modulation.modulate(x, scale, shift), modulated, "equal"),
        compare("gated residual", shape, lambda: modulation.gated_residual(x, update, gate), residual, "equal"),
        compare("norm + modulation", shape, lambda: Normed(x, 1e-6).modulated(scale, shift), normed, "no_worse"),
    ]


def rotation_rows(batch: int, tokens: int, heads: int, half: int) -> list[dict]:
    mx.random.seed(1)
    width = heads * 2 * half
    x = (3 * mx.random.normal((batch, tokens, width))).astype(mx.bfloat16)
    angles = mx.random.uniform(0, 6.3, (batch, tokens, heads, half))
    tables = (mx.cos(angles).astype(mx.bfloat16), mx.sin(angles).astype(mx.bfloat16))
    norm = nn.RMSNorm(width, eps=1e-6)
    norm.weight = (1 + 0.1 * mx.random.normal((width,))).astype(mx.bfloat16)
    mx.eval(x, tables, norm.weight)
    torch_tables = tuple(to_torch(t).transpose(1, 2) for t in tables)  # ltx-core's (B, H, T, D/2)
    torch_norm = torch.nn.RMSNorm(width, eps=1e-6).cuda().to(torch.bfloat16)
    with torch.no_grad():
        torch_norm.weight.copy_(to_torch(norm.weight))
        rotated = to_mlx(reference_rotary_emb(to_torch(x), torch_tables, ReferenceRopeType.SPLIT))
        normed = to_mlx(reference_rotary_emb(torch_norm(to_torch(x)), torch_tables, ReferenceRopeType.SPLIT))
    shape = f"({batch}, {tokens}, {heads} heads x {2 * half})"
    split = rope.LTXRopeType.SPLIT
    return [
        compare("split rotation", shape, lambda: rope.apply_rotary_emb(x, tables, split), rotated, "equal"),
        compare(
            "q/k norm + rotation", shape, lambda: rope.normed_rotary_emb(x, norm, tables, split), normed, "no_worse"
        ),
    ]


def snake_row(batch: int, length: int, channels: int, with_bias: bool) -> dict:
    mx.random.seed(2)
    module = Activation1d(SnakeBeta(channels))
    module.act.alpha, module.act.beta = 0.5 * mx.random.normal((channels,)), 0.5 * mx.random.normal((channels,))
    x = (2 * mx.random.normal((batch, length, channels))).astype(mx.bfloat16)
    bias = (0.3 * mx.random.normal((channels,))).astype(mx.bfloat16) if with_bias else None
    mx.eval(x, bias, module.parameters())
    reference = ReferenceActivation1d(ReferenceSnakeBeta(channels)).cuda()
    with torch.no_grad():
        reference.act.alpha.copy_(torch.from_numpy(np.array(module.act.alpha)))
        reference.act.beta.copy_(torch.from_numpy(np.array(module.act.beta)))
        reference = reference.to(torch.bfloat16)
        torch_x = to_torch(x)
        if bias is not None:
            torch_x = torch_x + to_torch(bias)  # the bias of the convolution before
        expected = to_mlx(reference(torch_x.transpose(1, 2)).transpose(1, 2))
    shape = f"({batch}, {length}, {channels}){' + bias' if with_bias else ''}"
    row = compare("anti-aliased Snake", shape, lambda: module(x, bias), expected, "no_worse")

    kernel_out, portable_out = module(x, bias), portable(lambda: module(x, bias))
    delta = mx.abs(kernel_out.astype(mx.float32) - portable_out.astype(mx.float32))
    # One bf16 step at the value, or float32 summation noise at the output's scale where terms cancel.
    allowed = 2**-7 * mx.abs(portable_out.astype(mx.float32)) + 2**-20 * row["reference_scale"]
    row["max_delta_over_one_step_from_portable"] = (delta / allowed).max().item()
    row["differing_from_portable"] = (kernel_out != portable_out).astype(mx.float32).mean().item()
    # Both paths compute in float32, closer to the exact value than ltx-core's bf16 steps.
    row["ok"] = row["max_delta_over_one_step_from_portable"] <= 1 and row["differing_from_portable"] <= 0.01
    return row


def padding_row(batch: int, frames: int, height: int, width: int, channels: int) -> dict:
    """The decoder convolution's padding (one edge frame each side, reflect 1 in space) against
    ltx-core's: torch.cat of the edge frames, then the convolution's reflect padding (F.pad)."""
    mx.random.seed(3)
    x = mx.random.normal((batch, frames, height, width, channels)).astype(mx.bfloat16)
    mx.eval(x)
    with torch.no_grad():
        video = to_torch(x).permute(0, 4, 1, 2, 3)
        video = torch.cat([video[:, :, :1], video, video[:, :, -1:]], dim=2)
        expected = to_mlx(torch.nn.functional.pad(video, (1, 1, 1, 1, 0, 0), mode="reflect").permute(0, 2, 3, 4, 1))
    shape = f"({batch}, {frames}, {height}, {width}, {channels})"

    def padded():
        return _pad(x, (3, 3, 3), "reflect", False)[0]

    return compare("decoder padding", shape, padded, expected, "equal", calls=3)  # 1-2 GB an output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    if not cuda_kernels.enabled() or cuda_kernels.kernel("ltx_modulate_bf16", modulation._SOURCE) is None:
        raise SystemExit("needs a CUDA GPU (sm_80 or newer) with NVRTC, and LTX2_MLX_CUDA_KERNELS not 0")
    rows = []
    for shape in [(1, 13376, 4096, 1), (1, 13376, 4096, 13376), (2, 126, 2048, 1)]:  # video 1216 / audio
        rows += adaln_rows(*shape)
    for shape in [(1, 13376, 32, 64), (1, 6144, 32, 64), (2, 126, 32, 32)]:
        rows += rotation_rows(*shape)
    # BigVGAN at 5 s: the first level's width (768; its length is 2,485) at 4x the length, the last
    # level (79,520 x 24), the BWE's first (5,964 x 256).
    for shape in [(1, 9940, 768, True), (1, 79520, 24, False), (1, 5964, 256, True)]:
        rows.append(snake_row(*shape))
    for shape in [(1, 17, 128, 192, 512), (1, 35, 256, 384, 256)]:  # decoder levels at 768 x 512
        rows.append(padding_row(*shape))
    for row in rows:
        figures = (
            f"differing from ltx-core {row['differing_from_ltx_core']:.2e} (portable "
            f"{row['portable_differing_from_ltx_core']:.2e}), max |Δ| {row['max_abs_from_ltx_core']:.3g} (portable "
            f"{row['portable_max_abs_from_ltx_core']:.3g}) at scale {row['reference_scale']:.3g}; "
            f"{row['kernel_us']:.0f} us against {row['portable_us']:.0f}"
        )
        if "differing_from_portable" in row:
            figures += (
                f"; from portable: {row['differing_from_portable']:.1e} differ, by at most "
                f"{row['max_delta_over_one_step_from_portable']:.2f} step"
            )
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['kernel']:<20} {row['shape']:<40} {figures}", flush=True)
    if args.json:
        write_json(args.json, {"versions": versions(), "rows": rows})
    if not all(row["ok"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
