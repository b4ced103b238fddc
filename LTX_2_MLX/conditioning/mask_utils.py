"""Self-attention masks for appended conditioning tokens (ltx-core `conditioning/mask_utils.py`)."""

import mlx.core as mx

from LTX_2_MLX.components.types import LatentState


def resolve_cross_mask(
    attention_mask: float | int | mx.array, num_new_tokens: int, batch_size: int, dtype: mx.Dtype
) -> mx.array:
    """A scalar, (M,) or (B|1, M) attention weight as a (B, M) array."""
    if isinstance(attention_mask, (int, float)):
        return mx.full((batch_size, num_new_tokens), float(attention_mask), dtype=dtype)
    mask = attention_mask.astype(dtype)
    if mask.ndim == 0:
        return mx.full((batch_size, num_new_tokens), mask.item(), dtype=dtype)
    if mask.ndim == 1:
        if mask.shape[0] != num_new_tokens:
            raise ValueError(
                f"1-D attention_mask length must equal num_new_tokens ({num_new_tokens}), got shape {tuple(mask.shape)}"
            )
        return mx.broadcast_to(mask[None], (batch_size, num_new_tokens))
    if mask.ndim == 2:
        b, m = mask.shape
        if m != num_new_tokens:
            raise ValueError(
                f"2-D attention_mask second dimension must equal num_new_tokens ({num_new_tokens}), "
                f"got shape {tuple(mask.shape)}"
            )
        if b not in (batch_size, 1):
            raise ValueError(
                f"2-D attention_mask batch dimension must equal batch_size ({batch_size}) or 1, "
                f"got shape {tuple(mask.shape)}"
            )
        return mx.broadcast_to(mask, (batch_size, num_new_tokens))
    raise ValueError(f"attention_mask must be a scalar or a 0-D, 1-D or 2-D array, got shape {tuple(mask.shape)}")


def update_attention_mask(
    latent_state: LatentState,
    attention_mask: float | mx.array | None,
    num_noisy_tokens: int,
    num_new_tokens: int,
    batch_size: int,
    dtype: mx.Dtype,
) -> mx.array | None:
    """The (B, N+M, N+M) mask after appending M tokens to `latent_state`'s N, or None when no
    masking is asked for and none exists yet. With no new weight but an existing mask, the new
    tokens get full attention (1) to the noisy tokens."""
    if attention_mask is None:
        if latent_state.attention_mask is None:
            return None
        cross_mask = mx.ones((batch_size, num_new_tokens), dtype=dtype)
    else:
        cross_mask = resolve_cross_mask(attention_mask, num_new_tokens, batch_size, dtype)
    return build_attention_mask(
        existing_mask=latent_state.attention_mask,
        num_noisy_tokens=num_noisy_tokens,
        num_new_tokens=num_new_tokens,
        num_existing_tokens=latent_state.latent.shape[1],
        cross_mask=cross_mask,
        dtype=dtype,
    )


def build_attention_mask(
    existing_mask: mx.array | None,
    num_noisy_tokens: int,
    num_new_tokens: int,
    num_existing_tokens: int,
    cross_mask: mx.array,
    dtype: mx.Dtype,
) -> mx.array:
    """Grow the mask by M new reference tokens, block by block:

                   noisy      prev_ref     new_ref
        noisy    existing    existing     cross
        prev_ref existing    existing       0
        new_ref   cross         0           1

    `existing` is the previous (N, N) mask (all 1 when there is none), `cross` the (B, M)
    weights between the new tokens and the noisy ones; reference groups never see each other.
    """
    batch_size = cross_mask.shape[0]
    n_noisy, n_existing, n_new = num_noisy_tokens, num_existing_tokens, num_new_tokens
    n_prev_ref = n_existing - n_noisy
    cross_mask = cross_mask.astype(dtype)
    if existing_mask is None:
        existing = mx.ones((batch_size, n_existing, n_existing), dtype=dtype)
    else:
        existing = mx.broadcast_to(existing_mask.astype(dtype), (batch_size, n_existing, n_existing))

    noisy_to_new = mx.broadcast_to(cross_mask[:, None, :], (batch_size, n_noisy, n_new))
    prev_ref_to_new = mx.zeros((batch_size, n_prev_ref, n_new), dtype=dtype)
    top = mx.concatenate([existing, mx.concatenate([noisy_to_new, prev_ref_to_new], axis=1)], axis=2)

    new_to_noisy = mx.broadcast_to(cross_mask[:, :, None], (batch_size, n_new, n_noisy))
    new_to_prev_ref = mx.zeros((batch_size, n_new, n_prev_ref), dtype=dtype)
    new_to_new = mx.ones((batch_size, n_new, n_new), dtype=dtype)
    bottom = mx.concatenate([new_to_noisy, new_to_prev_ref, new_to_new], axis=2)
    return mx.concatenate([top, bottom], axis=1)
