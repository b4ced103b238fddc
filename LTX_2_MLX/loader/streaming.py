"""Weight streaming: a model's repeated blocks (the DiT's transformer blocks, Gemma's decoder
layers) read from their checkpoint just before use and released after, so that about two
blocks' weights are resident instead of all of them (`ModelLedger(low_memory=True)`).

A `StreamedBlocks` stands in for the model's list of blocks. It keeps each block's module as a
skeleton whose parameters are unevaluated placeholders (no memory), and a `BlockReader` that,
once per pass over the blocks (once per forward), maps the checkpoint and then gives block i's
weights as lazy arrays: read from the file, converted, LoRA-fused and quantized only when MLX
evaluates them (on CUDA block i's tensors are read at once when it is asked for, through
`loader.staging`: `checkpoint.block_tensors`). Iterating the blocks:

    block i asked for   its weights are set and queued (mx.async_eval): the file is read while
                        the model's loop still computes block i-1 (the loops queue one block
                        ahead of the one they wait for)
    block i+1 asked for block i's placeholders are put back; its computation, already queued,
                        keeps its weights alive until it is done, then they are freed

The weights are the same arrays, converted by the same operations, as the resident model's, so
a streamed forward is bitwise the resident one.
"""

from collections.abc import Callable, Iterator, Mapping

import mlx.core as mx
from mlx import nn

# Block i's weights (names relative to the block, as `block.parameters()` flattens them) for
# one pass; each array lazy until the block runs.
BlockReader = Callable[[int], dict[str, mx.array]]


class StreamedBlocks:
    """A model's blocks whose weights are read for each pass (see the module docstring).

    `blocks` are the modules with the final layer types (fp8, quantized) and placeholder
    parameters; `open_pass()` maps the checkpoint(s) once and returns the pass's `BlockReader`.
    Nothing here is a parameter of the model: `model.parameters()` holds only what stays
    resident.
    """

    streamed = True  # what the models check to run several passes through one read of the blocks

    def __init__(self, blocks: list[nn.Module], open_pass: Callable[[], BlockReader]):
        self._blocks = list(blocks)
        self._placeholders = [block.parameters() for block in self._blocks]
        self._open_pass = open_pass
        for block in self._blocks:
            block.eval()

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self) -> Iterator[nn.Module]:
        read = self._open_pass()
        for index, block in enumerate(self._blocks):
            block.load_weights(list(read(index).items()))
            mx.async_eval(block.parameters())
            try:
                yield block
            finally:
                block.update(self._placeholders[index])

    def __repr__(self) -> str:
        return f"StreamedBlocks({len(self)} blocks)"

    def skeleton(self, index: int) -> nn.Module:
        """Block `index` without its weights (its layer types and parameter shapes)."""
        return self._blocks[index]


def by_block(tensors: Mapping[str, mx.array]) -> dict[int, dict[str, mx.array]]:
    """{"3.attn1.to_q.weight": ...} -> {3: {"attn1.to_q.weight": ...}}: a blocks list's tensors
    (its own prefix removed) per block index."""
    grouped: dict[int, dict[str, mx.array]] = {}
    for key, value in tensors.items():
        index, rest = key.split(".", 1)
        grouped.setdefault(int(index), {})[rest] = value
    return grouped


def quantized_paths(block: nn.Module) -> dict[str, nn.QuantizedLinear]:
    """The block's affine-quantized layers by path."""
    return {path: module for path, module in block.named_modules() if isinstance(module, nn.QuantizedLinear)}


def quantize_weights(weights: dict[str, mx.array], layers: Mapping[str, nn.QuantizedLinear]) -> dict[str, mx.array]:
    """Float Linear weights -> the packed weight, scales and biases of `layers` (paths relative
    to `weights`' keys), quantized as nn.QuantizedLinear.from_linear quantizes them."""
    weights = dict(weights)
    for path, layer in layers.items():
        packed, scales, *biases = mx.quantize(weights[f"{path}.weight"], layer.group_size, layer.bits, mode=layer.mode)
        weights[f"{path}.weight"], weights[f"{path}.scales"] = packed, scales
        if biases:
            weights[f"{path}.biases"] = biases[0]
    return weights
