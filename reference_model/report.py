"""What the flags of a built model did and what they count, in one typed object: ``duplex.report()``.

Every flag's ``apply`` returns one entry (a subclass of :class:`FlagReport`); the build keeps them and
:meth:`reference_model.duplex.DuplexModel.report` hands back a :class:`ModelReport` with those entries
(in the order the flags were applied) and the kernels the model actually ran. Counters that keep
counting while the model streams (speculative, Mixture of Depths, bitrate) are live objects held by their
entry: read them after the run, ``reset()`` them before it.

The harness reads this module's types and nothing else of how a flag is implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the counters live with their algorithms
    from .enhancements.cuda_graphs import GraphedCallable
    from .enhancements.dynamic_bitrate import BitrateMeter
    from .enhancements.mod import MoDStats
    from .enhancements.speculative import SpecStats
    from .quant.swap import QuantSummary


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
    graphs: dict[str, GraphedCallable]  # live: part name -> its graphed callable (captures, replays)
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
