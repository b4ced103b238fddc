"""Joining the processes `mlx.launch` started: the group, the checks that a launch is sound,
and the one agreement every rank takes part in before any model loads.

A rank that fails on its own (a missing file on one machine, other arguments) must not leave
the others waiting in a collective for ever: every rank runs its checks, then all exchange
one fixed-size record (a digest of their arguments and their error, if any) in a single
`all_gather`, and every rank raises the same one-line error when any record differs.
"""

import hashlib

import mlx.core as mx
import numpy as np

from LTX_2_MLX.progress import set_quiet

MODES = ("guidance", "tensor")
# Bytes of an error message carried to the other ranks; longer ones are cut.
_MESSAGE_BYTES = 240
_DIGEST_BYTES = 16


class ParallelError(ValueError):
    """A launch that cannot run as asked; the message says what to change."""


def parallel_group(mode: str | None) -> mx.distributed.Group | None:
    """The group of all launched processes for `mode`, or None for a plain run.

    Raises ParallelError when `mode` is not known or when this process is alone (started
    without `mlx.launch`, or launched with one process): it has no one to share work with.
    Every rank but 0 is made quiet: rank 0's progress bars stand for all.
    """
    if mode is None:
        return None
    if mode not in MODES:
        raise ParallelError(f"--parallel {mode} is not one of {', '.join(MODES)}")
    group = mx.distributed.init()
    if group.size() < 2:
        raise ParallelError(
            f"--parallel {mode} needs several processes but this one is alone: start it with "
            f"`mlx.launch -n 2 -- ltx2-mlx generate ...` (or --hosts/--hostfile for several machines), "
            "or drop --parallel"
        )
    set_quiet(group.rank() != 0)
    return group


def is_writer(group: mx.distributed.Group | None) -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return group is None or group.rank() == 0


def check_parallel_mode(mode: str | None, guided: bool, config, pipeline: str, size: int | None = None) -> None:
    """Refuse a mode that cannot use the launched processes (`size`, by default the group's),
    before any model loads.

    config: the DiT's LTXModelConfig; tensor parallelism gives every process an equal share
    of each attention's heads.
    """
    if mode is None:
        return
    size = parallel_group(mode).size() if size is None else size
    heads = {"video": config.num_attention_heads}
    if config.model_type.has_audio:
        heads["audio"] = config.audio_num_attention_heads
    if mode == "guidance" and not guided:
        raise ParallelError(
            f"--parallel guidance spreads a guided step's passes (prompt, negative prompt, STG, modality) over "
            f"processes, but --pipeline {pipeline} is unguided (one pass per step): use --parallel tensor"
        )
    if mode == "tensor":
        for stream, count in heads.items():
            if count % size:
                raise ParallelError(
                    f"--parallel tensor splits attention heads evenly, but the {stream} stream has {count} heads "
                    f"for {size} processes: launch a number of processes that divides {count}"
                )


def arguments_digest(arguments: dict) -> bytes:
    """A digest of the options as given, the same on every rank that was given the same."""
    text = repr(sorted((key, repr(value)) for key, value in arguments.items()))
    return hashlib.sha256(text.encode()).digest()[:_DIGEST_BYTES]


def agree(group: mx.distributed.Group, digest: bytes, error: BaseException | None) -> None:
    """Every rank calls this once, failed or not; raises ParallelError on every rank when a
    rank failed its checks (naming the first one and its message) or the digests differ."""
    record = np.zeros(_DIGEST_BYTES + 1 + _MESSAGE_BYTES, dtype=np.uint8)
    record[:_DIGEST_BYTES] = np.frombuffer(digest, dtype=np.uint8)
    if error is not None:
        message = " ".join(str(error).split()).encode()[:_MESSAGE_BYTES]
        record[_DIGEST_BYTES] = 1
        record[_DIGEST_BYTES + 1 : _DIGEST_BYTES + 1 + len(message)] = np.frombuffer(message, dtype=np.uint8)
    records = np.array(mx.distributed.all_gather(mx.array(record[None]), group=group))
    for rank, other in enumerate(records):
        if other[_DIGEST_BYTES]:
            message = bytes(other[_DIGEST_BYTES + 1 :]).rstrip(b"\0").decode(errors="replace")
            raise ParallelError(f"rank {rank} of {group.size()} refused the run: {message}")
    differing = [rank for rank, other in enumerate(records) if bytes(other[:_DIGEST_BYTES]) != digest]
    if differing:
        raise ParallelError(
            f"the {group.size()} processes were not given the same arguments (rank {group.rank()} differs from "
            f"rank{'s' * (len(differing) > 1)} {', '.join(map(str, differing))}): launch one command line for all"
        )


def checked_on_every_rank(options: dict, prepare):
    """(group, prepare(options)) once every rank has prepared: with `options["parallel"]` set,
    each rank runs `prepare` (its checks, no model loading) and then `agree`s with the others,
    so a rank that fails, or was given other options, stops every rank with one line instead
    of leaving the rest waiting. A rank raises its own error; the others name it."""
    group = parallel_group(options.get("parallel"))
    if group is None:
        return None, prepare(options)
    error = None
    try:
        prepared = prepare(options)
    except Exception as failure:  # noqa: BLE001 - every failure must reach the other ranks
        error = failure
    try:
        agree(group, arguments_digest(options), error)
    except ParallelError:
        if error is not None:
            raise error from None
        raise
    return group, prepared
