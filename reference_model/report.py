"""What the flags of a built model did and what they count, in one typed object: ``duplex.report()``.

Every flag's ``apply`` returns one entry (a subclass of :class:`FlagReport`); the build keeps them and
:meth:`reference_model.duplex.DuplexModel.report` hands back a :class:`ModelReport` with those entries
(in the order the flags were applied) and the kernels the model actually ran. Counters that keep
counting while the model streams (speculative, Mixture of Depths, bitrate) are live objects held by their
entry: read them after the run, ``reset()`` them before it.

The harness reads this module's types and nothing else of how a flag is implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import torch

    from .quant.swap import QuantSummary


# --- live counters -------------------------------------------------------------------------------------
# The counters the flags update while the model streams live here, beside the entries that hold them, so
# that the enhancement modules import this module and never the reverse.
@dataclass
class MoDStats:
    """Counters of the flag (``ModReport.stats``): tokens seen and processed per temporal layer, and
    matmul FLOPs.

    FLOPs are those of the layer's linear projections (2 x in x out per token): attention scores and
    values (which shrink too, since skipped tokens leave no keys) are not counted; the router's own
    dot product is counted as overhead.
    """

    capacity: float
    layer_flops: list[int]  # linear FLOPs of one token through each layer
    router_flops: int  # FLOPs of one router score
    seen: list[int] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)
    fit_r2: list[float] = field(default_factory=list)  # how well each router predicts its update norm
    # What the routers were fitted on: the codec's codes of speech where the variant has a codec (what
    # the model hears), else random codes. Either way a fresh stream's first frames are processed more
    # than C (scripts/mod_share_by_calibration.py, C = 0.5, bundled tiny LM 06f7cbe4, 12 frames of
    # speech: 0.50-0.92 per layer fitted on speech, 0.58-0.83 on random codes): early positions have
    # larger updates.
    calibration: str = "random user codes"

    def __post_init__(self) -> None:
        self.seen = [0] * len(self.layer_flops)
        self.processed = [0] * len(self.layer_flops)

    def reset(self) -> None:
        self.seen = [0] * len(self.layer_flops)
        self.processed = [0] * len(self.layer_flops)

    @property
    def processed_share(self) -> list[float]:
        return [p / s if s else float("nan") for p, s in zip(self.processed, self.seen)]

    @property
    def flops_full(self) -> int:
        return sum(s * f for s, f in zip(self.seen, self.layer_flops))

    @property
    def flops_executed(self) -> int:
        routers = self.router_flops * sum(self.seen) if self.capacity < 1.0 else 0
        return sum(p * f for p, f in zip(self.processed, self.layer_flops)) + routers

    @property
    def flops_saved_share(self) -> float:
        full = self.flops_full
        return 1.0 - self.flops_executed / full if full else float("nan")

    def summary(self) -> dict[str, float]:
        shares = self.processed_share
        return {
            "capacity": self.capacity,
            "processed_share": sum(self.processed) / sum(self.seen) if sum(self.seen) else float("nan"),
            "processed_share_min_layer": min(shares) if shares else float("nan"),
            "processed_share_max_layer": max(shares) if shares else float("nan"),
            "flops_saved_share": self.flops_saved_share,
        }


@dataclass
class SpecStats:
    """Counters of the flag (``SpeculativeReport.stats``), read by the fidelity and latency suites."""

    k: int
    frames: int = 0
    rounds: int = 0  # verification passes
    proposed: int = 0  # draft tokens proposed (summed over batch items)
    accepted: int = 0  # draft tokens accepted (summed over batch items, before the batch-common cut)
    committed: int = 0  # tokens emitted (summed over batch items)
    rounds_per_frame: list[int] = field(default_factory=list)
    accepted_per_frame: list[float] = field(default_factory=list)  # acceptance rate of each frame

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def tokens_per_round(self) -> float:
        return self.committed / self.rounds if self.rounds else float("nan")

    def reset(self) -> None:
        self.frames = self.rounds = self.proposed = self.accepted = self.committed = 0
        self.rounds_per_frame.clear()
        self.accepted_per_frame.clear()

    def summary(self) -> dict[str, float]:
        return {
            "k": self.k,
            "frames": self.frames,
            "rounds": self.rounds,
            "acceptance_rate": self.acceptance_rate,
            "tokens_per_round": self.tokens_per_round,
            "rounds_per_frame": self.rounds / self.frames if self.frames else float("nan"),
        }


class BitrateMeter:
    """What the codec actually sent: bits per frame = codebooks x log2(bins) + the side information that
    says how many codebooks follow (ceil(log2(choices)) bits)."""

    def __init__(self, bins: int, frame_rate: float, fixed_codebooks: int, choices: int) -> None:
        self.bits_per_codebook = math.log2(bins)
        self.side_bits = math.ceil(math.log2(choices)) if choices > 1 else 0
        self.frame_rate = frame_rate
        self.fixed_kbps = fixed_codebooks * self.bits_per_codebook * frame_rate / 1000
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.codebooks = 0
        self.last: torch.Tensor | None = None  # [B, F] codebooks per frame of the last encode

    def add(self, n: torch.Tensor) -> None:
        self.last = n.detach().cpu()
        self.frames += n.numel()
        self.codebooks += int(n.sum())

    @property
    def mean_codebooks(self) -> float:
        return self.codebooks / self.frames if self.frames else float("nan")

    @property
    def mean_kbps(self) -> float:
        if not self.frames:
            return float("nan")
        bits = self.codebooks * self.bits_per_codebook + self.frames * self.side_bits
        return bits / self.frames * self.frame_rate / 1000


class GraphCounts(Protocol):
    """What a CUDA-graph part counts (``reference_model.enhancements.cuda_graphs.GraphedCallable``)."""

    replays: int
    capture_s: float

    @property
    def captured(self) -> int: ...


@dataclass
class FlagReport:
    """Base of every flag's entry. ``changes_arithmetic``: False for a flag that only changes how the
    model is scheduled or run (the same numbers, computed differently or served differently)."""

    changes_arithmetic: bool = field(default=True, kw_only=True)

    def build_stats(self) -> dict[str, float]:
        """One-off build-time costs (compile, capture: seconds, names ending in _s) and their counts,
        reported apart from steady state."""
        return {}


@dataclass
class AttentionReport(FlagReport):
    backend: str  # the backend asked for; what ran per layer is in ModelReport.kernels


@dataclass
class GQAReport(FlagReport):
    query_heads: int
    kv_heads_before: int
    kv_heads_after: int


@dataclass
class QuantReport(FlagReport):
    target: str  # "lm" or "codec"
    summary: QuantSummary  # layers quantized (name -> kernel), skipped (name -> why), bytes, cache use


@dataclass
class KVCompressReport(FlagReport):
    kind: str
    window: int  # recent frames kept in full precision


@dataclass
class ModReport(FlagReport):
    stats: MoDStats  # live: tokens seen/processed per layer, FLOPs, router fit


@dataclass
class BitrateReport(FlagReport):
    min_codebooks: int
    max_codebooks: int
    meter: BitrateMeter  # live: what the codec actually sent


@dataclass
class ServingPolicyReport(FlagReport):
    """A scheduling policy for many conversations on one batched model: the model's arithmetic is the
    baseline's; the harness's serving measurement reads ``policy`` and schedules accordingly."""

    policy: str
    changes_arithmetic: bool = field(default=False, kw_only=True)


@dataclass
class SpeculativeReport(FlagReport):
    k: int
    draft_layers: int
    stats: SpecStats  # live: rounds, proposed/accepted/committed tokens


@dataclass
class CompileReport(FlagReport):
    mode: str
    warmup_steps: int
    compile_s: float  # warm-up wall time, compilation included
    changes_arithmetic: bool = field(default=False, kw_only=True)

    def build_stats(self) -> dict[str, float]:
        return {"compile_s": self.compile_s, "compile_warmup_steps": float(self.warmup_steps)}


@dataclass
class GraphPart:
    name: str
    captured: int  # graphs captured (one per input signature)
    replays: int
    capture_s: float


@dataclass
class CudaGraphsReport(FlagReport):
    warmup_s: float  # warm-up + capture wall time
    graphs: dict[str, GraphCounts]  # live: part name -> its graphed callable (captures, replays)
    # The graphed temporal step attends over every one of the cache's slots from the first frame (masked),
    # where the eager step attends over the filled span only: same result, different work per frame.
    attention_span: str = "full capacity (masked)"
    changes_arithmetic: bool = field(default=False, kw_only=True)

    @property
    def parts(self) -> list[GraphPart]:
        """What each part has done so far."""
        return [GraphPart(n, g.captured, g.replays, g.capture_s) for n, g in self.graphs.items()]

    def build_stats(self) -> dict[str, float]:
        return {"cuda_graphs_s": self.warmup_s, "cuda_graph_capture_s": sum(p.capture_s for p in self.parts)}


E = TypeVar("E", bound=FlagReport)


@dataclass
class ModelReport:
    """The built variant: flags as applied (canonical order), one entry per flag, kernels actually run."""

    flags: list[str] = field(default_factory=list)
    entries: dict[str, FlagReport] = field(default_factory=dict)  # flag name -> its entry
    # attention kernels that ran, per transformer ("temporal", "depth") -> kernel name -> calls. Eager
    # calls are counted; a CUDA-graph part counts at capture (not per replay); a torch.compile'd part is
    # not counted (its Python does not run).
    attention_kernels: dict[str, dict[str, int]] = field(default_factory=dict)
    # the same, layer by layer: transformer -> one {kernel: calls} per layer
    attention_kernels_per_layer: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    linear_kernels: dict[str, int] = field(default_factory=dict)  # LM linear kernel -> layers using it
    dtype: str = ""
    codec_dtype: str = ""

    def get(self, kind: type[E]) -> E | None:
        """The entry of type ``kind`` (e.g. ``SpeculativeReport``), or None when no flag made one."""
        found = [e for e in self.entries.values() if isinstance(e, kind)]
        return found[0] if found else None

    def build_stats(self) -> dict[str, float]:
        """Build-time costs of every flag (compile, CUDA-graph capture), as :meth:`FlagReport.build_stats`."""
        out: dict[str, float] = {}
        for entry in self.entries.values():
            out.update(entry.build_stats())
        return out

    def kernels(self) -> dict[str, Any]:
        """What ran, for a result record: attention kernels per transformer, linear kernels, dtypes, and
        what the temporal step attends over (the filled span eagerly; every slot when graphed)."""
        graphs = self.get(CudaGraphsReport)
        same = all(
            len({tuple(sorted(layer)) for layer in layers}) <= 1
            for layers in self.attention_kernels_per_layer.values()
        )
        return {
            "attention": {part: dict(k) for part, k in self.attention_kernels.items()},
            # False: some layer ran another kernel set than its neighbours (see attention_kernels_per_layer)
            "attention_same_kernels_in_every_layer": same,
            "linear": dict(self.linear_kernels),
            "dtype": self.dtype,
            "codec_dtype": self.codec_dtype,
            "temporal_attention_span": graphs.attention_span if graphs is not None else "filled span",
        }
