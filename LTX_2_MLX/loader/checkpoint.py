"""Reading official Lightricks safetensors checkpoints: config metadata, prefixed tensors,
and strict loading of converted weights into MLX modules."""

import json
import math
import struct
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

# One entry of a weight map: turns a checkpoint key (prefix already stripped) and its tensor
# into zero or more (module key, array) pairs.
Converter = Callable[[str, mx.array], list[tuple[str, mx.array]]]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for what was asked of it."""


def _read_header(path: Path) -> dict:
    """The safetensors JSON header, read without touching tensor data."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file. Check the path, or download it with scripts/download_weights.py.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short). Re-download it.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len <= 0 or 8 + header_len > size:
            raise CheckpointError(f"{path}: not a safetensors file, or truncated. Re-download it.")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: corrupt safetensors header ({err}). Re-download it.") from None
    data_end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + data_end > size:
        raise CheckpointError(
            f"{path}: truncated ({size} bytes, header promises {8 + header_len + data_end}). Re-download it."
        )
    return header


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none)."""
    return _read_header(Path(path)).get("__metadata__") or {}


def read_config(path: str | Path, section: str | None = None, what: str = "model") -> dict:
    """The model config JSON that official checkpoints store under the metadata key `config`.

    `section` picks one part of a combined checkpoint (e.g. "transformer", "vae").
    """
    path = Path(path)
    metadata = read_metadata(path)
    if "config" not in metadata:
        raise CheckpointError(
            f"{path}: no 'config' in the safetensors metadata, so the {what} cannot be built. "
            "Use an official Lightricks checkpoint, or one written by `ltx2-mlx convert` / `ltx2-mlx quantize`."
        )
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the metadata 'config' is not valid JSON ({err}).") from None
    if section is None:
        return config
    if section not in config:
        raise CheckpointError(
            f"{path}: its config has no '{section}' section (it has {sorted(config)}), "
            f"so it does not hold a {what}. Pass the LTX-2 checkpoint that contains one."
        )
    return config


def tensor_names(path: str | Path) -> list[str]:
    return [k for k in _read_header(Path(path)) if k != "__metadata__"]


def tensor_shapes(path: str | Path) -> dict[str, list[int]]:
    return {k: t["shape"] for k, t in _read_header(Path(path)).items() if k != "__metadata__"}


def tensor_dtypes(path: str | Path) -> dict[str, str]:
    """Each tensor's stored safetensors dtype code (e.g. "BF16", "F8_E4M3")."""
    return {k: t["dtype"] for k, t in _read_header(Path(path)).items() if k != "__metadata__"}


_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


def stored_bytes(path: str | Path, prefix: str = "") -> int:
    """Bytes of the tensors under `prefix` as stored in the file (from the header alone)."""
    total = 0
    for key, entry in _read_header(Path(path)).items():
        if key != "__metadata__" and key.startswith(prefix):
            total += math.prod(entry["shape"]) * _DTYPE_BYTES.get(entry["dtype"], 1)
    return total


def evaluate_parameters(module: nn.Module, description: str, progress_above: int = 2**30) -> None:
    """Materialise a lazily loaded module one parameter at a time (the peak stays at the model
    plus one tensor), with a progress bar when it holds more than `progress_above` bytes."""
    from tqdm import tqdm

    parameters = [p for _, p in tree_flatten(module.parameters())]
    total = sum(p.nbytes for p in parameters)
    with tqdm(total=total, desc=description, unit="B", unit_scale=True, leave=False,
              disable=total <= progress_above) as progress:  # fmt: skip
        for parameter in parameters:
            mx.eval(parameter)
            progress.update(parameter.nbytes)


def load_tensors(path: str | Path, prefix: str = "", decode_fp8: bool = True) -> dict[str, mx.array]:
    """Tensors whose key starts with `prefix`, the prefix removed.

    e4m3 fp8 tensors are decoded to bfloat16, or with decode_fp8=False kept as their raw
    uint8 bytes (for modules that compute in fp8).

    mx.load maps the file lazily: a tensor is read from disk only when evaluated, so taking a
    slice of a 40 GB checkpoint does not read the rest of it.
    """
    path = Path(path)
    header = _read_header(path)
    try:
        tensors = mx.load(str(path), format="safetensors")
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: could not be read as safetensors ({err}). Re-download it.") from None
    selected = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        stored = header[key]["dtype"]
        if stored == "F8_E4M3":
            # MLX reads float8 tensors as their raw bytes.
            if decode_fp8:
                value = mx.from_fp8(value, dtype=mx.bfloat16)
        elif stored.startswith("F8"):
            raise CheckpointError(f"{path}: tensor {key} is {stored}, which MLX cannot decode; use a bf16 or e4m3 fp8 file.")
        selected[key[len(prefix) :]] = value
    return selected


def convert_weights(weights: dict[str, mx.array], converters: list[tuple[str, Converter]]) -> dict[str, mx.array]:
    """Apply the first converter whose key suffix matches each tensor ('' matches all)."""
    converted = {}
    for key, value in weights.items():
        for suffix, convert in converters:
            if key.endswith(suffix):
                converted.update(convert(key, value))
                break
        else:
            converted[key] = value
    return converted


def load_module_weights(
    module: nn.Module,
    weights: dict[str, mx.array],
    path: str | Path,
    what: str,
    dtype: mx.Dtype | None = None,
) -> nn.Module:
    """Load `weights` into `module`, refusing any missing, unexpected or misshapen key."""
    expected = dict(tree_flatten(module.parameters()))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshapen = [
        f"{k} {tuple(weights[k].shape)} != {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(weights))
        if tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{path}: its {what} weights do not match the model its config describes; "
            + "; ".join(problems)
            + ". Is this the right file for this model?"
        )
    if dtype is not None:
        weights = {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}
    module.load_weights(list(weights.items()))
    return module
