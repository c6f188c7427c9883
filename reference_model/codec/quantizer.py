"""Split residual vector quantizer (moshi's ``SplitResidualVectorQuantizer``): ``rvq_first`` holds the
semantic codebook(s), ``rvq_rest`` the acoustic ones, each with its own 1x1 conv projections.

Codebooks are stored as moshi stores them, as EMA statistics (``_initialized``, ``cluster_usage``,
``embedding_sum``); the centroids are ``embedding_sum / cluster_usage``. Training (``forward`` in train
mode) updates them by EMA, re-initialises dead codes and returns a commitment loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


# --- multi-rate levels (SNAC-style; opt-in by the config's quantizer.multi_rate_strides) ----------------
def pool_frames(x: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, T, D] -> [B, ceil(T / stride), D]: the mean over each window of ``stride`` frames, windows from
    frame 0 (a last partial window averages the frames it has). Causal across windows: window k's mean
    needs frames up to (k + 1) * stride - 1, so its code is known at the end of its window."""
    if stride == 1:
        return x
    b, t, d = x.shape
    pad = (-t) % stride
    summed = F.pad(x, (0, 0, 0, pad)).view(b, (t + pad) // stride, stride, d).sum(2)
    counts = torch.full((summed.shape[1], 1), float(stride), device=x.device, dtype=x.dtype)
    if pad:
        counts[-1] = stride - pad
    return summed / counts


def repeat_frames(x: torch.Tensor, stride: int, length: int) -> torch.Tensor:
    """[B, W, ...] -> [B, length, ...]: each window's entry repeated over its frames (nearest upsampling)."""
    return x if stride == 1 else x.repeat_interleave(stride, dim=1)[:, :length]


class EuclideanCodebook(nn.Module):
    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_usage_ratio: float = 0.1,
        replaced_usage_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_usage_ratio = threshold_usage_ratio
        self.replaced_usage_ratio = replaced_usage_ratio
        self.register_buffer("_initialized", torch.tensor([1.0]))
        self.register_buffer("cluster_usage", torch.ones(codebook_size))
        # Random centroids so that an untrained codec still gives varied codes (training re-inits by k-means).
        self.register_buffer("embedding_sum", torch.randn(codebook_size, dim))
        self.register_buffer("_embedding", None, persistent=False)
        self._augmented: torch.Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def _clear_cache(self) -> None:
        self._embedding = None
        self._augmented = None

    def _apply(self, fn, *args, **kwargs):
        self._augmented = None  # derived from buffers that .to() may move or cast
        return super()._apply(fn, *args, **kwargs)

    @property
    def embedding(self) -> torch.Tensor:
        if self._embedding is None:
            self._embedding = self.embedding_sum / self.cluster_usage.clamp(min=self.epsilon)[:, None]
        return self._embedding

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> nearest centroid index [...].

        Computes what moshi's ``torch.cdist(x, embedding).argmin(-1)`` computes (one matmul over vectors
        augmented with their squared norms, clamp, sqrt), so codes match it exactly, but keeps the
        augmented codebook between calls: cdist rebuilds it on every call, which dominated a streamed frame.
        """
        shape = x.shape[:-1]
        flat = x.reshape(1, -1, x.shape[-1])
        aug = getattr(self, "_augmented", None)
        if aug is None:
            emb = self.embedding
            norm = emb.pow(2).sum(-1, keepdim=True)
            aug = torch.cat([emb, torch.ones_like(norm), norm], -1).unsqueeze(0)
            self._augmented = aug
        x_norm = flat.pow(2).sum(-1, keepdim=True)
        lhs = torch.cat([flat.mul(-2), x_norm, torch.ones_like(x_norm)], -1)
        dists = torch.matmul(lhs, aug.mT).clamp_min_(0).sqrt_()
        return dists[0].argmin(dim=-1).view(shape)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embedding)

    # --- training ---------------------------------------------------------------------------------
    @torch.no_grad()
    def kmeans_init(self, samples: torch.Tensor, iters: int = 10) -> None:
        """Initialise the centroids by k-means on ``samples`` [N, D] (moshi does this on the first batch)."""
        samples = samples.reshape(-1, self.dim).float()
        n = samples.shape[0]
        idx = (
            torch.randperm(n)[: self.codebook_size]
            if n >= self.codebook_size
            else torch.randint(0, n, (self.codebook_size,))
        )
        means = samples[idx].clone()
        counts = torch.ones(self.codebook_size)
        for _ in range(iters):
            buckets = torch.cdist(samples[None], means[None])[0].argmin(dim=-1)
            counts = torch.bincount(buckets, minlength=self.codebook_size).float()
            sums = torch.zeros_like(means).index_add_(0, buckets, samples)
            empty = counts == 0
            means = torch.where(
                empty[:, None],
                samples[torch.randint(0, n, (self.codebook_size,))],
                sums / counts.clamp(min=1)[:, None],
            )
        counts = counts.clamp(min=1)
        self.embedding_sum.copy_(means * counts[:, None])
        self.cluster_usage.copy_(counts)
        self._initialized.fill_(1.0)
        self._clear_cache()

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor, replace_dead: bool) -> float:
        """EMA of usage and sums over the batch; dead codes (usage under ``threshold_usage_ratio`` of the
        uniform share) are moved onto random batch vectors. Returns the share of codes replaced."""
        flat = x.reshape(-1, self.dim).float()
        flat_codes = codes.reshape(-1)
        usage = torch.bincount(flat_codes, minlength=self.codebook_size).to(self.cluster_usage)
        sums = torch.zeros_like(self.embedding_sum).index_add_(0, flat_codes, flat.to(self.embedding_sum))
        self.cluster_usage.mul_(self.decay).add_(usage, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        replaced = 0.0
        if replace_dead:
            total = self.cluster_usage.sum()
            dead = self.cluster_usage < self.threshold_usage_ratio * total / self.codebook_size
            if bool(dead.any()):
                new = flat[torch.randint(0, flat.shape[0], (self.codebook_size,))]
                new_usage = self.replaced_usage_ratio * total / self.codebook_size
                self.embedding_sum.copy_(torch.where(dead[:, None], new_usage * new, self.embedding_sum))
                self.cluster_usage.copy_(torch.where(dead, new_usage, self.cluster_usage))
                replaced = float(dead.float().mean())
        self._clear_cache()
        return replaced

    @torch.no_grad()
    def reanchor(self, x: torch.Tensor, sharpness: float = 10.0) -> float:
        """ERVQ's online clustering (CVQ-VAE's anchors): every code moves toward the vector of ``x`` [N, D]
        nearest to it by ``alpha = exp(-sharpness * usage / uniform usage)``, so a rarely used code is pulled
        onto the data before it dies, a busy one stays put (the dead-code restart above jumps codes under a
        hard threshold onto random vectors instead). Returns the mean alpha."""
        flat = x.reshape(-1, self.dim).float()
        emb = self.embedding
        anchors = flat[torch.cdist(emb[None], flat[None])[0].argmin(dim=-1)]
        share = self.cluster_usage / self.cluster_usage.sum().clamp_min(self.epsilon)
        alpha = torch.exp(-sharpness * share * self.codebook_size)[:, None]
        moved = (1 - alpha) * emb + alpha * anchors
        self.embedding_sum.copy_(moved * self.cluster_usage.clamp(min=self.epsilon)[:, None])
        self._clear_cache()
        return float(alpha.mean())


class VectorQuantization(nn.Module):
    """One codebook (moshi keeps it under ``_codebook``; no codebook projection in Mimi)."""

    def __init__(self, dim: int, codebook_size: int, **kwargs) -> None:
        super().__init__()
        self._codebook = EuclideanCodebook(dim, codebook_size, **kwargs)


class ResidualVectorQuantization(nn.Module):
    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, **kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [VectorQuantization(dim, codebook_size, **kwargs) for _ in range(num_quantizers)]
        )


class ResidualVectorQuantizer(nn.Module):
    """RVQ over ``n_q`` codebooks between a 1x1 conv in-projection and out-projection."""

    def __init__(
        self,
        dimension: int,
        input_dimension: int,
        output_dimension: int,
        n_q: int,
        bins: int,
        decay: float = 0.99,
        threshold_usage_ratio: float = 0.1,
        replaced_usage_ratio: float = 1.0,
        strides: list[int] | tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.max_n_q = n_q
        self.n_q = n_q
        # Frames per code of each level (1: every frame). A level of stride s quantizes the residual's mean
        # over windows of s frames and its code repeats over the window (the codes stay one per frame).
        strides = list(strides or [])
        if len(strides) > n_q or any(int(x) < 1 for x in strides):
            raise ValueError(f"strides {strides} must be >= 1, at most one per codebook ({n_q})")
        self.strides = tuple(int(x) for x in strides) + (1,) * (n_q - len(strides))
        # "relative": the commitment loss divided by the latent's energy, so that shrinking the latent (and
        # the EMA codebooks with it) cannot lower it; with "absolute" a weight-normalised encoder learns to
        # do exactly that (the latent's std fell from ~0.9 to 0.006 in 1,000 steps; docs/results.md).
        self.commitment = "absolute"
        self.dimension = dimension
        self.bins = bins
        self.input_proj = nn.Conv1d(input_dimension, dimension, 1, bias=False)
        self.output_proj = nn.Conv1d(dimension, output_dimension, 1, bias=False)
        self.vq = ResidualVectorQuantization(
            dimension,
            bins,
            n_q,
            decay=decay,
            threshold_usage_ratio=threshold_usage_ratio,
            replaced_usage_ratio=replaced_usage_ratio,
        )

    def codebooks(self, n: int) -> list[EuclideanCodebook]:
        return [layer._codebook for layer in self.vq.layers[:n]]

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """[B, C, T] -> codes [B, n_q, T]."""
        n_q = self.n_q if n_q is None else n_q
        residual = self.input_proj(x).transpose(1, 2)  # [B, T, D]
        codes = []
        for cb, stride in zip(self.codebooks(n_q), self.strides):
            c = repeat_frames(cb.encode(pool_frames(residual, stride)), stride, residual.shape[1])
            residual = residual - cb.decode(c)
            codes.append(c)
        if not codes:
            return x.new_zeros(x.shape[0], 0, x.shape[-1], dtype=torch.long)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] (K <= max_n_q) -> [B, C_out, T]."""
        quantized = None
        for k, cb in enumerate(self.codebooks(codes.shape[1])):
            q = cb.decode(codes[:, k])
            quantized = q if quantized is None else quantized + q
        if quantized is None:
            raise ValueError("decode needs at least one codebook")
        return self.output_proj(quantized.transpose(1, 2))

    def forward(
        self, x: torch.Tensor, n_q: int | None = None, bypass: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (quantized [B, C_out, T] with a straight-through gradient, codes, commitment loss).
        ``bypass`` [B] bool: items whose latent skips quantization (Mimi quantizes half the items).

        In train mode the codebooks are updated by EMA (k-means initialised on first use)."""
        n_q = self.n_q if n_q is None else n_q
        z = self.input_proj(x).transpose(1, 2)
        residual = z
        out = torch.zeros_like(z)
        commit = z.new_zeros(())
        codes = []
        for cb, stride in zip(self.codebooks(n_q), self.strides):
            pooled = pool_frames(residual, stride)  # the residual itself at stride 1
            if self.training and not bool(cb._initialized.item()):
                cb.kmeans_init(pooled.detach())
            c = cb.encode(pooled.detach())
            q = cb.decode(c).detach()
            if self.training:
                commit = commit + F.mse_loss(pooled, q)
                cb.ema_update(pooled.detach(), c, replace_dead=True)
            q, c = repeat_frames(q, stride, z.shape[1]), repeat_frames(c, stride, z.shape[1])
            residual = residual - q
            out = out + q
            codes.append(c)
        if self.training:
            out = z + (out - z).detach()  # straight-through for the whole residual stack
        if bypass is not None:
            out = torch.where(bypass.view(-1, 1, 1), z, out)
        commit = commit / max(n_q, 1)
        if self.commitment == "relative":
            commit = commit / z.detach().pow(2).mean().clamp_min(1e-12)
        return self.output_proj(out.transpose(1, 2)), torch.stack(codes, dim=1), commit

    def set_num_codebooks(self, n: int) -> None:
        self.n_q = n


class SplitResidualVectorQuantizer(nn.Module):
    """``rvq_first``: ``n_q_semantic`` semantic codebooks; ``rvq_rest``: the acoustic ones (codes offset)."""

    def __init__(
        self,
        *,
        n_q: int = 8,
        n_q_semantic: int = 1,
        dimension: int = 256,
        bins: int = 2048,
        input_dimension: int | None = None,
        output_dimension: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        input_dimension = input_dimension or dimension
        output_dimension = output_dimension or dimension
        self.max_n_q = n_q
        self.n_q_semantic = n_q_semantic
        self.bins = bins
        kw = dict(
            dimension=dimension, input_dimension=input_dimension, output_dimension=output_dimension, bins=bins
        )
        kw.update(
            {
                k: v
                for k, v in kwargs.items()
                if k in ("decay", "threshold_usage_ratio", "replaced_usage_ratio")
            }
        )
        self.rvq_first = ResidualVectorQuantizer(n_q=n_q_semantic, **kw)
        # multi_rate_strides: the acoustic levels' strides, coarse first (the semantic codebook stays at
        # the frame rate); absent in Mimi's configs, whose codes stay exactly moshi's.
        strides = kwargs.get("multi_rate_strides")
        self.rvq_rest = ResidualVectorQuantizer(n_q=n_q - n_q_semantic, strides=strides, **kw)

    @property
    def level_strides(self) -> tuple[int, ...]:
        """Frames per code of every codebook, in order (all 1 for a single-rate codec)."""
        return self.rvq_first.strides + self.rvq_rest.strides

    @property
    def code_window(self) -> int:
        """Frames after which every level's window closes together (1 for a single-rate codec): a streamed
        encoder emits the codes of that many frames at once, at the end of each such window."""
        return math.lcm(*self.level_strides)

    @property
    def num_codebooks(self) -> int:
        return self.rvq_first.n_q + self.rvq_rest.n_q

    @property
    def total_codebooks(self) -> int:
        return self.max_n_q

    @property
    def cardinality(self) -> int:
        return self.bins

    def set_num_codebooks(self, n: int) -> None:
        if not self.n_q_semantic <= n <= self.max_n_q:
            raise ValueError(f"number of codebooks must be in [{self.n_q_semantic}, {self.max_n_q}], got {n}")
        self.rvq_rest.set_num_codebooks(n - self.n_q_semantic)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.rvq_first.encode(x)
        if self.rvq_rest.n_q > 0:
            codes = torch.cat([codes, self.rvq_rest.encode(x)], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        quantized = self.rvq_first.decode(codes[:, : self.n_q_semantic])
        if codes.shape[1] > self.n_q_semantic:
            quantized = quantized + self.rvq_rest.decode(codes[:, self.n_q_semantic :])
        return quantized

    def forward(
        self, x: torch.Tensor, n_q: int | None = None, bypass: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass with ``n_q`` codebooks in all (quantizer dropout picks it per batch)."""
        n_q = self.num_codebooks if n_q is None else n_q
        q1, c1, l1 = self.rvq_first(x, self.n_q_semantic, bypass)
        n_rest = n_q - self.n_q_semantic
        if n_rest <= 0:
            return q1, c1, l1
        q2, c2, l2 = self.rvq_rest(x, n_rest, bypass)
        # moshi weighs each part's commitment by its share of the codebooks in use
        loss = (l1 * self.n_q_semantic + l2 * n_rest) / n_q
        return q1 + q2, torch.cat([c1, c2], dim=1), loss
