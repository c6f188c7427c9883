"""``mod=C``: Mixture of Depths (Raposo et al. 2024) for streaming decode of the temporal transformer,
capacity C in (0, 1].

Each temporal layer gets a router: a linear score of the residual stream entering the layer. A token
the router ranks low skips the layer: its residual passes through unchanged and no KV entry is written
for that layer and position (later tokens simply cannot attend to it there). Training-time MoD keeps the
top-C share of a sequence; streaming decode sees one token per step, so the rule here is a causal top-C:
a token is processed when its score beats a share (1 - C) of the layer's last W scores (a threshold
that is the running (1 - C) quantile). A fixed threshold does not hold the share: on this model the
update norms shrink as the context fills, and a threshold fitted on early positions skips almost every
later token. A fresh stream's window starts from the scores seen in calibration.

Moshi's checkpoints have no routers. Here they are FITTED, not learned end to end: on the model's own
streamed hidden states (the variant's codec's codes of calibration speech, as the weight flags use; seeded
random user codes for a bare LM; the baseline sampler), a ridge regression predicts
the norm of each layer's update ``||layer(x) - x||`` from ``x`` (strength by cross-validation; the
held-out R^2 is kept in the flag's report, ``ModReport.stats.fit_r2``). Tokens predicted to change
little skip. Nothing guarantees quality: the fidelity suite measures what it costs.

Positions are absolute (RoPE angles come from the streamer), so a skipped layer shifts nothing; the
ring KV cache records the position of every slot, so holes left by skipped tokens are masked out.

The transform: every temporal layer is wrapped in a :class:`RoutedLayer` (module swap, the layer itself
untouched). Order: after the weight flags (the routers are fitted on the variant that will run).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..report import ModReport, MoDStats
from . import FlagError, FlagSpec, register


def _parse(value: str | None) -> float:
    c = float(value)  # ValueError -> FlagError naming the flag, in parse_flags
    if not 0.0 < c <= 1.0:
        raise ValueError("capacity C must be in (0, 1]")
    return c


register(
    FlagSpec(
        name="mod",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary=(
            "Mixture of Depths: per temporal layer, a linear router on the residual stream lets only a share "
            "C of tokens through the layer (the rest skip it and write no KV entry). The checkpoint has no "
            "routers: they are FITTED (ridge regression, seeded, on the model's own stream) to predict the "
            "norm of each layer's update, with a threshold set so a share C of calibration tokens is "
            "processed; not trained end to end, so quality loss is measured, not assumed. mod=1 is exact"
        ),
        parse=_parse,
        default="0.5",
        order=50,
    )
)


def apply(lm, codec, capacity: float) -> ModReport:
    try:
        return ModReport(stats=install(lm, capacity, codec=codec))
    except ValueError as exc:
        raise FlagError(f"mod={capacity}: {exc}") from None


CALIBRATION_STEPS = 64
CALIBRATION_SEED = 1234
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # ridge strengths, relative to the feature variance


def layer_linear_flops(layer: torch.nn.Module) -> int:
    """Matmul FLOPs of one token through a layer: 2 x in x out for every linear it calls once."""
    attn = layer.self_attn
    ffn = layer.gating[0] if isinstance(layer.gating, torch.nn.ModuleList) else layer.gating
    linears = [attn.in_projs[0], attn.out_projs[0], ffn.linear_in, ffn.linear_out]
    return sum(2 * lin.in_features * lin.out_features for lin in linears)


def _stream_with_hooks(lm, codes: torch.Tensor, seed: int, attach) -> None:
    """Stream calibration user codes [1, n_user, T] through a fresh streamer (baseline sampler, global
    random state left as it was) with ``attach(i, layer) -> handle`` hooks on every temporal layer."""
    from ..quant.calibrate import stream_codes

    handles = [attach(i, layer) for i, layer in enumerate(lm.transformer.layers)]
    try:
        stream_codes(lm, codes, seed)
    finally:
        for h in handles:
            h.remove()


def collect_updates(lm, codes: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per temporal layer: the residual entering it [N, dim] and the norm of its update [N]."""
    records: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in lm.transformer.layers]

    def hook(i: int, layer: nn.Module):
        def record(module, args, output) -> None:
            x = args[0]
            records[i].append((x[:, 0].float().clone(), (output - x)[:, 0].float().norm(dim=-1)))

        return layer.register_forward_hook(record)

    _stream_with_hooks(lm, codes, seed, hook)
    return [(torch.cat([r[0] for r in rec]), torch.cat([r[1] for r in rec])) for rec in records]


def collect_scores(lm, codes: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Per routed temporal layer: the router scores of the tokens reaching it [N]."""
    records: list[list[torch.Tensor]] = [[] for _ in lm.transformer.layers]

    def hook(i: int, layer: nn.Module):
        def record(module, args) -> None:
            records[i].append(module.score(args[0]).double())

        return layer.register_forward_pre_hook(record)

    _stream_with_hooks(lm, codes, seed, hook)
    return [torch.cat(rec) for rec in records]


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    mean_x, mean_y = x.mean(0), y.mean()
    xc = x - mean_x
    scale = lam * float(xc.pow(2).mean()) * x.shape[0] + 1e-12
    gram = xc.T @ xc + scale * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(gram, xc.T @ (y - mean_y))
    return w, float(mean_y - mean_x @ w)


def fit_router(x: torch.Tensor, y: torch.Tensor, folds: int = 4) -> tuple[torch.Tensor, float, float]:
    """Ridge regression y ~ x.w + b (fp64), its strength chosen by k-fold cross-validation (with fewer
    tokens than dimensions a plain least-squares fit would interpolate and predict nothing).

    Returns (w [dim], b, R^2 on held-out folds at the chosen strength)."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    fold = torch.arange(n) % folds
    total = float((y - y.mean()).pow(2).sum())
    best = (-float("inf"), RIDGE_GRID[0])
    for lam in RIDGE_GRID:
        resid = 0.0
        for f in range(folds):
            train, test = fold != f, fold == f
            w, b = _ridge(x[train], y[train], lam)
            resid += float((y[test] - x[test] @ w - b).pow(2).sum())
        r2 = 1.0 - resid / total if total > 0 else 0.0
        best = max(best, (r2, lam))
    w, b = _ridge(x, y, best[1])
    return w, b, best[0]


def install(
    lm, capacity: float, *, codec=None, steps: int = CALIBRATION_STEPS, seed: int = CALIBRATION_SEED
) -> MoDStats:
    """Fit routers on the model's own stream, then route every temporal layer (wrap it in a RoutedLayer).
    With ``codec``, the stream's user codes are the codec's codes of calibration speech (what the model
    hears when it runs); without, seeded random codes.

    Two seeded passes: the first (every layer running) fits the routers and a static threshold per layer;
    the second runs with that routing on and keeps the scores each layer then sees, which fill the
    initial window of the causal top-C rule (see module docstring).
    """
    if not 0.0 < capacity <= 1.0:
        raise ValueError(f"capacity must be in (0, 1], got {capacity}")
    layers = lm.transformer.layers
    stats = MoDStats(capacity, [layer_linear_flops(layer) for layer in layers], router_flops=2 * lm.dim)
    data = None
    if capacity < 1.0:
        from ..quant.calibrate import calibration_user_codes

        codes, stats.calibration = calibration_user_codes(lm, codec, 1, steps, seed)
        data = collect_updates(lm, codes, seed)
    for i, layer in enumerate(list(layers)):
        if data is not None:
            x, y = data[i]
            w, b, r2 = fit_router(x, y)
            window = torch.quantile(x.double() @ w + b, 1.0 - capacity).expand(1)
            stats.fit_r2.append(r2)
        else:  # C = 1 routes nothing away: the layer runs exactly as the baseline's
            w, b, window = torch.zeros(lm.dim, dtype=torch.float64), 0.0, None
        router = w.to(device=lm.device, dtype=torch.float32)
        layers[i] = RoutedLayer(layer, i, router, b, capacity, window, stats)
    if data is not None:
        codes, _ = calibration_user_codes(lm, codec, 1, steps, seed + 1)
        for layer, scores in zip(layers, collect_scores(lm, codes, seed + 1)):
            layer.initial_window = scores.float().to(lm.device)
    stats.reset()  # count only what the variant streams, not its calibration
    return stats


@dataclass
class _Window:
    scores: torch.Tensor  # [B, W] recent router scores of one stream's layer
    cursor: int = 0


class RoutedLayer(nn.Module):
    """A temporal layer behind a Mixture-of-Depths router: the layer runs only for tokens the router
    keeps; a skipped token's residual passes through and the layer writes no KV entry for it."""

    def __init__(
        self,
        layer: nn.Module,
        index: int,
        router: torch.Tensor,
        bias: float,
        capacity: float,
        initial_window: torch.Tensor | None,
        stats: MoDStats,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("router", router, persistent=False)
        self.bias = bias
        self.capacity = capacity
        self.index = index
        self.initial_window = initial_window  # scores a fresh stream's window starts from; None: no routing
        self.stats = stats
        # One window per streamer, keyed by that streamer's cache of this layer.
        self._windows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def self_attn(self) -> nn.Module:
        return self.layer.self_attn

    @property
    def gating(self) -> nn.Module:
        return self.layer.gating

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Router score of each item's token: x [B, 1, dim] -> [B]."""
        return x[:, 0].float() @ self.router + self.bias

    def _window(self, cache, positions: torch.Tensor) -> _Window:
        """This stream's window of recent scores [B, W], restarted from the calibration scores for items
        at position 0."""
        initial = self.initial_window
        window = self._windows.get(cache)
        if window is None:
            window = self._windows[cache] = _Window(initial.expand(positions.shape[0], -1).clone())
        window.scores = torch.where((positions == 0)[:, None], initial, window.scores)
        return window

    def forward(self, x, step, cache, weight_index: int = 0):
        stats = self.stats
        B = x.shape[0]
        stats.seen[self.index] += B
        if self.initial_window is None:
            stats.processed[self.index] += B
            return self.layer(x, step, cache, weight_index)
        score = self.score(x)
        window = self._window(cache, step.positions)
        W = window.scores.shape[1]
        # Causal top-C: keep the token when its score beats a share (1 - C) of the last W scores.
        keep = (window.scores < score[:, None]).sum(dim=1) >= math.ceil((1.0 - self.capacity) * W - 1e-9)
        window.scores[:, window.cursor] = score
        window.cursor = (window.cursor + 1) % W
        n_keep = int(keep.sum())
        stats.processed[self.index] += n_keep
        if n_keep == 0:
            return x  # skip: residual passes through, nothing written to this layer's cache
        # The cache of this layer has holes where tokens skipped: attend through the position mask,
        # never the no-mask fast path that assumes every slot is filled (nor flash's per-item lengths).
        routed = dataclasses.replace(step, common=None, contiguous=False)
        out = self.layer(x, routed, cache, weight_index)
        if n_keep == B:
            return out
        # Mixed batch: skipped items keep their residual and their slot is emptied again. The slot held
        # position p - capacity before, which no query at p or later can see, so emptying it is exact.
        slots = (step.positions % cache.capacity)[:, None]
        held = cache.slot_positions.gather(1, slots)
        cache.slot_positions.scatter_(1, slots, torch.where(keep[:, None], held, torch.full_like(held, -1)))
        return torch.where(keep[:, None, None], out, x)
