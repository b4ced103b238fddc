"""Converting a checkpoint to another dtype, written tensor by tensor.

The output keeps the official key layout and config metadata, so every loader reads it like
the original. Tensors are streamed: peak memory is one tensor, not the 40 GB file.
"""

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError

_SAFETENSORS_DTYPES = {
    mx.float32: "F32", mx.float16: "F16", mx.bfloat16: "BF16", mx.int64: "I64", mx.int32: "I32",
    mx.int16: "I16", mx.int8: "I8", mx.uint8: "U8", mx.uint32: "U32", mx.bool_: "BOOL",
}  # fmt: skip


def check_output_path(
    path: str | Path,
    inputs: Sequence[str | Path] = (),
    suffixes: Sequence[str] = (".safetensors",),
    what: str = "output",
) -> Path:
    """Refuse, before any work, an output that could not be written or would replace an input:
    a wrong extension, a missing or read-only directory, a directory, or the same file as one of
    `inputs` (by resolved path or by inode, so links count)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise CheckpointError(
            f"{path}: the {what} must end in {' or '.join(suffixes)}, e.g. {path.with_suffix(suffixes[0])}"
        )
    if path.is_dir():
        raise CheckpointError(
            f"{path}: is a directory; give a file name for the {what}, e.g. {path / ('out' + suffixes[0])}"
        )
    folder = path.parent
    if not folder.is_dir():
        raise CheckpointError(f"{path}: the directory {folder} does not exist; create it first (mkdir -p {folder}).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: the directory {folder} is not writable; choose another place for the {what}.")
    for source in inputs:
        source = Path(source)
        if path.resolve() == source.resolve() or _same_file(path, source):
            raise CheckpointError(
                f"{path}: is the input {source}; refusing to overwrite it. Choose another {what} path."
            )
    return path


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.samefile(second)
    except OSError:
        return False


def _tensor_bytes(array: mx.array) -> bytes:
    if array.dtype == mx.bfloat16:  # numpy has no bfloat16: write its raw 16-bit pattern
        array = array.view(mx.uint16)
    return np.array(array).tobytes()


def write_safetensors(path: str | Path, tensors: dict[str, mx.array], metadata: dict[str, str]) -> None:
    """Write tensors one at a time into `path`, atomically (a temporary file renamed at the end).

    The dict is emptied as it is written, so each tensor is freed once on disk.
    """
    path = Path(path)
    header: dict = {"__metadata__": metadata}
    offset = 0
    for key, array in tensors.items():
        if array.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"cannot write {key}: dtype {array.dtype} has no safetensors code")
        size = array.size * array.itemsize
        header[key] = {"dtype": _SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                       "data_offsets": [offset, offset + size]}  # fmt: skip
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for key in list(tensors):
                f.write(_tensor_bytes(tensors.pop(key)))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def convert_checkpoint(source: str | Path | Checkpoint, destination: str | Path, dtype: mx.Dtype) -> int:
    """Cast every floating tensor of `source` to `dtype`; returns the number of tensors."""
    source = Checkpoint.open(source)
    destination = check_output_path(destination, [source.path])
    metadata = source.metadata
    if "config" not in metadata:
        raise CheckpointError(
            f"{source.path}: no 'config' in the safetensors metadata; only official LTX-2 files can be converted."
        )
    tensors = {
        key: value.astype(dtype) if mx.issubdtype(value.dtype, mx.floating) else value
        for key, value in source.load().items()
    }
    count = len(tensors)
    write_safetensors(destination, tensors, {**metadata, "converted_by": "LTX_2_MLX", "dtype": str(dtype)})
    return count
