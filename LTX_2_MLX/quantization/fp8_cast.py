"""fp8 weight storage for the DiT, mirroring ltx-core's `QuantizationPolicy.fp8_cast()`.

The reference downcasts the weight and bias of the transformer blocks' attention projections
and feed-forward layers to float8_e4m3fn (`TRANSFORMER_LINEAR_DOWNCAST_MAP`), and upcasts them
to the activation dtype inside every Linear forward (`UPCAST_DURING_INFERENCE`, no stochastic
rounding): the layer doing so is `model.common.fp8_linear.Fp8Linear`. Everything else (AdaLN,
timestep, patchify/proj_out, caption projection, the LTX-2.3 attention gates) keeps its dtype.
"""

# Module-path prefix and suffixes of the layers the reference downcasts (its key suffixes
# without ".weight"/".bias"). "ff.net.*" also matches "audio_ff.net.*", as in the reference.
FP8_CAST_PREFIX = "transformer_blocks."
FP8_CAST_SUFFIXES = (".to_q", ".to_k", ".to_v", ".to_out.0", "ff.net.0.proj", "ff.net.2")


def is_fp8_cast_target(path: str) -> bool:
    """Whether ltx-core's fp8_cast policy stores the layer at this module path in fp8."""
    return path.startswith(FP8_CAST_PREFIX) and path.endswith(FP8_CAST_SUFFIXES)
