"""Recipe option ``ervq`` (enhancement 3.3): ERVQ's intra- and inter-codebook optimisation of the RVQ.

ERVQ (Zheng et al. 2024) adds to a residual VQ codec:

* intra-codebook: online clustering, i.e. codes re-anchored toward the encoder features nearest to them,
  the more the less they are used (``EuclideanCodebook.reanchor``), and a code-balancing loss that makes
  the usage within each codebook uniform;
* inter-codebook: a loss that makes successive quantizers' outputs dissimilar, so that each level adds
  something the previous one did not carry.

Mimi's codebooks are EMA statistics, not parameters: no loss reaches them. The losses here act on what
does get gradients, the encoder latent that the codebooks quantize, through *soft* assignments (a softmax
over negative squared distances): the balancing term is MAGVIT-v2's entropy loss (each vector confident,
the batch's mean assignment spread over the codebook), the decorrelation term the squared cosine between
adjacent levels' outputs (value of the hard codes, gradient of the soft ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from reference_model.codec.quantizer import ResidualVectorQuantizer


@dataclass
class LevelInputs:
    """What one RVQ level saw in a training pass: its input residual [N, D] (with gradient to the encoder)
    and the codes it chose [N]."""

    residual: torch.Tensor
    codes: torch.Tensor


def level_inputs(
    rvq: ResidualVectorQuantizer, latent: torch.Tensor, codes: torch.Tensor
) -> list[LevelInputs]:
    """Re-trace the residual chain of ``rvq`` for ``latent`` [B, C, T] and the ``codes`` [B, n, T] its
    training pass chose: level k's input is the projected latent minus levels < k's (detached) outputs, as
    in the quantizer's forward."""
    residual = rvq.input_proj(latent).transpose(1, 2)
    out = []
    for k, cb in enumerate(rvq.codebooks(codes.shape[1])):
        c = codes[:, k]
        out.append(LevelInputs(residual.reshape(-1, residual.shape[-1]), c.reshape(-1)))
        residual = residual - cb.decode(c).detach()
    return out


def _soft_assign(residual: torch.Tensor, embedding: torch.Tensor, temperature: float) -> torch.Tensor:
    """p[n, k] = softmax_k(-|r_n - c_k|^2 / tau), tau = ``temperature`` x the batch's mean squared distance
    to the nearest code (scale-free: the latent's energy changes during training)."""
    emb = embedding.to(residual)  # |r|^2 - 2 r.c + |c|^2: a matmul (cdist's backward cost twice as much)
    d2 = (residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ emb.T + emb.pow(2).sum(-1)).clamp_min(0)
    tau = temperature * d2.detach().min(dim=-1).values.mean().clamp_min(1e-8)
    return torch.softmax(-d2 / tau, dim=-1)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def soft_assignments(
    levels: list[LevelInputs], rvq: ResidualVectorQuantizer, temperature: float
) -> list[torch.Tensor]:
    """Each level's soft assignment p [N, K] of its input residuals to its codes (both losses use them)."""
    return [
        _soft_assign(lv.residual, cb.embedding, temperature)
        for lv, cb in zip(levels, rvq.codebooks(len(levels)))
    ]


def balance_loss(
    levels: list[LevelInputs],
    rvq: ResidualVectorQuantizer,
    temperature: float,
    probs: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over levels of 1 + (E_n[H(p_n)] - H(E_n[p_n])) / log K: 0 when every vector is sure of its code
    and the batch uses the codebook uniformly, 1 when it uses one code (or when no vector is sure).
    ``probs``: the levels' soft assignments when already computed."""
    probs = probs if probs is not None else soft_assignments(levels, rvq, temperature)
    terms = []
    for p, cb in zip(probs, rvq.codebooks(len(levels)), strict=True):
        terms.append(1 + (_entropy(p).mean() - _entropy(p.mean(0))) / math.log(cb.codebook_size))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def decorrelation_loss(
    levels: list[LevelInputs],
    rvq: ResidualVectorQuantizer,
    temperature: float,
    probs: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean over adjacent levels (k, k+1) and vectors of cos^2 between their quantized outputs: the value of
    the codes actually chosen, the gradient of the soft assignment (straight-through)."""
    probs = probs if probs is not None else soft_assignments(levels, rvq, temperature)
    outputs = []
    for lv, p, cb in zip(levels, probs, rvq.codebooks(len(levels)), strict=True):
        emb = cb.embedding.to(lv.residual)
        hard = F.embedding(lv.codes, emb)
        soft = p @ emb
        outputs.append(hard + soft - soft.detach())
    if len(outputs) < 2:
        return levels[0].residual.new_zeros(()) if levels else torch.zeros(())
    cos = [F.cosine_similarity(a, b, dim=-1, eps=1e-8).pow(2).mean() for a, b in zip(outputs, outputs[1:])]
    return torch.stack(cos).mean()


def reanchor_all(levels: list[LevelInputs], rvq: ResidualVectorQuantizer, sharpness: float) -> float:
    """Re-anchor every level's codebook toward its own input residuals; the mean pull."""
    pulls = [
        cb.reanchor(lv.residual.detach(), sharpness) for lv, cb in zip(levels, rvq.codebooks(len(levels)))
    ]
    return float(sum(pulls) / len(pulls)) if pulls else 0.0
