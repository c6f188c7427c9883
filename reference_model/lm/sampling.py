"""Token sampling, arithmetic and random draws identical to Moshi's (moshi/utils/sampling.py).

Sampling a categorical with one exponential draw per candidate (``argmax(p / Exp(1))``) rather than
``torch.multinomial`` avoids a host sync; drawing the same way as Moshi also means that with the same
seed both give the same tokens, which the exactness tests use.
"""

from __future__ import annotations

import torch


def _categorical(probs: torch.Tensor) -> torch.Tensor:
    flat = probs.reshape(-1, probs.shape[-1])
    q = torch.empty_like(flat).exponential_(1)
    return (flat / q).argmax(dim=-1, keepdim=True).reshape(*probs.shape[:-1], 1)


def sample_token(logits: torch.Tensor, temp: float, top_k: int) -> torch.Tensor:
    """logits [..., card] -> tokens [...]; temp <= 0 means greedy (argmax)."""
    if temp <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temp, dim=-1)
    if top_k > 0:
        probs, indices = torch.topk(probs, min(top_k, probs.shape[-1]), dim=-1)
        return indices.gather(-1, _categorical(probs))[..., 0]
    return _categorical(probs)[..., 0]
