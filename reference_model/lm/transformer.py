"""The transformer blocks of both Moshi transformers (temporal and depth), for streaming inference.

Module names and parameter shapes are Moshi's (moshi/modules/transformer.py, gating.py), so a Moshi
state dict loads as is. Differences are in how a step runs, not what it computes: positions come from
the caller, the KV cache is an object the caller owns (``attn.cache_factory`` builds it), and attention
spans only the cache slots that may hold data.

Per-step weights (the depth transformer): ``in_projs``/``out_projs``/``gating`` hold one module per
codebook step; ``weight_index`` picks the set for the step being run.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import CacheFactory, RingKVCache, StepPositions
from .rope import apply_rope, rope_angles, rope_frequencies

BACKENDS = ("eager", "sdpa", "flash")


class RMSNorm(nn.Module):
    """RMSNorm computed in ``compute_dtype`` (fp32 for Moshi's 'rms_norm_f32'), learned scale ``alpha``."""

    def __init__(self, dim: int, eps: float, compute_dtype: torch.dtype | None = torch.float32) -> None:
        super().__init__()
        self.eps = eps
        self.compute_dtype = compute_dtype
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_dtype = x.dtype
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        var = self.eps + torch.mean(x**2, dim=-1, keepdim=True)
        return (x * (self.alpha.to(var) * torch.rsqrt(var))).to(x_dtype)


class ActivationGating(nn.Module):
    """Gated FFN: ``linear_out(act(a) * b)`` with ``[a, b] = linear_in(x)``."""

    def __init__(self, dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)
        self.activation = getattr(F, activation) if hasattr(F, activation) else getattr(torch, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_in(x)
        h = h.view(*h.shape[:-1], 2, -1)
        return self.linear_out(self.activation(h[..., 0, :]) * h[..., 1, :])


class Attention(nn.Module):
    """Causal self-attention with a fused qkv projection (``in_projs.N``), GQA and a caller-owned KV cache."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        num_weight_sets: int = 1,
        rope: bool = True,
        context: int | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.rope = rope
        self.context = context
        self.backend = "sdpa"
        self.cache_factory: CacheFactory = RingKVCache
        # Attention kernels this layer ran (kernel name -> eager calls); a compiled or captured step is
        # counted when it is traced/captured. Read by the model's report: "kernels actually used".
        self.kernel_calls: Counter[str] = Counter()
        qkv_dim = dim + 2 * self.num_kv_heads * self.head_dim
        self.in_projs = nn.ModuleList(nn.Linear(dim, qkv_dim, bias=False) for _ in range(num_weight_sets))
        self.out_projs = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_weight_sets))

    def make_cache(self, batch_size: int, capacity: int, device, dtype) -> RingKVCache:
        return self.cache_factory(
            batch_size, self.num_kv_heads, self.head_dim, capacity, device=device, dtype=dtype
        )

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = qkv.shape
        kv_width = self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([self.dim, kv_width, kv_width], dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def forward(
        self, x: torch.Tensor, step: StepPositions, cache: RingKVCache, weight_index: int = 0
    ) -> torch.Tensor:
        """One streaming step: x [B, 1, dim] at ``step.positions`` -> [B, 1, dim]."""
        B, T, _ = x.shape
        q, k, v = self._split_heads(self.in_projs[weight_index](x))
        if self.rope:
            q, k = apply_rope(q, step.cos, step.sin), apply_rope(k, step.cos, step.sin)
        cache.append(k, v, step)
        keys, values, mask = cache.read(step)
        kernel = step_kernel(self.backend, T, mask is not None, step.contiguous)
        self._count(kernel)
        seqlens = None
        if kernel == "flash_attn_with_kvcache":
            seqlens = torch.clamp(step.positions + 1, max=keys.shape[2]).to(torch.int32)
        out = attend(q, keys, values, mask, kernel, cache_seqlens=seqlens)
        return self.out_projs[weight_index](out.transpose(1, 2).reshape(B, T, self.dim))

    def forward_sequence(self, x: torch.Tensor, cos=None, sin=None, per_step: bool = False) -> torch.Tensor:
        """Causal attention over a whole sequence x [B, T, dim] without a cache (teacher forcing).

        With ``per_step``, position t uses weight set t (the depth transformer's weights_per_step).
        """
        B, T, _ = x.shape
        if per_step:
            qkv = torch.cat([self.in_projs[t](x[:, t : t + 1]) for t in range(T)], dim=1)
        else:
            qkv = self.in_projs[0](x)
        q, k, v = self._split_heads(qkv)
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        if self.context is not None:
            causal &= ~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-self.context)
        kernel = "sdpa" if self.backend == "flash" else self.backend
        self._count(kernel)
        out = attend(q, k, v, causal, kernel)
        out = out.transpose(1, 2).reshape(B, T, self.dim)
        if per_step:
            return torch.cat([self.out_projs[t](out[:, t : t + 1]) for t in range(T)], dim=1)
        return self.out_projs[0](out)

    def _count(self, kernel: str) -> None:
        if not torch.compiler.is_compiling():
            self.kernel_calls[kernel] += 1


KERNELS = ("eager", "sdpa", "flash_attn_func", "flash_attn_with_kvcache")


def step_kernel(backend: str, queries: int, masked: bool, contiguous: bool) -> str:
    """The kernel a streaming step of ``backend`` runs.

    flash: with every item's history contiguous in its cache (slots 0..min(p, capacity-1) valid, however
    the ring wrapped, and whether or not items were reset apart), one query per item is served exactly by
    ``flash_attn_with_kvcache`` with per-item ``cache_seqlens`` (for a single query, slot order does not
    matter: positions are already in the RoPE-rotated keys). That covers the masked forms of a step (a
    ragged batch, the static-shape step of CUDA graphs and compile). Otherwise (several queries with a
    mask, or holes left by Mixture of Depths) it is sdpa with the mask.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r} (known: {', '.join(BACKENDS)})")
    if backend != "flash":
        return backend
    if not masked:
        return "flash_attn_func"
    if queries == 1 and contiguous:
        return "flash_attn_with_kvcache"
    return "sdpa"


def flash_kvcache_args(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_seqlens: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Arguments of ``flash_attn_with_kvcache`` for q [B, H, 1, D] over caches k, v [B, Hkv, L, D].

    flash-attn wants [batch, seqlen, heads, dim] with a unit last stride: a transposed view of the ring
    cache is that (no copy); ``cache_seqlens`` int32 [B] says how many leading slots each item attends.
    """
    if q.shape[2] != 1:
        raise ValueError(f"flash_attn_with_kvcache is used for one query per item, got {q.shape[2]}")
    return {
        "q": q.transpose(1, 2),
        "k_cache": k.transpose(1, 2),
        "v_cache": v.transpose(1, 2),
        "cache_seqlens": cache_seqlens.to(device=q.device, dtype=torch.int32),
    }


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    backend: str,
    *,
    cache_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of q [B, H, T, D] over k, v [B, Hkv, L, D]; mask True = attend.

    ``backend`` is a backend ("eager", "sdpa", "flash": resolved by :func:`step_kernel` with ``mask``)
    or a kernel of :data:`KERNELS`; ``flash_attn_with_kvcache`` needs ``cache_seqlens`` [B] (and then
    ignores ``mask``, which must agree with it).
    """
    groups = q.shape[1] // k.shape[1]
    if backend == "flash":
        backend = step_kernel("flash", q.shape[2], mask is not None, cache_seqlens is not None)
    if backend == "flash_attn_with_kvcache":
        if cache_seqlens is None:
            raise ValueError("flash_attn_with_kvcache needs cache_seqlens")
        from flash_attn import flash_attn_with_kvcache  # CUDA only; checked when the flag is applied

        return flash_attn_with_kvcache(**flash_kvcache_args(q, k, v, cache_seqlens)).transpose(1, 2)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=groups > 1)
    if backend == "eager":
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
    if backend == "flash_attn_func":
        if mask is not None:
            raise ValueError("flash_attn_func takes no mask (use flash_attn_with_kvcache or sdpa)")
        from flash_attn import flash_attn_func  # CUDA only; checked when the flag is applied

        # New query against keys that all precede it: no causal mask needed for one step.
        causal = q.shape[2] > 1
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        return out.transpose(1, 2)
    raise ValueError(f"unknown attention backend {backend!r} (known: {', '.join(BACKENDS + KERNELS)})")


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + attn(norm1(x)), then x + ffn(norm2(x)). ``gating`` is a ModuleList per step."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        hidden: int,
        activation: str,
        eps: float,
        num_weight_sets: int = 1,
        per_step: bool = False,
        rope: bool = True,
        context: int | None = None,
    ) -> None:
        super().__init__()
        self.per_step = per_step
        self.self_attn = Attention(dim, num_heads, num_kv_heads, num_weight_sets, rope=rope, context=context)
        self.norm1 = RMSNorm(dim, eps)
        self.norm2 = RMSNorm(dim, eps)
        if per_step:
            self.gating = nn.ModuleList(
                ActivationGating(dim, hidden, activation) for _ in range(num_weight_sets)
            )
        else:
            self.gating = ActivationGating(dim, hidden, activation)

    def _ffn(self, index: int) -> ActivationGating:
        return self.gating[index] if self.per_step else self.gating  # type: ignore[index,return-value]

    def forward(
        self, x: torch.Tensor, step: StepPositions, cache: RingKVCache, weight_index: int = 0
    ) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), step, cache, weight_index)
        return x + self._ffn(weight_index)(self.norm2(x))

    def forward_sequence(self, x: torch.Tensor, cos=None, sin=None) -> torch.Tensor:
        x = x + self.self_attn.forward_sequence(self.norm1(x), cos, sin, per_step=self.per_step)
        h = self.norm2(x)
        if self.per_step:
            return x + torch.cat([self.gating[t](h[:, t : t + 1]) for t in range(x.shape[1])], dim=1)
        return x + self.gating(h)


class Transformer(nn.Module):
    """A stack of layers; holds the RoPE frequencies (a non-persistent buffer, absent from the state dict)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        num_layers: int,
        hidden: int,
        activation: str,
        eps: float,
        max_period: float,
        rope: bool,
        num_weight_sets: int = 1,
        per_step: bool = False,
        context: int | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.max_period = max_period
        self.use_rope = rope
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                num_heads,
                num_kv_heads,
                hidden,
                activation,
                eps,
                num_weight_sets,
                per_step,
                rope,
                context,
            )
            for _ in range(num_layers)
        )
        self._freqs: torch.Tensor | None = None  # not a buffer: the state dict stays Moshi's

    def rope_angles(self, positions: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """positions [B, T] -> RoPE (cos, sin) shared by all layers (None, None without RoPE)."""
        if not self.use_rope:
            return None, None
        if self._freqs is None or self._freqs.device != positions.device:
            self._freqs = rope_frequencies(self.head_dim, self.max_period, positions.device)
        return rope_angles(positions, self._freqs)

    def attentions(self) -> list[Attention]:
        return [layer.self_attn for layer in self.layers]

    def forward(
        self, x: torch.Tensor, step: StepPositions, caches: list[RingKVCache], weight_index: int = 0
    ) -> torch.Tensor:
        for layer, cache in zip(self.layers, caches):
            x = layer(x, step, cache, weight_index)
        return x
