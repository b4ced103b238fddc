"""The feature extractors normalise and project Gemma's hidden states a chunk of tokens at a
time: the same numbers as the whole sequence at once, at a fraction of its peak memory."""

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from LTX_2_MLX.model.text_encoder.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

# A mid-size prompt: LTX-2.0's 49 hidden states, a tenth of Gemma's width, a quarter of its tokens.
WIDTH, STATES, TOKENS, PADDING = 384, 49, 256, 100
CHUNK = 32


def _extractor(version: int):
    mx.random.seed(0)
    flat = WIDTH * STATES
    extractor = FeatureExtractorV1(flat, WIDTH) if version == 1 else FeatureExtractorV2(flat, 512, 256)
    extractor.load_weights(
        [
            (k, mx.random.normal(v.shape).astype(mx.bfloat16) / flat**0.5)
            for k, v in tree_flatten(extractor.parameters())
        ]
    )
    mx.eval(extractor.parameters())
    return extractor


def _prompt():
    mx.random.seed(1)
    states = [(mx.random.normal((1, TOKENS, WIDTH)) * (1 + i) + i).astype(mx.bfloat16) for i in range(STATES)]
    mask = (mx.arange(TOKENS) >= PADDING).astype(mx.int32)[None]
    mx.eval(states, mask)
    return states, mask


def _run(extractor, states, mask, tokens_per_chunk):
    """The extractor's outputs and its peak above what was resident before it ran."""
    extractor.tokens_per_chunk = tokens_per_chunk
    mx.clear_cache()
    mx.reset_peak_memory()
    resident = mx.get_active_memory()
    outputs = extractor(states, mask)
    mx.eval(outputs)
    return outputs, mx.get_peak_memory() - resident


@pytest.mark.parametrize("version", [1, 2])
def test_chunked_feature_extractor_equals_whole_sequence_at_a_fraction_of_the_memory(version):
    extractor = _extractor(version)
    states, mask = _prompt()
    with mx.stream(mx.cpu):
        whole, whole_peak = _run(extractor, states, mask, None)
        chunked, chunked_peak = _run(extractor, states, mask, CHUNK)
    for expected, got in zip(whole, chunked):
        if expected is None:
            assert got is None
            continue
        assert got.shape == expected.shape == (1, TOKENS, expected.shape[-1]) and got.dtype == mx.bfloat16
        assert mx.array_equal(got, expected).item()
    # Whole: the stacked states and ~5 float32 copies of all of them (19 MB each here).
    # Chunked: an eighth of that, plus the per-state statistics and the outputs.
    assert chunked_peak < 0.3 * whole_peak, (chunked_peak, whole_peak)
