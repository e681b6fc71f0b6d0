"""Attention for packed sequences that never crosses from one example into another, at the cost
of each example's own attention only.

trl packs examples best-fit-decreasing into rows and, padding-free, concatenates a batch's rows
into one sequence: `position_ids` restart at 0 where each example starts, there is no
attention mask, and the collator passes the boundaries as `cu_seq_lens_q`/`cu_seq_lens_k`
(the varlen flash-attention kernels' convention). transformers' `sdpa` then finds the restarts
in `position_ids` (`masking_utils.find_packed_sequence_indices`) and materialises a
block-diagonal boolean mask over the whole packed sequence, so nothing leaks across examples,
but each layer computes the full L x L attention of the packed sequence (4 examples of 1,150
tokens: 4,600² scores, 4x the useful work), with the keys repeated per query head because a
masked GQA call cannot use `enable_gqa`.

`packed_sdpa` (registered as the attention implementation `remed_packed_sdpa`) runs torch's
causal SDPA once per example instead, on slices of the packed sequence, with `is_causal=True`
and `enable_gqa=True` (torch's fused CPU kernel; no mask is built), and falls back to plain
`sdpa` when there are no boundaries (generation, unpacked batches). The masks are built as for
`sdpa`, so padding still works in the fallback. tests/unit/test_trainer_packing.py checks that
each packed example's logits equal its logits alone, for both implementations.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.nn import functional

ATTENTION = "remed_packed_sdpa"


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: q (B, H, L, D), k/v (B, H_kv, L, D) -> (B, L, H, D)."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    edges = [int(b) for b in bounds.tolist()]
    gqa = query.shape[1] != key.shape[1]
    pieces = [
        functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=gqa,
        )
        for start, end in itertools.pairwise(edges)
        if end > start
    ]
    out = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `attn_implementation="remed_packed_sdpa"` loadable; returns that name. Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, packed_sdpa)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION
