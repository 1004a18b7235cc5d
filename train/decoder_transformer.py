"""SAM's two-way decoder transformer, run with a padding mask over the prompt tokens.

segment_anything's `TwoWayTransformer.forward` lets every token attend to every other token, so
a padded prompt set (images with different numbers of points in one batch) would give another
result than the same set alone. This module runs the very same layers (and their LoRA-wrapped
projections) step by step, adding -inf to the attention logits of padding tokens wherever tokens
are the keys (token self-attention, image-to-token attention). Padding tokens still pass through
as queries, but nothing reads them. With no padding the arithmetic is SAM's own, operation for
operation.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer
from torch import Tensor


def attend(attn: Attention, q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor | None) -> Tensor:
    """`Attention.forward` with an optional B x N_k bool mask of keys that may be attended to."""
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    logits = q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1])  # B x heads x N_q x N_k
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    out = torch.softmax(logits, dim=-1) @ v
    return attn.out_proj(attn._recombine_heads(out))


def _block(
    layer: TwoWayAttentionBlock,
    queries: Tensor,
    keys: Tensor,
    query_pe: Tensor,
    key_pe: Tensor,
    valid: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """`TwoWayAttentionBlock.forward` with token padding masked (see module docstring)."""
    if layer.skip_first_layer_pe:
        queries = attend(layer.self_attn, queries, queries, queries, valid)
    else:
        q = queries + query_pe
        queries = queries + attend(layer.self_attn, q, q, queries, valid)
    queries = layer.norm1(queries)

    q = queries + query_pe
    k = keys + key_pe
    queries = layer.norm2(queries + attend(layer.cross_attn_token_to_image, q, k, keys, None))

    queries = layer.norm3(queries + layer.mlp(queries))

    q = queries + query_pe
    k = keys + key_pe
    keys = layer.norm4(keys + attend(layer.cross_attn_image_to_token, k, q, queries, valid))
    return queries, keys


def run_transformer(
    transformer: TwoWayTransformer,
    image_embedding: Tensor,
    image_pe: Tensor,
    tokens: Tensor,
    token_valid: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """`TwoWayTransformer.forward` with a token padding mask.

    image_embedding, image_pe: B x C x h x w. tokens: B x N x C. token_valid: B x N bool (True =
    a real token) or None for no padding. Returns tokens B x N x C and image B x hw x C.
    """
    keys = image_embedding.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries = tokens
    for layer in transformer.layers:
        queries, keys = _block(layer, queries, keys, tokens, key_pe, token_valid)
    q = queries + tokens
    k = keys + key_pe
    queries = queries + attend(transformer.final_attn_token_to_image, q, k, keys, None)
    return transformer.norm_final_attn(queries), keys
