import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.transformer.rope import LTXRopeType, normed_rotary_emb


class Attention(nn.Module):
    """Multi-head attention with q/k RMS norm, optional RoPE, STG bypass and per-head gates."""

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None,
        heads: int,
        dim_head: int,
        norm_eps: float,
        rope_type: LTXRopeType,
        apply_gated_attention: bool = False,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.rope_type = rope_type
        self.q_norm = nn.RMSNorm(inner_dim, eps=norm_eps)
        self.k_norm = nn.RMSNorm(inner_dim, eps=norm_eps)
        self.to_q = nn.Linear(query_dim, inner_dim)
        self.to_k = nn.Linear(context_dim, inner_dim)
        self.to_v = nn.Linear(context_dim, inner_dim)
        if apply_gated_attention:
            self.to_gate_logits = nn.Linear(query_dim, heads)
        self.to_out = [nn.Linear(inner_dim, query_dim)]

    def __call__(
        self,
        x: mx.array,
        context: mx.array | None = None,
        mask: mx.array | None = None,
        pe: tuple[mx.array, mx.array] | None = None,
        k_pe: tuple[mx.array, mx.array] | None = None,
        perturbation_mask: mx.array | None = None,
        all_perturbed: bool = False,
    ) -> mx.array:
        """x (B, T, query_dim); context (B, S, context_dim), x itself when None.

        mask: additive bias or boolean keep-mask broadcastable to (B, H, T, S).
        perturbation_mask (B, 1, 1): 1 keeps attention, 0 passes the value projection
        through (STG); all_perturbed skips the query/key path for the whole batch.
        """
        context = x if context is None else context
        value = self.to_v(context)
        if all_perturbed:
            out = value
        else:
            query, key = self.to_q(x), self.to_k(context)
            if pe is None:
                query, key = self.q_norm(query), self.k_norm(key)
            else:
                query = normed_rotary_emb(query, self.q_norm, pe, self.rope_type)
                key = normed_rotary_emb(key, self.k_norm, pe if k_pe is None else k_pe, self.rope_type)
            out = attend(query, key, value, self.heads, self.dim_head, mask)
            if perturbation_mask is not None:
                out = out * perturbation_mask + value * (1 - perturbation_mask)
        if "to_gate_logits" in self:
            gates = 2.0 * mx.sigmoid(self.to_gate_logits(x))
            batch, tokens, _ = out.shape
            out = (out.reshape(batch, tokens, self.heads, self.dim_head) * gates[..., None]).reshape(batch, tokens, -1)
        return self.to_out[0](out)


def attend(query: mx.array, key: mx.array, value: mx.array, heads: int, dim_head: int, mask: mx.array | None = None):
    """Scaled dot-product attention of (B, T, heads * dim_head) queries over (B, S, ...) keys
    and values, heads split and merged back."""
    batch, tokens, _ = query.shape

    def split_heads(t: mx.array) -> mx.array:
        return t.reshape(batch, -1, heads, dim_head).transpose(0, 2, 1, 3)

    out = mx.fast.scaled_dot_product_attention(
        split_heads(query), split_heads(key), split_heads(value), scale=dim_head**-0.5, mask=mask
    )
    return out.transpose(0, 2, 1, 3).reshape(batch, tokens, heads * dim_head)
