"""``gqa=G``: grouped-query attention in the temporal transformer, G query heads per key/value head.

An MHA checkpoint is converted as Ainslie et al. (2023, "GQA: Training Generalized Multi-Query
Transformer Models from Multi-Head Checkpoints") do: the key and value projections of the heads of a
group are mean-pooled into one head (here, rows of the fused ``in_projs.0`` weight). Query heads
``j*G .. j*G+G-1`` share key/value head ``j`` (the grouping of Moshi's ``kv_repeat`` and of sdpa's
``enable_gqa``). The KV cache shrinks by exactly G; outputs change (uptraining would recover quality:
not done here). ``gqa=1`` leaves the model untouched.

Order: before the weight flags (it pools full-precision projection rows that they would pack).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..report import GQAReport
from . import FlagError, FlagSpec, register


def _parse(value: str | None) -> int:
    g = int(value) if value is not None else -1
    if g < 1:
        raise ValueError("G must be an integer >= 1 (query heads per key/value head)")
    return g


register(
    FlagSpec(
        name="gqa",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary="temporal transformer: G query heads per KV head (mean-pooled K/V of an MHA checkpoint)",
        parse=_parse,
        order=20,
    )
)


def apply(lm, codec, value: int) -> GQAReport:
    group = value
    attns = lm.transformer.attentions()
    heads, kv_heads = attns[0].num_heads, attns[0].num_kv_heads
    if heads % group:
        raise FlagError(f"gqa={group}: G must divide the {heads} attention heads")
    new_kv = heads // group
    if kv_heads % new_kv:
        raise FlagError(f"gqa={group}: the model already has {kv_heads} KV heads, not a multiple of {new_kv}")
    pool = kv_heads // new_kv  # current KV heads merged into one
    report = GQAReport(query_heads=heads, kv_heads_before=kv_heads, kv_heads_after=new_kv)
    if pool == 1:
        return report
    for attn in attns:
        old = attn.in_projs[0]
        if not isinstance(old, nn.Linear) or old.weight.dim() != 2:
            raise FlagError("gqa must come before flags that replace the attention projections (e.g. int8)")
        attn.in_projs[0] = _pooled_projection(old, attn.dim, kv_heads, attn.head_dim, pool)
        attn.num_kv_heads = new_kv
    cfg = lm.config
    # The depth transformer keeps its heads: pin its kv_repeat before changing the temporal one.
    lm.config = dataclasses.replace(
        cfg, kv_repeat=group, depformer_kv_repeat=cfg.depformer_kv_repeat or cfg.kv_repeat
    )
    return report


@torch.no_grad()
def _pooled_projection(old: nn.Linear, dim: int, kv_heads: int, head_dim: int, pool: int) -> nn.Linear:
    w = old.weight
    q, k, v = w.split([dim, kv_heads * head_dim, kv_heads * head_dim], dim=0)

    def mean_pool(x: torch.Tensor) -> torch.Tensor:
        return x.view(kv_heads // pool, pool, head_dim, w.shape[1]).float().mean(1).to(w.dtype).flatten(0, 1)

    new = nn.Linear(
        w.shape[1], dim + 2 * (kv_heads // pool) * head_dim, bias=False, device=w.device, dtype=w.dtype
    )
    new.weight.copy_(torch.cat([q, mean_pool(k), mean_pool(v)], dim=0))
    return new.requires_grad_(False)
