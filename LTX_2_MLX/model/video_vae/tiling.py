"""Splitting a video or latent into overlapping tiles and blending them back, with the same
tile boundaries and blend masks as ltx-core's model/video_vae/tiling.py and video_vae.py.

Tiles are described on the reference's (B, C, F, H, W) axes; `Tile.channels_last` turns
their coordinates and masks into the VAE's internal (B, F, H, W, C) layout.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import mlx.core as mx
import numpy as np


def compute_trapezoidal_mask_1d(length: int, ramp_left: int, ramp_right: int, left_starts_from_0: bool = False):
    """Ones with linear fade-in over `ramp_left` and fade-out over `ramp_right` elements.

    The ramps exclude their end points (0 and 1), except that with `left_starts_from_0` the
    fade-in starts at exactly 0 (temporal tiles, whose first frame is shared with the previous).
    """
    if length <= 0:
        raise ValueError(f"mask length must be positive, got {length}")
    ramp_left = max(0, min(ramp_left, length))
    ramp_right = max(0, min(ramp_right, length))
    mask = np.ones(length, dtype=np.float32)
    if ramp_left > 0:
        if left_starts_from_0:
            fade_in = np.linspace(0.0, 1.0, ramp_left + 1, dtype=np.float32)[:-1]
        else:
            fade_in = np.linspace(0.0, 1.0, ramp_left + 2, dtype=np.float32)[1:-1]
        mask[:ramp_left] *= fade_in
    if ramp_right > 0:
        mask[-ramp_right:] *= np.linspace(1.0, 0.0, ramp_right + 2, dtype=np.float32)[1:-1]
    return np.clip(mask, 0.0, 1.0)


def compute_rectangular_mask_1d(length: int, left_ramp: int, right_ramp: int):
    """Ones with `left_ramp` leading and `right_ramp` trailing zeros."""
    if length <= 0:
        raise ValueError(f"mask length must be positive, got {length}")
    mask = np.ones(length, dtype=np.float32)
    if left_ramp > 0:
        mask[:left_ramp] = 0
    if right_ramp > 0:
        mask[-right_ramp:] = 0
    return mask


@dataclass(frozen=True)
class SpatialTilingConfig:
    """Tiles of `tile_size_in_pixels` (≥ 64, a multiple of 32) overlapping by
    `tile_overlap_in_pixels` (a multiple of 32, less than the tile)."""

    tile_size_in_pixels: int
    tile_overlap_in_pixels: int = 0

    def __post_init__(self) -> None:
        size, overlap = self.tile_size_in_pixels, self.tile_overlap_in_pixels
        if size < 64 or size % 32:
            raise ValueError(f"tile_size_in_pixels={size} must be at least 64 and a multiple of 32, e.g. 512")
        if overlap % 32 or overlap < 0:
            raise ValueError(f"tile_overlap_in_pixels={overlap} must be a non-negative multiple of 32, e.g. 64")
        if overlap >= size:
            raise ValueError(f"tile_overlap_in_pixels={overlap} must be less than tile_size_in_pixels={size}")


@dataclass(frozen=True)
class TemporalTilingConfig:
    """Chunks of `tile_size_in_frames` (≥ 16, a multiple of 8) overlapping by
    `tile_overlap_in_frames` (a multiple of 8, less than the chunk)."""

    tile_size_in_frames: int
    tile_overlap_in_frames: int = 0

    def __post_init__(self) -> None:
        size, overlap = self.tile_size_in_frames, self.tile_overlap_in_frames
        if size < 16 or size % 8:
            raise ValueError(f"tile_size_in_frames={size} must be at least 16 and a multiple of 8, e.g. 64")
        if overlap % 8 or overlap < 0:
            raise ValueError(f"tile_overlap_in_frames={overlap} must be a non-negative multiple of 8, e.g. 24")
        if overlap >= size:
            raise ValueError(f"tile_overlap_in_frames={overlap} must be less than tile_size_in_frames={size}")


@dataclass(frozen=True)
class TilingConfig:
    spatial_config: SpatialTilingConfig | None = None
    temporal_config: TemporalTilingConfig | None = None

    @classmethod
    def default(cls) -> "TilingConfig":
        return cls(SpatialTilingConfig(512, 64), TemporalTilingConfig(64, 24))


@dataclass(frozen=True)
class DimensionIntervals:
    """Per-tile [start, end) along one axis, with the lengths of its left and right blend ramps."""

    starts: list[int]
    ends: list[int]
    left_ramps: list[int]
    right_ramps: list[int]


SplitOperation = Callable[[int], DimensionIntervals]
# Intervals along an input axis -> (output slices, 1-D masks in output units or None).
MappingOperation = Callable[[DimensionIntervals], tuple[list[slice], list[np.ndarray | None]]]


def default_split_operation(length: int) -> DimensionIntervals:
    return DimensionIntervals(starts=[0], ends=[length], left_ramps=[0], right_ramps=[0])


def default_mapping_operation(_intervals: DimensionIntervals) -> tuple[list[slice], list[np.ndarray | None]]:
    return [slice(0, None)], [None]


def split_with_symmetric_overlaps(size: int, overlap: int) -> SplitOperation:
    """Tiles of `size` every `size - overlap`, the last one stretched to the end."""

    def split(length: int) -> DimensionIntervals:
        if length <= size:
            return default_split_operation(length)
        count = (length + size - 2 * overlap - 1) // (size - overlap)
        starts = [i * (size - overlap) for i in range(count)]
        ends = [start + size for start in starts]
        ends[-1] = length
        return DimensionIntervals(
            starts=starts,
            ends=ends,
            left_ramps=[0] + [overlap] * (count - 1),
            right_ramps=[overlap] * (count - 1) + [0],
        )

    return split


def split_temporal_latents(size: int, overlap: int) -> SplitOperation:
    """Latent-frame tiles for decoding: every tile after the first starts one latent frame
    earlier (and ramps one frame longer) so its causal context covers the seam."""
    symmetric = split_with_symmetric_overlaps(size, overlap)

    def split(length: int) -> DimensionIntervals:
        if length <= size:
            return default_split_operation(length)
        intervals = symmetric(length)
        starts = intervals.starts[:1] + [s - 1 for s in intervals.starts[1:]]
        left_ramps = intervals.left_ramps[:1] + [r + 1 for r in intervals.left_ramps[1:]]
        return replace(intervals, starts=starts, left_ramps=left_ramps)

    return split


def split_temporal_frames(tile_size_frames: int, overlap_frames: int) -> SplitOperation:
    """Frame tiles for encoding: every tile but the last takes one more frame (8k+1 frames)
    and none has a right ramp."""
    symmetric = split_with_symmetric_overlaps(tile_size_frames, overlap_frames)

    def split(length: int) -> DimensionIntervals:
        if length <= tile_size_frames:
            return default_split_operation(length)
        intervals = symmetric(length)
        ends = [e + 1 for e in intervals.ends[:-1]] + intervals.ends[-1:]
        return replace(intervals, ends=ends, right_ramps=[0] * len(intervals.right_ramps))

    return split


def make_mapping_operation(map_func: Callable, scale: int) -> MappingOperation:
    def map_op(intervals: DimensionIntervals) -> tuple[list[slice], list[np.ndarray | None]]:
        mapped = [
            map_func(start, end, left, right, scale)
            for start, end, left, right in zip(
                intervals.starts, intervals.ends, intervals.left_ramps, intervals.right_ramps, strict=True
            )
        ]
        return [m[0] for m in mapped], [m[1] for m in mapped]

    return map_op


def map_temporal_interval_to_frame(begin: int, end: int, left_ramp: int, right_ramp: int, scale: int):
    """Latent frames [begin, end) -> video frames; latent frame 0 is one video frame."""
    start = begin * scale
    stop = 1 + (end - 1) * scale
    left_ramp_frames = 0 if left_ramp == 0 else 1 + (left_ramp - 1) * scale
    mask = compute_trapezoidal_mask_1d(stop - start, left_ramp_frames, right_ramp * scale, True)
    return slice(start, stop), mask


def map_temporal_interval_to_latent(begin: int, end: int, left_ramp: int, right_ramp: int, scale: int):
    """Video frames [begin, end) -> latent frames; overlapped latents are dropped, not blended."""
    start = begin // scale
    stop = (end - 1) // scale + 1
    left_ramp_latents = 0 if left_ramp == 0 else 1 + (left_ramp - 1) // scale
    if right_ramp // scale != 0:
        raise ValueError("temporal tiles for encoding must have no right ramp")
    return slice(start, stop), compute_rectangular_mask_1d(stop - start, left_ramp_latents, 0)


def map_spatial_interval_to_pixel(begin: int, end: int, left_ramp: int, right_ramp: int, scale: int):
    start, stop = begin * scale, end * scale
    return slice(start, stop), compute_trapezoidal_mask_1d(stop - start, left_ramp * scale, right_ramp * scale)


def map_spatial_interval_to_latent(begin: int, end: int, left_ramp: int, right_ramp: int, scale: int):
    """Pixels [begin, end) -> latents; the latents nearest a seam (whose receptive field met
    the tile's padding) are dropped, not blended."""
    start, stop = begin // scale, end // scale
    left = max(0, left_ramp // scale - 1)
    right = 0 if right_ramp == 0 else 1
    return slice(start, stop), compute_rectangular_mask_1d(stop - start, left, right)


class Tile(NamedTuple):
    """Where to cut a tile from the input, where its output goes, and its per-axis masks
    (all on (B, C, F, H, W) axes; masks in output units, None = all ones)."""

    in_coords: tuple[slice, ...]
    out_coords: tuple[slice, ...]
    masks_1d: tuple[np.ndarray | None, ...]

    def channels_last(self) -> tuple[tuple[slice, ...], tuple[slice, ...], mx.array]:
        """(in_coords, out_coords, blend mask) for (B, F, H, W, C) arrays; the mask broadcasts
        as (1, F or 1, H or 1, W or 1, 1), the product of the per-axis masks. The product is
        formed on the device from the 1-D masks: a full mask made on the host would be copied
        over for every tile."""
        order = (0, 2, 3, 4, 1)
        mask = mx.ones((1,) * 5, dtype=mx.float32)
        for position, axis in enumerate(order):
            mask_1d = self.masks_1d[axis]
            if mask_1d is not None:
                shape = [1] * 5
                shape[position] = mask_1d.shape[0]
                mask = mask * mx.array(mask_1d).reshape(shape)
        return tuple(self.in_coords[i] for i in order), tuple(self.out_coords[i] for i in order), mask


def create_tiles(
    shape: tuple[int, ...], splitters: list[SplitOperation], mappers: list[MappingOperation]
) -> list[Tile]:
    """Every combination of per-axis intervals, in row-major order over the axes."""
    if len(splitters) != len(shape) or len(mappers) != len(shape):
        raise ValueError(f"need one splitter and one mapper per axis of {tuple(shape)}")
    in_slices, out_slices, masks = [], [], []
    for length, splitter, mapper in zip(shape, splitters, mappers, strict=True):
        intervals = splitter(length)
        in_slices.append([slice(s, e) for s, e in zip(intervals.starts, intervals.ends, strict=True)])
        outs, axis_masks = mapper(intervals)
        out_slices.append(outs)
        masks.append(axis_masks)
    return [
        Tile(in_coords=i, out_coords=o, masks_1d=m)
        for i, o, m in zip(
            itertools.product(*in_slices), itertools.product(*out_slices), itertools.product(*masks), strict=True
        )
    ]


def prepare_tiles_for_encoding(
    video_shape: tuple[int, ...], tiling_config: TilingConfig | None, scale_factors: tuple[int, int, int]
) -> list[Tile]:
    """Tiles over (B, C, F, H, W) pixels. Overlaps below 64 px / 16 frames are raised to
    those minimums, as in ltx-core: encoder tiles drop one latent per seam, which needs them."""
    time_scale, height_scale, width_scale = scale_factors
    splitters: list[SplitOperation] = [default_split_operation] * 5
    mappers: list[MappingOperation] = [default_mapping_operation] * 5
    if tiling_config is not None and tiling_config.spatial_config is not None:
        cfg = tiling_config.spatial_config
        overlap = max(cfg.tile_overlap_in_pixels, 64)
        splitters[3] = split_with_symmetric_overlaps(cfg.tile_size_in_pixels, overlap)
        mappers[3] = make_mapping_operation(map_spatial_interval_to_latent, height_scale)
        splitters[4] = split_with_symmetric_overlaps(cfg.tile_size_in_pixels, overlap)
        mappers[4] = make_mapping_operation(map_spatial_interval_to_latent, width_scale)
    if tiling_config is not None and tiling_config.temporal_config is not None:
        cfg = tiling_config.temporal_config
        overlap = max(cfg.tile_overlap_in_frames, 16)
        splitters[2] = split_temporal_frames(cfg.tile_size_in_frames, overlap)
        mappers[2] = make_mapping_operation(map_temporal_interval_to_latent, time_scale)
    return create_tiles(video_shape, splitters, mappers)


def prepare_tiles_for_decoding(
    latent_shape: tuple[int, ...], tiling_config: TilingConfig | None, scale_factors: tuple[int, int, int]
) -> list[Tile]:
    """Tiles over (B, C, F, H, W) latents. Spatial tiles are scaled by each axis' share of the
    longer side, so a non-square video gets square-ish tiles in pixels."""
    time_scale, height_scale, width_scale = scale_factors
    splitters: list[SplitOperation] = [default_split_operation] * 5
    mappers: list[MappingOperation] = [default_mapping_operation] * 5
    if tiling_config is not None and tiling_config.spatial_config is not None:
        cfg = tiling_config.spatial_config
        long_side = max(latent_shape[3], latent_shape[4])
        for axis, factor in ((3, height_scale), (4, width_scale)):
            size = cfg.tile_size_in_pixels // factor
            overlap = cfg.tile_overlap_in_pixels // factor
            tile_size = max(max(2, overlap + 1), round(size * latent_shape[axis] / long_side))
            splitters[axis] = split_with_symmetric_overlaps(tile_size, overlap)
            mappers[axis] = make_mapping_operation(map_spatial_interval_to_pixel, factor)
    if tiling_config is not None and tiling_config.temporal_config is not None:
        cfg = tiling_config.temporal_config
        size = cfg.tile_size_in_frames // time_scale
        overlap = cfg.tile_overlap_in_frames // time_scale
        splitters[2] = split_temporal_latents(size, overlap)
        mappers[2] = make_mapping_operation(map_temporal_interval_to_frame, time_scale)
    return create_tiles(latent_shape, splitters, mappers)


def group_tiles_by_temporal_slice(tiles: list[Tile]) -> list[list[Tile]]:
    """Consecutive runs of tiles sharing an output time slice (tiles are time-major)."""
    groups: list[list[Tile]] = []
    for tile in tiles:
        if groups and groups[-1][0].out_coords[2] == tile.out_coords[2]:
            groups[-1].append(tile)
        else:
            groups.append([tile])
    return groups
