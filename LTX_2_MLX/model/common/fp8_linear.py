"""A Linear layer stored in fp8 (e4m3), as ltx-core's fp8_cast policy keeps the DiT's block
Linears: the weights stay one byte each and are upcast to the activation dtype on every call.
Which layers are stored this way is the quantization package's business; this is the layer."""

import mlx.core as mx
from mlx import nn


def fp8_to(value: mx.array, dtype: mx.Dtype) -> mx.array:
    """An fp8 (raw e4m3 bytes, uint8) or floating array as `dtype`."""
    return mx.from_fp8(value, dtype=dtype) if value.dtype == mx.uint8 else value.astype(dtype)


class Fp8Linear(nn.Module):
    """A Linear whose weight (and bias) are stored as e4m3 bytes (uint8) and upcast to the
    input's dtype on every call.

    `weight_scale` (a float32 scalar) exists only for layers read from a scaled fp8
    checkpoint, whose true weight is e4m3 value x weight_scale; it is applied to the output.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, scaled: bool = False):
        super().__init__()
        self.weight = mx.zeros((output_dims, input_dims), dtype=mx.uint8)
        if bias:
            self.bias = mx.zeros((output_dims,), dtype=mx.uint8)
        if scaled:
            self.weight_scale = mx.ones((), dtype=mx.float32)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        """Round a Linear's weight and bias to e4m3 (round to nearest even, as torch's .to())."""
        output_dims, input_dims = linear.weight.shape
        layer = cls(input_dims, output_dims, bias="bias" in linear)
        layer.weight = mx.to_fp8(linear.weight)
        if "bias" in linear:
            layer.bias = mx.to_fp8(linear.bias)
        return layer

    def dequantized_weight(self, dtype: mx.Dtype) -> mx.array:
        weight = fp8_to(self.weight, dtype)
        if "weight_scale" in self:
            weight = weight * self.weight_scale.astype(dtype)
        return weight

    def __call__(self, x: mx.array) -> mx.array:
        out = x @ fp8_to(self.weight, x.dtype).T
        if "weight_scale" in self:
            out = out * self.weight_scale.astype(x.dtype)
        if "bias" in self:
            out = out + fp8_to(self.bias, x.dtype)
        return out

    def _extra_repr(self) -> str:
        output_dims, input_dims = self.weight.shape
        return f"input_dims={input_dims}, output_dims={output_dims}, bias={'bias' in self}"
