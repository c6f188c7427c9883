"""``speculative=K``: speculative decoding of the audio tokens of one streaming step (Leviathan et al.
2023; Chen et al. 2023): draft K, verify in one parallel pass.

The depth transformer emits the ``dep_q`` audio tokens of a frame one after the other, each step with its
own weights. Speculative decoding lets a cheap *draft* propose up to ``K`` of them, then the full depth
transformer checks them all in ONE teacher-forced pass (:class:`CachedVerifier`, the arithmetic of
``lm.depformer_forward_parallel`` reusing the keys/values of already verified positions) and keeps the
longest prefix it agrees with plus one token of its own (a correction, or a bonus token when every draft
was accepted). Each round therefore emits at least one token, and at most ``K + 1``.

Exactness:

* greedy (``temp <= 0``): a draft token is kept iff it is the target's argmax, the extra token is the
  target's argmax: the output is the baseline's, token for token.
* sampling: the standard rejection rule (accept with probability ``min(1, p/q)``, on rejection sample
  from ``normalize(max(0, p - q))``) keeps the output distributed as the target ``p``, where ``p`` is the
  baseline's own sampling distribution (softmax at ``temp``, restricted to the ``top_k`` most likely
  tokens and renormalized). The random draws differ from the baseline's, so sampled outputs agree in
  distribution, not token for token.

With a batch, every item is checked on its own; a round then commits, for every item, the number of
tokens the item with the fewest could commit. Where the round stops depends only on tokens already
drawn (a stopping time), so each committed token is still a sample of the target given its prefix.

Why the gain is small here: speculative decoding pays off when one parallel pass costs about one
sequential step, i.e. when decoding is memory-bound and the K positions share weights. Moshi's depth
transformer has *per-step weights*: the verification pass still reads K weight sets, as the sequential
loop does. What it saves is the sequential dependency (kernel launches, per-token Python and sampling
overhead); the counters below measure how often that pays.

The transform replaces the streamer's depth stage (``streamer.depformer_sample``); the counters are the
flag's report (``SpeculativeReport.stats``). Host syncs every round (how many tokens to commit): it
cannot run inside a CUDA graph, hence its conflict with ``cuda-graphs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..report import SpecStats, SpeculativeReport
from . import FlagError, FlagSpec, register

DRAFT_LAYERS = 1  # depth layers the self-draft keeps (of 6 in Moshi 7B, 2 in the tiny preset)
MAX_K = 64


def _parse(value: str | None) -> int:
    k = int(value)  # ValueError -> FlagError with the flag's name, in parse_flags
    if not 1 <= k <= MAX_K:
        raise ValueError(f"K must be an integer in 1..{MAX_K}")
    return k


register(
    FlagSpec(
        name="speculative",
        module=__name__.rsplit(".", 1)[1],
        stage="runtime",
        summary=(
            "speculative decoding of the dep_q audio tokens: a self-draft (the depth transformer cut to its "
            f"first {DRAFT_LAYERS} layer, same heads) proposes K tokens, the full depth transformer checks "
            "them in one teacher-forced pass; greedy output identical to the baseline, sampled output "
            "distributed as the baseline (rejection sampling, same temperature and top-k)"
        ),
        parse=_parse,
        default="4",
        conflicts=frozenset({"cuda-graphs"}),
        order=20,  # replaces the depth stage before compile or graphs would wrap it
    )
)


def apply(duplex, k: int, *, draft_layers: int = DRAFT_LAYERS) -> SpeculativeReport:
    lm, streamer = duplex.lm, duplex.streamer
    if k > lm.dep_q:
        raise FlagError(
            f"speculative={k}: K must be at most dep_q = {lm.dep_q} (the audio tokens of a frame)"
        )
    try:
        draft = TruncatedDraft(lm, draft_layers, streamer.batch_size)
    except ValueError as exc:
        raise FlagError(f"speculative={k}: {exc}") from None
    stats = SpecStats(k=k)
    verifier = CachedVerifier(lm, streamer.batch_size)

    def depformer_sample(hidden, text_token):
        tokens, logits = speculative_sample(
            hidden,
            text_token,
            n_tokens=lm.dep_q,
            k=k,
            propose=draft.propose,
            parallel_logits=verifier,
            temp=streamer.temp,
            top_k=streamer.top_k,
            stats=stats,
        )
        streamer.last_audio_logits = logits
        return tokens

    streamer.depformer_sample = depformer_sample
    return SpeculativeReport(k=k, draft_layers=draft_layers, stats=stats)


def sampling_probs(logits: torch.Tensor, temp: float, top_k: int) -> torch.Tensor:
    """The distribution the baseline samples from: softmax(logits / temp) kept on the top_k tokens.

    logits [..., V] -> probs [..., V] (fp32, zero outside the top-k, rows summing to 1).
    """
    probs = torch.softmax(logits.float() / temp, dim=-1)
    vocab = probs.shape[-1]
    if 0 < top_k < vocab:
        top, index = torch.topk(probs, top_k, dim=-1)
        probs = torch.zeros_like(probs).scatter_(-1, index, top)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def _sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs [..., V] -> [...] (rows need not be normalized)."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


@dataclass
class Verdict:
    """The outcome of checking one round of drafts.

    tokens: [B, m + 1]; for item b the first ``n_new[b]`` are its output (accepted drafts, then the
        target's own token); the rest is filler.
    n_accepted: [B] drafts accepted (the longest agreeing prefix).
    n_new: [B] tokens the item can commit (n_accepted + 1, or m when all m were accepted and no target
        logits were given for a bonus token).
    """

    tokens: torch.Tensor
    n_accepted: torch.Tensor
    n_new: torch.Tensor


def verify(
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    *,
    temp: float,
    top_k: int,
    generator: torch.Generator | None = None,
) -> Verdict:
    """Accept the longest agreeing prefix of the drafts, plus one token of the target.

    target_logits: [B, L, V], the target's logits at the m drafted positions (L = m), plus the position
        after them (L = m + 1) when a bonus token may be emitted.
    draft_tokens: [B, m]; draft_probs: [B, m, V] the distribution each draft was sampled from (ignored
        and may be None when greedy).
    """
    B, m = draft_tokens.shape
    L = target_logits.shape[1]
    if L not in (m, m + 1):
        raise ValueError(f"target logits cover {L} positions for {m} drafts (need {m} or {m + 1})")
    device = draft_tokens.device
    if temp <= 0:
        target = target_logits.argmax(dim=-1)  # [B, L]
        agree = (draft_tokens == target[:, :m]).long()
        n_accepted = agree.cumprod(dim=1).sum(dim=1)
        tokens = torch.zeros(B, m + 1, dtype=torch.long, device=device)
        tokens[:, :L] = (
            target  # accepted drafts equal the target's argmax, so the target sequence is the output
        )
    else:
        if draft_probs is None:
            raise ValueError("sampling needs the draft's probabilities")
        p = sampling_probs(target_logits, temp, top_k)  # [B, L, V]
        q = draft_probs.float()
        p_x = p[:, :m].gather(-1, draft_tokens[..., None])[..., 0]
        q_x = q.gather(-1, draft_tokens[..., None])[..., 0]
        u = torch.rand(B, m, device=device, generator=generator)
        # u < p/q without dividing: q_x > 0 for any token actually drawn from q.
        agree = (u * q_x < p_x).long()
        n_accepted = agree.cumprod(dim=1).sum(dim=1)
        tokens = torch.zeros(B, m + 1, dtype=torch.long, device=device)
        tokens[:, :m] = draft_tokens
        at = n_accepted.clamp(max=L - 1)  # position of the target's own token
        p_at = p[torch.arange(B, device=device), at]  # [B, V] the target at the position of its own token
        rejected = n_accepted < m
        q_at = torch.zeros_like(p_at)
        if m > 0:
            q_at[rejected] = q[torch.arange(B, device=device), n_accepted.clamp(max=m - 1)][rejected]
        residual = (p_at - q_at).clamp(min=0)
        mass = residual.sum(dim=-1, keepdim=True)
        # mass is 0 only where p == q on the support, where a rejection has probability 0: fall back to p.
        residual = torch.where(mass > 0, residual, p_at)
        extra = _sample(residual, generator)
        rows = torch.arange(B, device=device)
        # Items that accepted all m drafts with no bonus position keep their last draft.
        tokens[rows, at] = torch.where(n_accepted < L, extra, tokens[rows, at])
    n_new = torch.clamp(n_accepted + 1, max=L)
    return Verdict(tokens=tokens, n_accepted=n_accepted, n_new=n_new)


# propose(hidden [B, D], prefix [B, j + 1] (text token then accepted audio tokens), m, temp, top_k)
#   -> (draft tokens [B, m], their distributions [B, m, V] or None when greedy)
ProposeFn = Callable[[torch.Tensor, torch.Tensor, int, float, int], tuple[torch.Tensor, torch.Tensor | None]]
# parallel_logits(hidden [B, D], tokens_in [B, L], start) -> logits [B, L - start, V] of positions
# start..L-1, teacher-forced on tokens_in (positions before ``start`` were verified by an earlier call)
ParallelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def speculative_sample(
    hidden: torch.Tensor,
    text_token: torch.Tensor,
    *,
    n_tokens: int,
    k: int,
    propose: ProposeFn,
    parallel_logits: ParallelFn,
    temp: float,
    top_k: int,
    stats: SpecStats | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``n_tokens`` audio tokens of one frame by draft-then-verify rounds.

    Returns (tokens [B, n_tokens], the target's logits [B, n_tokens, V] at each emitted position, from
    the verification passes: what the baseline loop's logits would be for the same tokens).
    """
    B = text_token.shape[0]
    prefix = text_token.view(B, 1).long()  # text token, then the audio tokens committed so far
    logits_out: list[torch.Tensor] = []
    rounds = proposed = accepted = 0
    while prefix.shape[1] - 1 < n_tokens:
        j = prefix.shape[1] - 1  # audio tokens committed
        m = min(k, n_tokens - j)
        drafts, draft_probs = propose(hidden, prefix, m, temp, top_k)
        # Inputs of positions 0 .. j + m: the logits at j + m (a bonus token) need the last draft as input.
        tokens_in = torch.cat([prefix, drafts], dim=1)[:, : min(j + m + 1, n_tokens)]
        target = parallel_logits(hidden, tokens_in, j)  # [B, m or m + 1, V]
        verdict = verify(target, drafts, draft_probs, temp=temp, top_k=top_k, generator=generator)
        commit = int(verdict.n_new.min())
        prefix = torch.cat([prefix, verdict.tokens[:, :commit]], dim=1)
        logits_out.append(target[:, :commit])
        rounds += 1
        proposed += B * m
        accepted += int(verdict.n_accepted.sum())
    if stats is not None:
        stats.frames += 1
        stats.rounds += rounds
        stats.proposed += proposed
        stats.accepted += accepted
        stats.committed += B * n_tokens
        stats.rounds_per_frame.append(rounds)
        stats.accepted_per_frame.append(accepted / proposed if proposed else float("nan"))
    return prefix[:, 1:], torch.cat(logits_out, dim=1)


class TruncatedDraft:
    """Self-draft (as in LayerSkip, Elhoushi et al. 2024): the depth transformer cut to its first
    ``n_layers`` layers, with the target's own input projections, embeddings and heads; no extra weights.

    It runs one codebook at a time with its own KV caches for the kept layers. A round always restarts
    the draft at the first uncommitted position, so every cache slot it reads was written from committed
    tokens (stale slots past that point are overwritten before they are read).
    """

    def __init__(self, lm, n_layers: int, batch_size: int) -> None:
        total = len(lm.depformer.layers)
        if not 0 <= n_layers < total:
            raise ValueError(f"the draft keeps 0..{total - 1} of the {total} depth layers, got {n_layers}")
        self.lm = lm
        self.n_layers = n_layers
        self.layers = list(lm.depformer.layers)[:n_layers]
        self.caches = [
            attn.make_cache(batch_size, lm.dep_q, lm.device, lm.dtype)
            for attn in lm.depformer.attentions()[:n_layers]
        ]
        self.positions = [
            torch.full((batch_size,), k, device=lm.device, dtype=torch.long) for k in range(lm.dep_q)
        ]

    def logits(self, k: int, hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        from ..lm.kv_cache import StepPositions

        lm = self.lm
        x = lm.depformer_input(k, hidden, prev)
        if self.layers:
            step = StepPositions(self.positions[k], common=k, span=k + 1)
            if lm.depformer.use_rope:
                step.cos, step.sin = lm.depformer.rope_angles(step.positions[:, None])
            weight_index = k if lm.config.depformer_weights_per_step else 0
            for layer, cache in zip(self.layers, self.caches):
                x = layer(x, step, cache, weight_index)
        return lm.linears[k](x[:, 0])

    def propose(
        self, hidden: torch.Tensor, prefix: torch.Tensor, m: int, temp: float, top_k: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        j = prefix.shape[1] - 1
        prev = prefix[:, -1]
        tokens, probs = [], []
        for t in range(m):
            logits = self.logits(j + t, hidden, prev)
            if temp <= 0:
                prev = logits.argmax(dim=-1)
            else:
                q = sampling_probs(logits, temp, top_k)
                prev = _sample(q)
                probs.append(q)
            tokens.append(prev)
        return torch.stack(tokens, dim=1), (torch.stack(probs, dim=1) if probs else None)


class CachedVerifier:
    """The depth transformer's teacher-forced pass over positions ``start..L-1`` in one go, reusing the
    keys/values that earlier rounds of the same frame wrote for positions ``< start``.

    ``lm.depformer_forward_parallel`` recomputes every position from 0 on each call; after a rejection at
    position j that repeats j positions of work. Here each round writes the keys/values of the positions
    it checks (slot = position, the depth context being dep_q) and attends through a causal mask. Slots
    past the committed prefix hold rejected drafts, but the next round rewrites them before any read.
    The arithmetic is the streaming step's (same modules, per-step weights, norms, gating).
    """

    def __init__(self, lm, batch_size: int) -> None:
        self.lm = lm
        self.caches = [
            attn.make_cache(batch_size, lm.dep_q, lm.device, lm.dtype) for attn in lm.depformer.attentions()
        ]
        self.positions = [
            torch.full((batch_size,), k, device=lm.device, dtype=torch.long) for k in range(lm.dep_q)
        ]

    def __call__(self, hidden: torch.Tensor, tokens_in: torch.Tensor, start: int) -> torch.Tensor:
        from ..lm.kv_cache import StepPositions
        from ..lm.rope import apply_rope
        from ..lm.transformer import attend

        lm = self.lm
        B, L = tokens_in.shape
        ks = list(range(start, L))
        w = ks if lm.config.depformer_weights_per_step else [0] * len(ks)  # weight set of each position
        device = hidden.device
        x = torch.cat([lm.depformer_input(k, hidden, tokens_in[:, k]) for k in ks], dim=1)  # [B, T, D]
        cos, sin = lm.depformer.rope_angles(torch.arange(start, L, device=device).expand(B, len(ks)))
        causal = torch.arange(L, device=device)[None, :] <= torch.arange(start, L, device=device)[:, None]
        causal = causal[None, None]  # [1, 1, T, L]: position k sees slots 0..k
        read_at = StepPositions(self.positions[L - 1], common=L - 1, span=L)
        for layer, cache in zip(lm.depformer.layers, self.caches):
            attn = layer.self_attn
            h = layer.norm1(x)
            qkv = torch.cat([attn.in_projs[w[t]](h[:, t : t + 1]) for t in range(len(ks))], dim=1)
            q, k, v = attn._split_heads(qkv)
            if attn.rope:
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            for t, pos in enumerate(ks):
                cache.append(
                    k[:, :, t : t + 1], v[:, :, t : t + 1], StepPositions(self.positions[pos], pos, pos + 1)
                )
            keys, values, _ = cache.read(read_at)
            kernel = "sdpa" if attn.backend == "flash" else attn.backend  # several queries, causal mask
            attn._count(kernel)
            out = attend(q, keys, values, causal, kernel)
            out = out.transpose(1, 2).reshape(B, len(ks), attn.dim)
            x = x + torch.cat([attn.out_projs[w[t]](out[:, t : t + 1]) for t in range(len(ks))], dim=1)
            h = layer.norm2(x)
            x = x + torch.cat([layer._ffn(w[t])(h[:, t : t + 1]) for t in range(len(ks))], dim=1)
        return torch.stack([lm.linears[k](x[:, t]) for t, k in enumerate(ks)], dim=1)
