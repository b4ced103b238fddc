"""The video decode shared over the processes of a parallel run: the tiles of the tiled VAE
decode go round-robin to the ranks, and every rank blends all of them, in the order and with
the numbers one process would, so the frames are the same as one process's, bit for bit."""

import hashlib
from collections.abc import Callable, Iterator

import mlx.core as mx
import numpy as np

from LTX_2_MLX.distributed.launch import ParallelError
from LTX_2_MLX.model.video_vae.tiling import Tile, TilingConfig
from LTX_2_MLX.model.video_vae.video_vae import VideoDecoder, decode_video

# The dtypes a decoded tile may have, numbered from 1 in the record sent ahead of it (0: no tile).
_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
_DIGEST_BYTES = 16


class SharedTileDecoding:
    """Runs a tiled decode's tiles over `group` (a video_vae `TileDecoding`): in round k, rank r
    decodes tile kN + r, and one `all_gather` gives every rank that round's pixels. A rank left
    without a tile in the last round sends zeros.

    Edge tiles are smaller and an `all_gather` needs one shape on every rank, so each round
    first gathers each rank's tile shape (six integers), then the tiles zero-padded to the
    largest, which every rank crops back. Every rank holds the pixels of a temporal chunk's
    tiles until the chunk is blended, as one process does.
    """

    def __init__(self, group: mx.distributed.Group):
        self.group = group

    def __call__(self, tiles: list[Tile], decode: Callable[[int], mx.array]) -> Iterator[mx.array]:
        size, rank = self.group.size(), self.group.rank()
        for start in range(0, len(tiles), size):
            count = min(size, len(tiles) - start)
            mine = decode(start + rank) if rank < count else None
            record = np.zeros(6, dtype=np.int32)
            if mine is not None:
                record[:] = [_DTYPES.index(mine.dtype) + 1, *mine.shape]
            records = np.array(mx.distributed.all_gather(mx.array(record[None]), group=self.group))
            dtype = _DTYPES[records[0, 0] - 1]  # rank 0 has a tile in every round
            largest = records[:count, 1:].max(axis=0)
            if mine is None:
                padded = mx.zeros(tuple(largest), dtype=dtype)
            else:
                padded = mx.pad(mine, [(0, int(most - length)) for length, most in zip(mine.shape, largest)])
            gathered = mx.distributed.all_gather(padded[None], group=self.group)
            mx.eval(gathered)
            for index in range(count):
                yield gathered[index][tuple(slice(0, int(length)) for length in records[index, 1:])]


def check_same_decode(group: mx.distributed.Group, latent_shape: tuple[int, ...], tiling: TilingConfig | None) -> None:
    """Raise ParallelError on every rank when the ranks would cut the decode differently (the
    memory plan picks decode tiles from each machine's own memory), instead of leaving them
    waiting on each other's tiles."""
    text = repr((tuple(latent_shape), tiling))
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:_DIGEST_BYTES], dtype=np.uint8)
    digests = np.array(mx.distributed.all_gather(mx.array(digest[None]), group=group))
    differing = [other for other in range(group.size()) if not np.array_equal(digests[other], digest)]
    if differing:
        raise ParallelError(
            f"the {group.size()} processes would decode the video in different tiles (rank {group.rank()}: "
            f"{tiling or 'untiled'}; rank{'s' * (len(differing) > 1)} {', '.join(map(str, differing))} otherwise), "
            "as each plans for its own memory: give them all the same --memory-budget, or --no-tiled-decode"
        )


def decode_video_shared(
    group: mx.distributed.Group,
    latent: mx.array,
    video_decoder: VideoDecoder,
    tiling: TilingConfig | None,
    key: mx.array | None = None,
) -> Iterator[mx.array]:
    """`decode_video` with the work spread over `group`: every rank must iterate it. Tiled, each
    rank decodes its share of the tiles and yields all the frames (the same on every rank);
    untiled there is nothing to share, so rank 0 decodes alone and the others yield nothing."""
    check_same_decode(group, latent.shape, tiling)
    if tiling is not None:
        yield from decode_video(latent, video_decoder, tiling, key, decode_tiles=SharedTileDecoding(group))
    elif group.rank() == 0:
        yield from decode_video(latent, video_decoder, None, key)
