"""Moshi's LM: a temporal transformer over the summed token embeddings of 1 text + n_q audio streams,
and a depth transformer ("depformer") that predicts the dep_q model codebooks of a frame one by one.

The module tree and state-dict keys are Moshi's (moshi/models/lm.py), so its checkpoints load as is.
Streaming state (token delays, KV caches, positions) lives in :class:`reference_model.lm.Streamer`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import LMConfig, gated_hidden
from .kv_cache import RingKVCache, StepPositions
from .transformer import RMSNorm, Transformer

ZERO_TOKEN = -1  # input token whose embedding is exactly zero
UNGENERATED_TOKEN = -2  # a slot of the token cache not produced yet


class ScaledEmbedding(nn.Embedding):
    """Embedding where token -1 yields a zero vector (Moshi's ``zero_token_id``)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y = super().forward(tokens.clamp(min=0))
        return y.masked_fill((tokens == ZERO_TOKEN)[..., None], 0.0)


class LUTConditioner(nn.Module):
    """Moshi's lookup-table conditioner (2B model): one learned vector per categorical value."""

    def __init__(self, n_bins: int, lut_dim: int, out_dim: int, possible_values: list[str] | None) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_bins + 1, lut_dim)  # the last bin is padding
        self.output_proj = nn.Linear(lut_dim, out_dim, bias=False)
        self.learnt_padding = nn.Parameter(torch.zeros(1, 1, out_dim))
        self.possible_values = list(possible_values or [])

    def forward(self, values: list[str | None]) -> torch.Tensor:
        """One value per batch item (None = unconditioned, the learned padding) -> [B, 1, out_dim]."""
        rows = []
        for value in values:
            if value is None:
                rows.append(self.learnt_padding[0])
                continue
            if value not in self.possible_values:
                raise ValueError(f"condition value {value!r} is not one of {self.possible_values}")
            token = torch.tensor([self.possible_values.index(value)], device=self.embed.weight.device)
            rows.append(self.output_proj(self.embed(token)))
        return torch.stack(rows)


class ConditionProvider(nn.Module):
    def __init__(self, conditioners: dict[str, LUTConditioner]) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict(conditioners)


class LMModel(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.n_q, self.dep_q, self.card, self.text_card = c.n_q, c.dep_q, c.card, c.text_card
        self.delays = list(c.delays)
        self.dim = c.dim
        self.context = c.context
        self.depformer_dim = c.depformer_dim
        self.text_padding_token_id = c.existing_text_padding_id
        self.end_of_text_padding_id = c.existing_text_end_padding_id

        self.emb = nn.ModuleList(ScaledEmbedding(c.card + 1, c.dim) for _ in range(c.n_q))
        self.text_emb = ScaledEmbedding(c.text_card + 1, c.dim)
        self.text_linear = nn.Linear(c.dim, c.text_card, bias=False)
        self.transformer = Transformer(
            c.dim,
            c.num_heads,
            c.num_kv_heads,
            c.num_layers,
            gated_hidden(c.dim, c.dim_feedforward),
            c.gating,
            c.norm_eps,
            c.max_period,
            rope=c.positional_embedding == "rope",
            context=c.context,
        )
        self.out_norm = RMSNorm(c.dim, c.norm_eps)

        steps = c.depformer_steps
        self.depformer_in = nn.ModuleList(
            nn.Linear(c.dim, c.depformer_dim, bias=False)
            for _ in range(c.dep_q if c.depformer_multi_linear else 1)
        )
        self.depformer_emb = nn.ModuleList(
            ScaledEmbedding(c.card + 1, c.depformer_dim) for _ in range(c.dep_q - 1)
        )
        self.depformer_text_emb = ScaledEmbedding(c.text_card + 1, c.depformer_dim)
        self.depformer = Transformer(
            c.depformer_dim,
            c.depformer_num_heads,
            c.depformer_num_kv_heads,
            c.depformer_num_layers,
            gated_hidden(c.depformer_dim, c.depformer_feedforward),
            c.depformer_gating or c.gating,
            c.norm_eps,
            c.depformer_max_period or c.max_period,
            rope=c.depformer_pos_emb == "rope",
            num_weight_sets=steps,
            per_step=c.depformer_weights_per_step,
            context=None,
        )
        self.linears = nn.ModuleList(nn.Linear(c.depformer_dim, c.card, bias=False) for _ in range(c.dep_q))

        self.condition_provider: ConditionProvider | None = None
        self.fused_conditions: list[str] = []
        if c.conditioners:
            self.condition_provider = ConditionProvider(
                {
                    name: LUTConditioner(
                        cc["lut"]["n_bins"], cc["lut"]["dim"], c.dim, cc["lut"].get("possible_values")
                    )
                    for name, cc in c.conditioners.items()
                }
            )
            self.fused_conditions = list((c.fuser or {}).get("sum", []))

    # --- properties Moshi exposes ------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.n_q + 1

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def device(self) -> torch.device:
        return self.text_linear.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_emb.weight.dtype

    def condition_sum(self, values: dict[str, str | None] | None, batch_size: int) -> torch.Tensor | None:
        """Summed conditioning vector [B, 1, dim] added to every step's input (None without conditioners)."""
        if self.condition_provider is None:
            return None
        values = values or {}
        unknown = sorted(set(values) - set(self.condition_provider.conditioners))
        if unknown:
            raise ValueError(
                f"unknown condition {unknown[0]!r} (known: {sorted(self.condition_provider.conditioners)})"
            )
        total = None
        for name in self.fused_conditions:
            cond = self.condition_provider.conditioners[name]([values.get(name)] * batch_size)
            total = cond if total is None else total + cond
        return None if total is None else total.to(self.dtype)

    # --- temporal transformer ----------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, 1 + n_q, T] (text first) -> summed embeddings [B, T, dim] (Moshi's order of sums)."""
        x = self.emb[0](tokens[:, 1])
        for k in range(1, self.n_q):
            x = x + self.emb[k](tokens[:, k + 1])
        return x + self.text_emb(tokens[:, 0])

    def forward_temporal(
        self,
        tokens: torch.Tensor,
        step: StepPositions,
        caches: list[RingKVCache],
        condition: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: tokens [B, 1 + n_q, 1] -> (hidden [B, dim] post out_norm, text logits [B, text_card])."""
        x = self.embed(tokens)
        if condition is not None:
            x = x + condition
        x = self.transformer(x, step, caches)
        hidden = self.out_norm(x)
        return hidden[:, 0], self.text_linear(hidden)[:, 0]

    # --- depth transformer -------------------------------------------------------------------
    def depformer_input(self, k: int, hidden: torch.Tensor, prev_token: torch.Tensor) -> torch.Tensor:
        """Input of codebook step k: projection of the temporal hidden [B, dim] + embedding of the previous
        token [B] (the text token for k = 0) -> [B, 1, depformer_dim]."""
        proj = self.depformer_in[k if len(self.depformer_in) > 1 else 0](hidden)
        emb = self.depformer_text_emb(prev_token) if k == 0 else self.depformer_emb[k - 1](prev_token)
        return (proj + emb)[:, None]

    def depformer_step(
        self,
        k: int,
        hidden: torch.Tensor,
        prev_token: torch.Tensor,
        step: StepPositions,
        caches: list[RingKVCache],
    ) -> torch.Tensor:
        """Codebook step k of the depth transformer -> logits [B, card]."""
        x = self.depformer_input(k, hidden, prev_token)
        weight_index = k if self.config.depformer_weights_per_step else 0
        x = self.depformer(x, step, caches, weight_index)
        return self.linears[k](x[:, 0])

    def depformer_forward_parallel(self, hidden: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced depth pass: hidden [B, dim], tokens_in [B, K] (text token, then audio tokens
        0..K-2) -> logits [B, K, card] for codebooks 0..K-1, all K steps in one pass with per-step weights."""
        B, K = tokens_in.shape
        x = torch.cat([self.depformer_input(k, hidden, tokens_in[:, k]) for k in range(K)], dim=1)
        positions = torch.arange(K, device=hidden.device).expand(B, K)
        cos, sin = self.depformer.rope_angles(positions)
        for layer in self.depformer.layers:
            x = layer.forward_sequence(x, cos, sin)
        return torch.stack([self.linears[k](x[:, k]) for k in range(K)], dim=1)
