"""Gemma 3 12B text encoder forward: MLX vs transformers on the same GPU, same random weights,
same run.

One forward over 1,024 tokens (the prompt length LTX-2 pads to) returning every hidden state,
the embeddings and each layer's output, which LTX-2's feature extractor consumes (ltx-core calls
the language model with output_hidden_states=True; no LM head). MLX: our
LTX_2_MLX/model/text_encoder/gemma.py; reference: transformers' Gemma3TextModel with SDPA
attention. Gemma 3 12B's text config (REFERENCE_CONFIGS.md): 48 layers of width 3,840, 16 query
and 8 key-value heads of 256, MLP 15,360, a 1,024-token window on 5 of every 6 layers; random
bf16 weights drawn on the GPU (23.5 GB; no float32 copy), copied to our model as raw bf16 bits
through its own `sanitize` and the strict loader. The reference runs and is freed before MLX
runs. Prints the median of `--iters` runs after `--warmup` of each side, their ratio (goal,
issue 12: <= 0.90), peak memory and the cosine between the hidden states.

    python benchmarks/gemma.py                    # GPU (MLX CUDA backend + torch CUDA)
    python benchmarks/gemma.py --eval-layers 8    # MLX evaluates every 8 layers (--low-memory style)
    python benchmarks/gemma.py --small            # a 6-layer narrow Gemma on the CPU: checks the script
    python benchmarks/gemma.py --json out.json    # also write the figures
"""

import argparse
from functools import partial

import mlx.core as mx
import numpy as np
import torch
from harness import cosine, median_mlx, median_torch, report, use_cpu
from transformers import Gemma3TextConfig as ReferenceConfig
from transformers import Gemma3TextModel as ReferenceModel

from LTX_2_MLX.loader.checkpoint import load_module_weights
from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextConfig, Gemma3TextModel, sanitize

GOAL = 0.90

# The text half of Gemma 3 12B's config.json, in the keys both transformers 4 and 5 read.
GEMMA3_12B = {
    "model_type": "gemma3_text", "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "query_pre_attn_scalar": 256,
    "vocab_size": 262208, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh",
    "sliding_window": 1024, "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "max_position_embeddings": 131072,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(48)],
}  # fmt: skip


def small_gemma() -> dict:
    """Six layers (one global), narrow, with a window shorter than the prompt."""
    return {**GEMMA3_12B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16,
            "vocab_size": 1000, "sliding_window": 8, "layer_types": GEMMA3_12B["layer_types"][:6]}  # fmt: skip


def build_reference(config: dict, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """transformers' Gemma3TextModel made directly on `device` in `dtype`, then every parameter
    redrawn in place: N(0, 0.02) for matrices, N(0, 0.1) for the (1 + w) norm offsets."""
    reference_config = ReferenceConfig(**config, attn_implementation="sdpa")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = ReferenceModel(reference_config)
    finally:
        torch.set_default_dtype(previous)
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters(), key=lambda item: item[0]):
            parameter.normal_(0.0, 0.02 if parameter.ndim >= 2 else 0.1)
    return model.eval()


def torch_to_mlx(tensor: torch.Tensor) -> mx.array:
    """The same bits: bfloat16 travels as int16 (numpy has no bfloat16)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return mx.array(tensor.view(torch.int16).numpy()).view(mx.bfloat16)
    return mx.array(tensor.numpy())


def mlx_from_reference(reference: torch.nn.Module, config: dict) -> Gemma3TextModel:
    """Our model with the reference's weights, tensor by tensor, under the keys a Hugging Face
    Gemma3ForCausalLM file holds them ('model.' prefix), through `sanitize` and the strict loader."""
    model = Gemma3TextModel(Gemma3TextConfig.from_dict(config))
    weights = {f"model.{name}": torch_to_mlx(value) for name, value in reference.state_dict().items()}
    weights = {key: value for key, value in sanitize(weights).items() if not key.endswith("inv_freq")}
    load_module_weights(model, weights, "<transformers state dict>", "Gemma 3 text model")
    mx.eval(model.parameters())
    return model


def hidden_states_of(reference: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return reference(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=None, help="prompt length (default 1024; 32 with --small)")
    parser.add_argument("--eval-layers", type=int, default=None, help="MLX: layers per evaluation (default: all)")
    parser.add_argument("--small", action="store_true", help="6 narrow layers, 32 tokens, on the CPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if args.small:
        config, device, torch_dtype = small_gemma(), "cpu", torch.float32
        tokens = args.tokens or 32
        use_cpu()
    else:
        config, device, torch_dtype = GEMMA3_12B, "cuda", torch.bfloat16
        tokens = args.tokens or 1024
    print(f"mlx {mx.__version__} on {mx.default_device()}, torch {torch.__version__} on {device}, {torch_dtype}",
          flush=True)  # fmt: skip

    reference = build_reference(config, device, torch_dtype)
    model = mlx_from_reference(reference, config)
    model.eval_layers = args.eval_layers
    billions = sum(p.numel() for p in reference.parameters()) / 1e9
    print(f"Gemma 3 text model, {config['num_hidden_layers']} layers, {billions:.2f} B parameters", flush=True)

    ids = np.random.default_rng(1).integers(1, config["vocab_size"], size=(1, tokens))
    ids_torch = torch.from_numpy(ids).to(device)
    mask_torch = torch.ones_like(ids_torch)
    ids_mlx, mask_mlx = mx.array(ids.astype(np.int32)), mx.ones((1, tokens), dtype=mx.int32)

    ref_timing, ref_states = median_torch(
        partial(hidden_states_of, reference, ids_torch, mask_torch), args.warmup, args.iters, device
    )
    ref_states = [state.float().cpu().numpy() for state in ref_states]
    del reference
    if device == "cuda":
        torch.cuda.empty_cache()

    mlx_timing, (_, mlx_states) = median_mlx(partial(model, ids_mlx, mask_mlx), args.warmup, args.iters)
    mlx_states = [np.array(state.astype(mx.float32)) for state in mlx_states]
    if len(mlx_states) != len(ref_states):
        raise SystemExit(f"hidden states: MLX {len(mlx_states)}, transformers {len(ref_states)}")
    per_state = [cosine(a, b) for a, b in zip(mlx_states, ref_states, strict=True)]
    print(f"  cosine per hidden state: min {min(per_state):.6f} (state {int(np.argmin(per_state))}), "
          f"last {per_state[-1]:.6f}", flush=True)  # fmt: skip
    size = f"{tokens} tokens, {len(ref_states)} hidden states of {config['hidden_size']}"
    overall = cosine(np.stack(mlx_states), np.stack(ref_states))
    extra = {"parameters_b": billions, "eval_layers": args.eval_layers, "dtype": str(torch_dtype),
             "cosine_per_state": per_state}  # fmt: skip
    report("Gemma 3 text encoder forward", size, mlx_timing, ref_timing, overall, args.json,
           reference_name="transformers", goal=GOAL, extra=extra)  # fmt: skip


if __name__ == "__main__":
    main()
