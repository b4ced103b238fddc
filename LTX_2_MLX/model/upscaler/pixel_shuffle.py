import math

import mlx.core as mx


def pixel_shuffle(x: mx.array, upscale_factors: tuple[int, ...]) -> mx.array:
    """Move channel factors into the leading spatial axes of a channels-last array.

    x is (N, s_1, ..., s_n, C * p_1 * ... * p_k) with k = len(upscale_factors) <= n; the channel
    axis is split as (c, p_1, ..., p_k), the order of ltx-core's `b (c p1 p2 p3) d h w`, and
    axis s_i grows to s_i * p_i for i <= k. So factors (2,) on (N, F, H, W, C) is the temporal
    shuffle, (2, 2) on (N, H, W, C) the spatial one and (2, 2, 2) on (N, F, H, W, C) both.
    """
    n, *spatial, packed_channels = x.shape
    k = len(upscale_factors)
    if k > len(spatial) or packed_channels % math.prod(upscale_factors):
        raise ValueError(
            f"pixel_shuffle: cannot shuffle factors {upscale_factors} out of shape {tuple(x.shape)}; "
            "the channels must be a multiple of their product and there must be as many spatial axes."
        )
    channels = packed_channels // math.prod(upscale_factors)
    x = x.reshape(n, *spatial, channels, *upscale_factors)
    # Axis numbers after the reshape: 0 batch, 1..n spatial, n+1 channels, n+2.. factors.
    n_spatial = len(spatial)
    interleaved = [axis for i in range(k) for axis in (1 + i, n_spatial + 2 + i)]
    order = [0, *interleaved, *range(1 + k, 1 + n_spatial), n_spatial + 1]
    x = x.transpose(order)
    grown = [size * factor for size, factor in zip(spatial, upscale_factors)]
    return x.reshape(n, *grown, *spatial[k:], channels)
