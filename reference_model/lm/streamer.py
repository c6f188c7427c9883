"""Streaming inference of the LM: one 80 ms frame of user codes in, text + model audio tokens out.

The token cache ``[B, 1 + n_q, max_delay + 2]`` is Moshi's (moshi/models/lm.py, ``LMGen``): user codes
are written at ``offset + delay``, the temporal transformer reads the column at ``offset`` (the start
token while ``offset <= delay``), and the output is re-aligned to undo the delays, so nothing comes out
for the first ``max_delay`` steps.

Every batch item keeps its own offset; ``reset(mask)`` restarts chosen items, which then behave exactly
like a fresh stream. The host mirrors the offsets (``offsets_host``) so that, while all items share
one history, attention runs without a mask and cache writes are plain slice copies.

The two hot stages of a step are attributes set here, so that a runtime transform (speculative
decoding, torch.compile, CUDA graphs) can wrap them without re-binding methods: ``temporal_step``
(``lm.forward_temporal``) and ``depformer_sample`` (:meth:`depformer_loop`, the sequential depth loop).
"""

from __future__ import annotations

import torch

from .kv_cache import RingKVCache, StepPositions
from .model import UNGENERATED_TOKEN, LMModel
from .sampling import sample_token


class Streamer:
    def __init__(
        self,
        lm: LMModel,
        *,
        temp: float = 0.8,
        temp_text: float = 0.7,
        top_k: int = 250,
        top_k_text: int = 25,
        batch_size: int = 1,
        conditions: dict[str, str | None] | None = None,
    ) -> None:
        self.lm = lm
        self.temp, self.temp_text, self.top_k, self.top_k_text = temp, temp_text, top_k, top_k_text
        self.batch_size = batch_size
        self.max_delay = lm.max_delay
        device, dtype = lm.device, lm.dtype
        self.device = device
        B, K = batch_size, lm.num_codebooks
        self.delays = torch.tensor(lm.delays, device=device, dtype=torch.long)
        self.n_user = lm.n_q - lm.dep_q
        self.initial = torch.tensor([lm.text_card] + [lm.card] * lm.n_q, device=device).view(1, K, 1)
        self.tokens = torch.full(
            (B, K, self.max_delay + 2), UNGENERATED_TOKEN, device=device, dtype=torch.long
        )
        self.offsets = torch.zeros(B, device=device, dtype=torch.long)
        self.offsets_host = [0] * B
        self.steps_since_reset = 0  # while <= max_delay for every item, step() returns None
        with torch.no_grad():
            self.condition = lm.condition_sum(conditions, B)
        self.temporal_caches: list[RingKVCache] = [
            attn.make_cache(B, lm.context, device, dtype) for attn in lm.transformer.attentions()
        ]
        self.depth_caches: list[RingKVCache] = [
            attn.make_cache(B, lm.dep_q, device, dtype) for attn in lm.depformer.attentions()
        ]
        self._depth_positions = [
            torch.full((B,), k, device=device, dtype=torch.long) for k in range(lm.dep_q)
        ]
        self.last_text_logits: torch.Tensor | None = None  # [B, text_card]
        self.last_audio_logits: torch.Tensor | None = None  # [B, dep_q, card]
        # The replaceable stages of a step (see the module docstring).
        self.temporal_step = lm.forward_temporal
        self.depformer_sample = self.depformer_loop

    # --- public API --------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, user_codes: torch.Tensor) -> torch.Tensor | None:
        """user_codes [B, n_q - dep_q, 1] -> tokens [B, 1 + dep_q, 1] (text, then model audio), or None
        while every item is within its first max_delay steps. An item still in its first max_delay
        steps (after a partial reset) gets rows of -2 (not generated yet), as in Moshi."""
        lm, B = self.lm, self.batch_size
        if user_codes.dim() != 3 or user_codes.shape[0] != B or user_codes.shape[2] != 1:
            raise ValueError(f"user_codes must be [{B}, {self.n_user}, 1], got {list(user_codes.shape)}")
        if user_codes.shape[1] < self.n_user:
            raise ValueError(f"expected {self.n_user} user codebooks, got {user_codes.shape[1]}")
        CT = self.tokens.shape[2]
        user_delays = self.delays[lm.dep_q + 1 :]
        write_at = (self.offsets[:, None, None] + user_delays[:, None]) % CT
        self.tokens[:, lm.dep_q + 1 :].scatter_(2, write_at, user_codes[:, : self.n_user].to(self.tokens))

        is_init = self.offsets[:, None, None] <= self.delays[:, None]
        column = (self.offsets % CT)[:, None, None].expand(B, lm.num_codebooks, 1)
        inputs = torch.where(is_init, self.initial, self.tokens.gather(2, column))

        step = self._temporal_positions()
        hidden, text_logits = self.temporal_step(inputs, step, self.temporal_caches, self.condition)
        self.last_text_logits = text_logits
        text_token = sample_token(text_logits, self.temp_text, self.top_k_text)
        audio_tokens = self.depformer_sample(hidden, text_token)

        self.offsets += 1
        self.offsets_host = [o + 1 for o in self.offsets_host]
        self.steps_since_reset += 1
        column = (self.offsets % CT)[:, None, None]
        generated = torch.cat([text_token[:, None], audio_tokens], dim=1)[:, :, None]
        self.tokens[:, : lm.dep_q + 1].scatter_(2, column.expand(B, lm.dep_q + 1, 1), generated)

        if self.steps_since_reset <= self.max_delay:
            return None
        gen_delays = self.delays[: lm.dep_q + 1]
        index = (self.offsets[:, None, None] - self.max_delay + gen_delays[:, None]) % CT
        out = self.tokens.gather(2, index)
        if min(self.offsets_host) <= self.max_delay:
            out[self.offsets <= self.max_delay] = UNGENERATED_TOKEN
        return out

    def depformer_loop(self, hidden: torch.Tensor, text_token: torch.Tensor) -> torch.Tensor:
        """Depth stage: hidden [B, dim], text token [B] -> audio tokens [B, dep_q] (one codebook at a time).

        The default ``depformer_sample`` stage (speculative decoding replaces the stage); sets
        ``last_audio_logits`` [B, dep_q, card].
        """
        lm = self.lm
        prev = text_token
        tokens, logits_all = [], []
        for k in range(lm.dep_q):
            step = StepPositions(self._depth_positions[k], common=k, span=k + 1)
            if lm.depformer.use_rope:
                step.cos, step.sin = lm.depformer.rope_angles(step.positions[:, None])
            logits = lm.depformer_step(k, hidden, prev, step, self.depth_caches)
            prev = sample_token(logits, self.temp, self.top_k)
            tokens.append(prev)
            logits_all.append(logits)
        self.last_audio_logits = torch.stack(logits_all, dim=1)
        return torch.stack(tokens, dim=1)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart every stream, or those where ``mask`` [B] (bool) is True."""
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool)
        mask = mask.to(dtype=torch.bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape [{self.batch_size}], got {list(mask.shape)}")
        flags = mask.tolist()
        if not any(flags):
            return
        mask = mask.to(self.device)
        self.offsets.masked_fill_(mask, 0)
        self.tokens[mask] = UNGENERATED_TOKEN
        self.offsets_host = [0 if f else o for f, o in zip(flags, self.offsets_host)]
        for cache in self.temporal_caches:
            cache.reset(mask)
        if all(flags):
            self.steps_since_reset = 0

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes held by all KV caches of this streamer (temporal + depth)."""
        return sum(c.nbytes for c in self.temporal_caches + self.depth_caches)

    # --- internals ---------------------------------------------------------------------------
    def _temporal_positions(self) -> StepPositions:
        host = self.offsets_host
        common = host[0] if all(o == host[0] for o in host) else None
        step = StepPositions(self.offsets, common=common, span=min(max(host) + 1, self.lm.context))
        step.cos, step.sin = self.lm.transformer.rope_angles(self.offsets[:, None])
        return step
