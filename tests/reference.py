"""Helpers shared by the parity tests: seeded reference models, official-layout checkpoints,
and the error measures every test reports."""

import json
import math

import mlx.core as mx
import numpy as np
import torch
from safetensors.torch import save_file

# Figures gathered during the run, printed at the end by conftest.py.
PARITY_FIGURES: list[tuple[str, str, float]] = []
# (test, the one line a user saw) for every refused bad input, printed at the end too.
REFUSALS: list[tuple[str, str]] = []


def seed_module_(module: torch.nn.Module, seed: int, std: float | None = None) -> torch.nn.Module:
    """Overwrite every parameter and floating buffer with seeded random values.

    ltx-core builds its models on the meta device and leaves parameters uninitialised, so the
    module is first materialised on the CPU. Matrices get ~1/sqrt(fan_in) scale so activations
    stay O(1) through deep stacks; vectors get N(0, 0.1) around their default (1 for norm
    weights is not assumed: a random scale exercises the code path better).
    """
    module.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = list(module.named_parameters()) + [
            (n, b) for n, b in module.named_buffers() if b is not None and b.is_floating_point()
        ]
        for _, tensor in sorted(tensors, key=lambda item: item[0]):
            if tensor.ndim >= 2:
                scale = std if std is not None else 1.0 / math.sqrt(max(1, tensor[0].numel()))
            else:
                scale = std if std is not None else 0.1
            values = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * scale
            tensor.copy_(values.to(tensor.dtype))
    return module.float().eval()


def save_checkpoint(path, tensors: dict[str, torch.Tensor], config: dict | None) -> str:
    """Write tensors as an official-layout safetensors file with the config in its metadata."""
    metadata = {"config": json.dumps(config)} if config is not None else None
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return str(path)


def prefixed(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    if isinstance(value, mx.array):
        return np.array(value.astype(mx.float32))
    return np.asarray(value, dtype=np.float32)


def to_mx(value: torch.Tensor, dtype=mx.float32) -> mx.array:
    return mx.array(value.detach().float().cpu().numpy()).astype(dtype)


def relative_error(actual, reference) -> float:
    """max|actual - reference| / max|reference|."""
    a, r = to_numpy(actual), to_numpy(reference)
    assert a.shape == r.shape, f"shape {a.shape} != reference {r.shape}"
    scale = float(np.abs(r).max())
    return float(np.abs(a.astype(np.float64) - r).max()) / (scale if scale > 0 else 1.0)


def cosine(actual, reference) -> float:
    a, r = to_numpy(actual).ravel().astype(np.float64), to_numpy(reference).ravel().astype(np.float64)
    return float(a @ r / (np.linalg.norm(a) * np.linalg.norm(r) + 1e-30))


def assert_matches(name: str, actual, reference, tol: float = 1e-5) -> float:
    """Assert max|Δ| <= tol·max|ref| and record the figure for the end-of-run table."""
    error = relative_error(actual, reference)
    PARITY_FIGURES.append((name, "max|Δ|/max|ref|", error))
    assert np.isfinite(error) and error <= tol, f"{name}: max|Δ|/max|ref| = {error:.3e} > {tol:.0e}"
    return error


def assert_cosine(name: str, actual, reference, minimum: float = 0.999) -> float:
    value = cosine(actual, reference)
    PARITY_FIGURES.append((name, "cosine", value))
    assert value >= minimum, f"{name}: cosine {value:.6f} < {minimum}"
    return value
