"""Conditioning items and attention masks against ltx-core (float32, CPU): image at a latent
index, keyframes, reference video (IC-LoRA), attention-strength wrapping, and chains of them."""

import mlx.core as mx
import pytest
import torch
from ltx_core import conditioning as ref_conditioning
from ltx_core import tools as ref_tools
from ltx_core import types as ref_types
from ltx_core.components import patchifiers as ref_patchifiers
from ltx_core.conditioning import mask_utils as ref_mask_utils
from reference import assert_matches, to_mx

from LTX_2_MLX.components import VideoLatentPatchifier, VideoLatentShape, VideoLatentTools
from LTX_2_MLX.conditioning import (
    ConditioningError,
    ConditioningItemAttentionStrengthWrapper,
    VideoConditionByKeyframeIndex,
    VideoConditionByLatentIndex,
    VideoConditionByReferenceLatent,
)
from LTX_2_MLX.conditioning.mask_utils import resolve_cross_mask

TOL = 1e-6
SHAPE = VideoLatentShape(batch=1, channels=8, frames=4, height=3, width=4)
FPS = 25.0


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def initial_states():
    """The same initial video state built by both implementations."""
    tools = VideoLatentTools(VideoLatentPatchifier(1), SHAPE, fps=FPS)
    ref_tools_ = ref_tools.VideoLatentTools(
        ref_patchifiers.VideoLatentPatchifier(1), ref_types.VideoLatentShape(*SHAPE), fps=FPS
    )
    initial = randn(*SHAPE, seed=1)
    state = tools.create_initial_state(mx.float32, to_mx(initial))
    ref_state = ref_tools_.create_initial_state("cpu", torch.float32, initial)
    return tools, ref_tools_, state, ref_state


def assert_states_match(name, state, ref_state):
    for field in ("latent", "denoise_mask", "positions", "clean_latent"):
        assert_matches(f"{name}.{field}", getattr(state, field), getattr(ref_state, field), TOL)
    if ref_state.attention_mask is None:
        assert state.attention_mask is None, f"{name}: attention_mask should be None"
    else:
        assert_matches(f"{name}.attention_mask", state.attention_mask, ref_state.attention_mask, TOL)


def apply_both(name, items, initial_states):
    """Apply pairs (mlx item, reference item) in order to both states and compare."""
    tools, ref_tools_, state, ref_state = initial_states
    for item, ref_item in items:
        state = item.apply_to(state, tools)
        ref_state = ref_item.apply_to(ref_state, ref_tools_)
    assert_states_match(name, state, ref_state)
    return state, ref_state


@pytest.mark.parametrize("latent_idx,frames", [(0, 1), (2, 2)])
def test_condition_by_latent_index_matches_reference(initial_states, latent_idx, frames):
    latent = randn(1, 8, frames, 3, 4, seed=2)
    item = VideoConditionByLatentIndex(to_mx(latent), strength=0.8, latent_idx=latent_idx)
    ref_item = ref_conditioning.VideoConditionByLatentIndex(latent, strength=0.8, latent_idx=latent_idx)
    apply_both(f"VideoConditionByLatentIndex idx={latent_idx}", [(item, ref_item)], initial_states)


def test_condition_by_latent_index_rejects_mismatched_latents(initial_states):
    tools, _, state, _ = initial_states
    with pytest.raises(ConditioningError, match="resolution"):
        VideoConditionByLatentIndex(mx.zeros((1, 8, 1, 6, 4)), 1.0, 0).apply_to(state, tools)
    with pytest.raises(ConditioningError, match="latent_idx"):
        VideoConditionByLatentIndex(mx.zeros((1, 8, 2, 3, 4)), 1.0, 3).apply_to(state, tools)


@pytest.mark.parametrize("frame_idx", [0, 9, 24])
def test_condition_by_keyframe_index_matches_reference(initial_states, frame_idx):
    keyframes = randn(1, 8, 1, 3, 4, seed=3)
    item = VideoConditionByKeyframeIndex(to_mx(keyframes), frame_idx=frame_idx, strength=0.9)
    ref_item = ref_conditioning.VideoConditionByKeyframeIndex(keyframes, frame_idx=frame_idx, strength=0.9)
    state, _ = apply_both(f"VideoConditionByKeyframeIndex frame={frame_idx}", [(item, ref_item)], initial_states)
    assert state.latent.shape[1] == SHAPE.token_count() + 12


@pytest.mark.parametrize("downscale_factor", [1, 2])
def test_condition_by_reference_latent_matches_reference(initial_states, downscale_factor):
    reference_latent = randn(1, 8, 4, 2, 2, seed=4)  # a half-resolution reference
    item = VideoConditionByReferenceLatent(to_mx(reference_latent), downscale_factor=downscale_factor, strength=0.7)
    ref_item = ref_conditioning.VideoConditionByReferenceLatent(
        reference_latent, downscale_factor=downscale_factor, strength=0.7
    )
    apply_both(f"VideoConditionByReferenceLatent x{downscale_factor}", [(item, ref_item)], initial_states)


@pytest.mark.parametrize("kind", ["scalar", "per-token", "per-batch-token"])
def test_attention_strength_wrapper_matches_reference(initial_states, kind):
    reference_latent = randn(1, 8, 2, 3, 4, seed=5)
    num_tokens = 2 * 3 * 4
    weights = torch.rand(num_tokens, generator=torch.Generator().manual_seed(6))
    attention = {"scalar": 0.35, "per-token": weights, "per-batch-token": weights[None]}[kind]
    mlx_attention = attention if isinstance(attention, float) else to_mx(attention)
    item = ConditioningItemAttentionStrengthWrapper(
        VideoConditionByReferenceLatent(to_mx(reference_latent)), mlx_attention
    )
    ref_item = ref_conditioning.ConditioningItemAttentionStrengthWrapper(
        ref_conditioning.VideoConditionByReferenceLatent(reference_latent), attention
    )
    apply_both(f"ConditioningItemAttentionStrengthWrapper {kind}", [(item, ref_item)], initial_states)


def test_chained_conditionings_match_reference(initial_states):
    """Image at frame 0, a masked reference video, then a keyframe: the keyframe extends the
    existing mask with full attention, and the two reference groups do not see each other."""
    image, reference_latent, keyframe = (
        randn(1, 8, 1, 3, 4, seed=7),
        randn(1, 8, 2, 3, 4, seed=8),
        randn(1, 8, 1, 3, 4, seed=9),
    )
    items = [
        (
            VideoConditionByLatentIndex(to_mx(image), strength=1.0, latent_idx=0),
            ref_conditioning.VideoConditionByLatentIndex(image, strength=1.0, latent_idx=0),
        ),
        (
            ConditioningItemAttentionStrengthWrapper(VideoConditionByReferenceLatent(to_mx(reference_latent)), 0.5),
            ref_conditioning.ConditioningItemAttentionStrengthWrapper(
                ref_conditioning.VideoConditionByReferenceLatent(reference_latent), 0.5
            ),
        ),
        (
            VideoConditionByKeyframeIndex(to_mx(keyframe), frame_idx=17, strength=1.0),
            ref_conditioning.VideoConditionByKeyframeIndex(keyframe, frame_idx=17, strength=1.0),
        ),
    ]
    state, _ = apply_both("chained image + masked reference + keyframe", items, initial_states)
    tools = initial_states[0]
    cleared = tools.clear_conditioning(state)
    assert cleared.latent.shape[1] == SHAPE.token_count() and cleared.attention_mask is None


def test_cross_mask_shapes_and_errors_match_reference():
    for mask in (0.25, torch.tensor(0.5), torch.rand(6), torch.rand(1, 6), torch.rand(2, 6)):
        ref = ref_mask_utils.resolve_cross_mask(mask, 6, 2, "cpu", torch.float32)
        out = resolve_cross_mask(mask if isinstance(mask, float) else to_mx(mask), 6, 2, mx.float32)
        assert_matches("resolve_cross_mask", out, ref, 0.0)
    for bad in (mx.zeros(5), mx.zeros((3, 6)), mx.zeros((1, 5)), mx.zeros((1, 1, 6))):
        with pytest.raises(ValueError, match="attention_mask"):
            resolve_cross_mask(bad, 6, 2, mx.float32)
