"""Reading official Lightricks safetensors checkpoints: one `Checkpoint` per file (header,
metadata and config read once), prefixed tensors, and strict loading of converted weights
into MLX modules."""

import copy
import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from LTX_2_MLX.loader import staging
from LTX_2_MLX.loader.staging import device_copy
from LTX_2_MLX.loader.streaming import by_block
from LTX_2_MLX.model.common.one_ahead import OneAhead

# One entry of a weight map: turns a checkpoint key (prefix already stripped) and its tensor
# into zero or more (module key, array) pairs.
Converter = Callable[[str, mx.array], list[tuple[str, mx.array]]]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for what was asked of it."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it: its safetensors dtype code (e.g. "BF16",
    "F8_E4M3"), its shape and the byte range of its data in the file."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass
class _Header:
    """What one file's header says, shared by every Checkpoint opened on that file."""

    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    config: dict | None = None  # the metadata's `config` JSON, parsed on first use


def _read_header(path: Path, size: int) -> _Header:
    """The safetensors JSON header, read without touching tensor data."""
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
    data_start = 8 + header_len
    try:
        metadata = header.pop("__metadata__", None) or {}
        entries = {
            name: TensorEntry(entry["dtype"], tuple(entry["shape"]), *(data_start + o for o in entry["data_offsets"]))
            for name, entry in header.items()
        }
    except (AttributeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed safetensors header ({err!r}). Re-download it.") from None
    data_end = max((entry.end for entry in entries.values()), default=data_start)
    if data_end > size:
        raise CheckpointError(f"{path}: truncated ({size} bytes, header promises {data_end}). Re-download it.")
    return _Header(entries, metadata)


# Headers of the files opened in this process, by (resolved path, size, mtime, inode): a file
# rewritten in place or replaced by a rename is read again. Only headers are kept, never
# tensors, so a dropped model's weights are not pinned here.
_OPENED: dict[tuple, _Header] = {}
_OPENED_LIMIT = 64

# How each safetensors dtype is read back from its bytes (bfloat16 and e4m3 via their bits).
_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "F8_E4M3": "u1",
}  # fmt: skip


# MLX's CUDA backend reads a tensor on the GPU stream in the evaluating thread, then copies it
# from pageable host memory: ~1.9 GB/s on an H200. On the CPU stream its io threads read
# several tensors at once into managed memory, which one copy on the GPU moves to device
# memory: 2.6-3.5 GB/s (load_speed.py); the lazy loads read so. Resident loads read through
# `staging` instead (16 GB/s). Metal reads on the CPU stream anyway, into memory the GPU shares.
_HOST_READ = mx.cuda.is_available()


def reads_at_once() -> bool:
    """Whether resident loads read their tensors before returning (CUDA) rather than lazily."""
    return _HOST_READ


def staged_read_bytes() -> int:
    """Memory the resident loads' read buffers hold once the first has run (CUDA: host memory
    that MLX counts as its own; `staging`)."""
    return 2 * staging._BUFFER_BYTES if _HOST_READ else 0


# Work handed to `while_reading`, run one piece per buffer fill while `_read_now` waits for the disk.
_WHILE_READING: list[Callable[[], None]] = []


@contextmanager
def while_reading(tasks: Iterable[Callable[[], None]]) -> Iterator[None]:
    """Run `tasks`, one at a time, while the resident loads inside the block wait for their
    reads (on CUDA, `_read_now`: the evaluating thread is idle then); those left at the end
    run then. Short host-bound work (a kernel's first build) overlaps the reads this way, by
    one buffer fill per task. Elsewhere loads are lazy, nothing waits, and the tasks are
    dropped."""
    _WHILE_READING.extend(tasks if _HOST_READ else ())
    try:
        yield
    except BaseException:
        _WHILE_READING.clear()
        raise
    while _WHILE_READING:
        _WHILE_READING.pop(0)()


def _spare_time() -> None:
    """Run the next `while_reading` task; loads inside it wait for their own reads and run no other."""
    if not _WHILE_READING:
        return
    task, *waiting = _WHILE_READING
    _WHILE_READING.clear()
    try:
        task()
    finally:
        _WHILE_READING[:0] = waiting


class Checkpoint:
    """A safetensors file whose header (tensor names, shapes, dtypes, byte ranges), metadata
    and config are read once per process and shared by every loader.

    `Checkpoint.open(path)` returns the cached header while the file is unchanged. Tensors are
    never cached: each `load` maps the file anew (lazily: only what is evaluated is read), so
    a model's weights go when the model does.
    """

    def __init__(self, path: Path, header: _Header):
        self.path = path
        self._header = header

    @classmethod
    def open(cls, source: "str | Path | Checkpoint") -> "Checkpoint":
        if isinstance(source, Checkpoint):
            return source
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no such file. Check the path, or download it with scripts/download_weights.py."
            )
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        header = _OPENED.get(key)
        if header is None:
            header = _read_header(path, stat.st_size)
            if len(_OPENED) >= _OPENED_LIMIT:
                del _OPENED[next(iter(_OPENED))]
            _OPENED[key] = header
        return cls(path, header)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self.entries)} tensors)"

    @property
    def entries(self) -> dict[str, TensorEntry]:
        return self._header.entries

    @property
    def metadata(self) -> dict[str, str]:
        """The string metadata of the file (empty if it has none)."""
        return dict(self._header.metadata)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def holds(self, prefix: str) -> bool:
        """Whether any tensor's name starts with `prefix`."""
        return any(name.startswith(prefix) for name in self.entries)

    def config(self, section: str | None = None, what: str = "model") -> dict:
        """The model config JSON that official checkpoints store under the metadata key `config`
        (a copy: callers may change it).

        `section` picks one part of a combined checkpoint (e.g. "transformer", "vae"); the
        whole config is returned, checked to hold that section.
        """
        if self._header.config is None:
            if "config" not in self._header.metadata:
                raise CheckpointError(
                    f"{self.path}: no 'config' in the safetensors metadata, so the {what} cannot be built. Use an "
                    "official Lightricks checkpoint, or one written by `ltx2-mlx convert` / `ltx2-mlx quantize`."
                )
            try:
                self._header.config = json.loads(self._header.metadata["config"])
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{self.path}: the metadata 'config' is not valid JSON ({err}).") from None
        config = self._header.config
        if section is not None and section not in config:
            raise CheckpointError(
                f"{self.path}: its config has no '{section}' section (it has {sorted(config)}), "
                f"so it does not hold a {what}. Pass the LTX-2 checkpoint that contains one."
            )
        return copy.deepcopy(config)

    def stored_bytes(self, prefix: str = "") -> int:
        """Bytes of the tensors under `prefix` as stored in the file."""
        return sum(entry.nbytes for name, entry in self.entries.items() if name.startswith(prefix))

    def read_tensor(self, name: str, decode_fp8: bool = True) -> mx.array:
        """One tensor read straight from its byte range, without mapping the file: for small
        tensors (statistics, scales) wanted without the model they belong to."""
        if name not in self.entries:
            raise CheckpointError(f"{self.path}: has no tensor {name}. Is this the right file for this model?")
        entry = self.entries[name]
        if entry.dtype not in _NUMPY_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name} is {entry.dtype}, which cannot be read here.")
        with open(self.path, "rb") as f:
            f.seek(entry.start)
            data = f.read(entry.nbytes)
        array = mx.array(np.frombuffer(data, dtype=_NUMPY_DTYPES[entry.dtype]).reshape(entry.shape))
        return array.view(mx.bfloat16) if entry.dtype == "BF16" else self._decoded(name, array, decode_fp8)

    def load(self, prefix: str = "", decode_fp8: bool = True, resident: bool = False) -> dict[str, mx.array]:
        """Tensors whose key starts with `prefix`, the prefix removed (see `load_groups`)."""
        return self.load_groups((prefix,), decode_fp8, resident)[prefix]

    def load_resident(
        self,
        prefix: str,
        decode_fp8: bool = True,
        keep: Callable[[str], bool] = lambda key: True,
        description: str = "loading",
    ) -> dict[str, mx.array]:
        """`load(prefix, resident=True)`, only the keys (prefix removed) that `keep`, with a
        progress bar named `description` while a large read runs (CUDA)."""
        return self.load_groups((prefix,), decode_fp8, True, keep, description)[prefix]

    def load_groups(
        self,
        prefixes: Sequence[str],
        decode_fp8: bool = True,
        resident: bool = False,
        keep: Callable[[str], bool] = lambda key: True,
        description: str = "loading",
    ) -> dict[str, dict[str, mx.array]]:
        """{prefix: {key without the prefix: tensor}} for each of `prefixes`, from one mx.load.

        e4m3 fp8 tensors are decoded to bfloat16, or with decode_fp8=False kept as their raw
        uint8 bytes (for modules that compute in fp8).

        mx.load maps the file lazily: a tensor is read from disk only when evaluated, so taking
        a slice of a 40 GB checkpoint does not read the rest of it. `resident`: the caller
        evaluates every tensor next, each about as large once converted; on CUDA they are
        then read now (`_read_now`). `keep`: only the keys (prefix removed) it accepts.
        """
        wanted = {
            name: entry
            for name, entry in self.entries.items()
            if any(name.startswith(p) and keep(name[len(p) :]) for p in prefixes)
        }
        groups: dict[str, dict[str, mx.array]] = {prefix: {} for prefix in prefixes}
        if not wanted:
            return groups
        for name, value in self.load_entries(wanted, decode_fp8, resident, description).items():
            for prefix in prefixes:
                if name.startswith(prefix) and keep(name[len(prefix) :]):
                    groups[prefix][name[len(prefix) :]] = value
        return groups

    def load_entries(
        self, wanted: dict[str, TensorEntry], decode_fp8: bool = True, resident: bool = False,
        description: str = "loading",
    ) -> dict[str, mx.array]:  # fmt: skip
        """The `wanted` tensors by their full names, as `load_groups` reads them."""
        if resident and _HOST_READ and staging.available():
            return self._read_now(wanted, decode_fp8, description)
        self._check_fp8_kinds(wanted)
        reads = self._map()
        return {name: self._lazy(reads, name, decode_fp8) for name in wanted}

    def _lazy(self, reads: dict[str, mx.array], name: str, decode_fp8: bool) -> mx.array:
        return self._decoded(name, device_copy(reads[name]) if _HOST_READ else reads[name], decode_fp8)

    def _decoded(self, name: str, value: mx.array, decode_fp8: bool) -> mx.array:
        """MLX reads float8 tensors as their raw bytes: decoded to bfloat16 when asked."""
        return mx.from_fp8(value, dtype=mx.bfloat16) if self.entries[name].dtype == "F8_E4M3" and decode_fp8 else value

    def _read_now(
        self, wanted: dict[str, TensorEntry], decode_fp8: bool, description: str = "loading"
    ) -> dict[str, mx.array]:
        """The `wanted` tensors read and copied to device memory before returning (CUDA), through
        `staging`'s two host buffers. While each buffer's reads run, one piece of
        `while_reading` work does."""
        from LTX_2_MLX.progress import progress_bar

        self._check_fp8_kinds(wanted)
        unreadable = sorted({entry.dtype for entry in wanted.values()} - set(staging.MX_DTYPES))
        if unreadable:
            raise CheckpointError(f"{self.path}: holds {', '.join(unreadable)} tensors, which cannot be read here.")
        total = sum(entry.nbytes for entry in wanted.values())
        with progress_bar(total=total, desc=description, unit="B", unit_scale=True, leave=False,
                          disable=total <= 2**30) as progress:  # fmt: skip
            try:
                raw = staging.read(self.path, {name: (entry.start, entry.end) for name, entry in wanted.items()},
                                   _spare_time, progress.update)  # fmt: skip
            except EOFError as err:
                raise CheckpointError(f"{self.path}: truncated ({err}). Re-download it.") from None
        return {
            name: self._decoded(name, raw[name].view(staging.MX_DTYPES[entry.dtype]).reshape(entry.shape), decode_fp8)
            for name, entry in wanted.items()
        }

    def _check_fp8_kinds(self, wanted: dict[str, TensorEntry]) -> None:
        for name, entry in wanted.items():
            if entry.dtype.startswith("F8") and entry.dtype != "F8_E4M3":
                raise CheckpointError(
                    f"{self.path}: tensor {name} is {entry.dtype}, which MLX cannot decode; "
                    "use a bf16 or e4m3 fp8 file."
                )

    def _map(self) -> dict[str, mx.array]:
        """Every tensor of the file, lazily (nothing read until evaluated); on the CPU stream on CUDA."""
        try:
            return mx.load(str(self.path), format="safetensors", stream=mx.cpu if _HOST_READ else None)
        except (RuntimeError, ValueError) as err:
            raise CheckpointError(f"{self.path}: could not be read as safetensors ({err}). Re-download it.") from None


# The path-taking forms, for callers that need one fact about a file.


def read_metadata(checkpoint: str | Path | Checkpoint) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none)."""
    return Checkpoint.open(checkpoint).metadata


def read_config(checkpoint: str | Path | Checkpoint, section: str | None = None, what: str = "model") -> dict:
    """The model config JSON that official checkpoints store under the metadata key `config`.

    `section` picks one part of a combined checkpoint (e.g. "transformer", "vae").
    """
    return Checkpoint.open(checkpoint).config(section, what)


def tensor_names(checkpoint: str | Path | Checkpoint) -> list[str]:
    return Checkpoint.open(checkpoint).names


def tensor_shapes(checkpoint: str | Path | Checkpoint) -> dict[str, list[int]]:
    return {name: list(entry.shape) for name, entry in Checkpoint.open(checkpoint).entries.items()}


def tensor_dtypes(checkpoint: str | Path | Checkpoint) -> dict[str, str]:
    """Each tensor's stored safetensors dtype code (e.g. "BF16", "F8_E4M3")."""
    return {name: entry.dtype for name, entry in Checkpoint.open(checkpoint).entries.items()}


def stored_bytes(checkpoint: str | Path | Checkpoint, prefix: str = "") -> int:
    """Bytes of the tensors under `prefix` as stored in the file (from the header alone)."""
    return Checkpoint.open(checkpoint).stored_bytes(prefix)


def block_tensors(
    checkpoints: Sequence[Checkpoint], prefix: str, decode_fp8: bool = True
) -> Callable[[int], dict[str, mx.array]]:
    """One pass over a blocks list stored under `prefix` (e.g. "model.layers."), for a
    StreamedBlocks reader: block i's tensors {key relative to the block: tensor}, each block
    asked for once. The files are mapped once for the pass and the tensors are lazy; on CUDA
    each block is read at once through `staging` when asked for, while the GPU runs the one
    before."""
    holding = [checkpoint for checkpoint in checkpoints if checkpoint.holds(prefix)]
    if not _HOST_READ:
        tensors = {}
        for checkpoint in holding:
            tensors.update(checkpoint.load(prefix, decode_fp8))
        return by_block(tensors).pop
    # Each block's entries, per file, sorted out once for the pass.
    entries: dict[int, list[tuple[Checkpoint, dict[str, TensorEntry]]]] = {}
    for checkpoint in holding:
        per_block: dict[int, dict[str, TensorEntry]] = {}
        for name, entry in checkpoint.entries.items():
            if name.startswith(prefix):
                per_block.setdefault(int(name[len(prefix) :].split(".", 1)[0]), {})[name] = entry
        for index, wanted in per_block.items():
            entries.setdefault(index, []).append((checkpoint, wanted))

    def read(index: int) -> dict[str, mx.array]:
        start = len(prefix) + len(str(index)) + 1
        return {
            name[start:]: value
            for checkpoint, wanted in entries.pop(index)
            for name, value in checkpoint.load_entries(wanted, decode_fp8, resident=True).items()
        }

    return read


def load_tensors(checkpoint: str | Path | Checkpoint, prefix: str = "", decode_fp8: bool = True) -> dict[str, mx.array]:
    """Tensors whose key starts with `prefix`, the prefix removed (`Checkpoint.load`)."""
    return Checkpoint.open(checkpoint).load(prefix, decode_fp8)


def evaluate_in_groups(
    arrays: Sequence[mx.array], group_bytes: int, on_group: Callable[[int], None] | None = None, ahead: bool = True
) -> None:
    """Evaluate lazily loaded `arrays` about `group_bytes` at a time; `ahead`, each group queued
    before the one before it is waited for (OneAhead), so that reading one group overlaps
    converting or copying the last (two groups in flight); `on_group(bytes)` after each."""
    report = on_group or (lambda held: None)
    pieces, queued, group, held = OneAhead(), 0, [], 0
    for index, array in enumerate(arrays):
        group.append(array)
        held += array.nbytes
        if held < group_bytes and index < len(arrays) - 1:
            continue
        if ahead:
            pieces.queue(group)  # waits for the group before
            if queued:
                report(queued)
            queued = held
        else:
            mx.eval(group)
            report(held)
        group, held = [], 0
    pieces.finish()
    if queued:
        report(queued)


def evaluate_parameters(
    module: nn.Module, description: str, progress_above: int = 2**30, group_bytes: int = 2**28, ahead: bool = True
) -> None:
    """Materialise a lazily loaded module about `group_bytes` of parameters at a time (the peak
    stays near the model plus two groups, or one without `ahead`; MLX's io threads read a
    group's tensors concurrently, where loads run on the CPU stream: a Mac, and CUDA through
    `_HOST_READ`), with a progress bar when it holds more than `progress_above` bytes."""
    from LTX_2_MLX.progress import progress_bar

    parameters = [p for _, p in tree_flatten(module.parameters())]
    total = sum(p.nbytes for p in parameters)
    with progress_bar(total=total, desc=description, unit="B", unit_scale=True, leave=False,
              disable=total <= progress_above) as progress:  # fmt: skip
        evaluate_in_groups(parameters, group_bytes, progress.update, ahead)


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


def load_converted(module: nn.Module, weights: dict[str, mx.array], path: str | Path, what: str,
                   dtype: mx.Dtype | None = None) -> nn.Module:  # fmt: skip
    """load_module_weights, then the weights (lazy conversions of file tensors: transposed,
    stored contiguous, cast) computed 16 MiB at a time; returns the module in eval mode.

    Each file tensor is freed once converted when nothing but the module's graph holds it
    (loaders build `weights` in a helper so that their locals do not, and pass it straight
    here); evaluated all at once, most file tensors were read before any was converted,
    holding the weights nearly twice (the vocoder 1.8x). Groups are not queued ahead: the
    next group's file tensors would be held beside this one's (the tiny vocoder's test: 1.8x).
    On CUDA the loaders read their file tensors first (`resident=True`), so the peak there is
    the file's tensors plus one group."""
    load_module_weights(module, weights, path, what, dtype)
    del weights
    evaluate_parameters(module, what, group_bytes=2**24, ahead=False)
    return module.eval()


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
