import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.upscaler.blur_downsample import BlurDownsample
from LTX_2_MLX.model.upscaler.pixel_shuffle import pixel_shuffle

# Spatial scale -> (up, down): up by `num` with a pixel shuffle, then blur-downsample by `den`.
RATIONAL_SCALES = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}


class SpatialRationalResampler(nn.Module):
    """Spatial scaling by num/den on (N, H, W, C), one frame per batch item."""

    def __init__(self, mid_channels: int, scale: float):
        super().__init__()
        if float(scale) not in RATIONAL_SCALES:
            raise ValueError(f"spatial_scale={scale} is not supported; choose one of {sorted(RATIONAL_SCALES)}")
        self.scale = float(scale)
        self.num, self.den = RATIONAL_SCALES[self.scale]
        self.conv = nn.Conv2d(mid_channels, self.num**2 * mid_channels, kernel_size=3, padding=1)
        self.blur_down = BlurDownsample(stride=self.den)

    def __call__(self, x: mx.array) -> mx.array:
        x = pixel_shuffle(self.conv(x), (self.num, self.num))
        return self.blur_down(x)
