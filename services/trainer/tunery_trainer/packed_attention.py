"""Attention for packed rows, one sequence at a time: no padding and no cross-sequence work.

A packed micro-batch is one row holding every sequence back to back. Given the sequences'
bounds, this attention runs causal SDPA on each sequence's own slice of queries, keys and
values: its cost is Σ length² instead of (Σ length)², nothing is computed across two sequences
or on padding. Without bounds (padded batches, rows packed under a block-diagonal mask) it is
transformers' SDPA with its usual masks. Registered through transformers' public
`AttentionInterface` and `AttentionMaskInterface`; models with sliding-window layers keep plain
SDPA (a window is not honoured here). Speed: see `packing`.
"""

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "tunery_packed_sdpa"

SequenceBounds = list[tuple[int, int]]  # [start, end) of each sequence in the packed row


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (1, heads, length, head_dim)
    key: torch.Tensor,  # (1, kv_heads, length, head_dim)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sequence_bounds: SequenceBounds | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if sequence_bounds is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    grouped = query.shape[1] != key.shape[1]
    outputs = [
        F.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=grouped,
        )
        for start, end in sequence_bounds
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, packed_sdpa_attention)
# Masks as for SDPA: always correct, also for rows given without bounds; with bounds the attention
# needs none, and building it costs little next to attention over the whole row.
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_packed_attention(model: torch.nn.Module) -> bool:
    """Switch a causal LM to the per-sequence attention; False when it cannot take it."""
    config = model.config
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "sliding_window", None) or any(kind != "full_attention" for kind in layer_types):
        return False
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME


def sequence_bounds(lengths: list[int]) -> SequenceBounds:
    bounds, start = [], 0
    for length in lengths:
        bounds.append((start, start + length))
        start += length
    return bounds
