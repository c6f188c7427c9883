"""The eighteen enhancements of the Vemi document (seed-enhancements.md), each with its claims as numbers.

Each claim is the ratio variant / baseline that the document promises for one metric: "40-60% reduction
in generation time" is a time ratio in [0.40, 0.60]; "3-5x throughput" a throughput ratio in [3, 5].
"N% faster" is read as time x (1 - N%), the reading that matches the document's own headline ("70-80%
latency reduction (from 200ms to 40-60ms)"). A claim is met when the measured ratio is at least as good as
the smallest improvement claimed (``threshold``): lower-is-better metrics need ratio <= hi, higher-is-better
ones ratio >= lo. With a confidence interval: "meets" when the whole interval is on the good side,
"falls short" when all of it is on the bad side, else "inconclusive".

Status is derived at run time from ``reference_model.enhancements.available_flags()``: an enhancement is
implemented when one of its flags is registered; the training-only ones say why they cannot be.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Abstract metric -> what records stand for it: (glob over the record's metric name, required condition
# values; "*" = the key must be present), and its direction. These follow the names the measurement kinds
# write (latency: frame_time_pNN_ms by stage; memory: weight_bytes, kv_cache_bytes_per_stream, peak_*;
# throughput/serving: frames_per_second, throughput, goodput, ttff_*; quality: pesq*, wer*, ...).
METRICS: dict[str, dict[str, Any]] = {
    "lm_step_time": {"better": "lower", "match": [("frame_time_p50_ms", {"stage": "lm"}), ("lm_step*", {})]},
    "frame_latency": {
        "better": "lower",
        "match": [
            ("frame_time_p50_ms", {"stage": "total"}),
            ("end_to_end_p50_ms", {}),
            ("frame_latency_p50", {}),
        ],
    },
    "first_audio_latency": {"better": "lower", "match": [("ttff_p50", {}), ("first_audio*", {})]},
    # the attention kind: the attention op alone, per KV fill level (and prefill block)
    "attention_time": {
        "better": "lower",
        "match": [
            ("attention_time", {}),
            ("attention*_ms", {}),
            ("frame_time_p50_ms", {"stage": "attention"}),
        ],
    },
    "attention_memory": {"better": "lower", "match": [("attention_peak_memory", {})]},
    "latency_jitter": {"better": "lower", "match": [("jitter_std_ms", {}), ("jitter_p99_minus_p50_ms", {})]},
    "kv_cache_bytes": {"better": "lower", "match": [("kv_cache_bytes_per_stream", {})]},
    # the rise over the fresh build, not the process high-water mark (which grows over a run)
    "peak_memory": {"better": "lower", "match": [("peak_*_increase_bytes", {})]},
    "weight_bytes": {"better": "lower", "match": [("weight_bytes", {"component": "total"})]},
    "flops": {"better": "lower", "match": [("flops*", {}), ("layers_executed*", {}), ("layer_share*", {})]},
    "throughput": {
        "better": "higher",
        "match": [
            ("throughput", {}),
            ("frames_per_second", {}),
            ("max_realtime_streams", {}),
            ("goodput", {}),
        ],
    },
    "fidelity": {"better": "higher", "match": [("*token_agreement*", {})]},
    "codec_quality": {
        "better": "higher",
        "match": [("pesq*", {}), ("stoi*", {}), ("estoi*", {}), ("si_sdr*", {})],
    },
    "naturalness": {"better": "higher", "match": [("dnsmos*", {})]},
    "speaker_similarity": {"better": "higher", "match": [("speaker_sim*", {}), ("spk_sim*", {})]},
    "wer_noisy": {"better": "lower", "match": [("wer*", {"snr_db": "*"})]},
    "quality": {"better": "mixed", "match": [("wer*", {}), ("pesq*", {}), ("dnsmos*", {})]},
    "user_satisfaction": {"better": "higher", "match": []},
}

MATRIX_ORDER = (
    "Flash Attention",
    "4-bit Quantization",
    "Speculative Decoding",
    "GQA",
    "Multi-Resolution Codec",
    "RLHF",
    "Prosody Modeling",
    "Dynamic Bitrate",
    "Noise Robustness",
    "MoD",
)


@dataclass(frozen=True)
class Claim:
    metric: str  # a key of METRICS
    text: str  # the document's words
    lo: float | None  # claimed ratio variant / baseline, low end
    hi: float | None  # high end (lo == hi for a single number)
    compare: str = "ratio"  # "ratio": variant / baseline; "value": the record's own value (fidelity)
    flags: tuple[str, ...] = ()  # flags the claim is about (default: every flag of its enhancement)

    @property
    def better(self) -> str:
        return METRICS[self.metric]["better"]

    @property
    def threshold(self) -> float | None:
        """The least improvement the document claims: the bar a measurement must clear."""
        return self.hi if self.better == "lower" else self.lo


@dataclass(frozen=True)
class FlagValues:
    """Which values of a flag are the enhancement; the others are what it is measured against.

    ``default`` is the value the model runs with when a variant does not set the flag (attn: sdpa).
    """

    flag: str
    values: tuple[str, ...]
    default: str | None = None


@dataclass(frozen=True)
class Enhancement:
    id: str
    title: str
    section: str
    summary: str
    claims: tuple[Claim, ...]
    matrix_name: str | None  # name in the document's priority matrix, None when not in it
    impact: str  # the matrix's columns, or "not in matrix"
    effort: str
    priority: str
    phase: str  # the roadmap phase that lists it, or "not in roadmap"
    metrics: tuple[str, ...]  # what it should move (keys of METRICS)
    kinds: tuple[str, ...]  # measurement kinds that measure it
    device: str
    flags: tuple[str, ...]  # flag names that implement it (empty: cannot be built at inference time)
    not_implementable: str = ""  # why there is no flag (training-only, needs data we do not have...)
    notes: str = ""
    flag_values: tuple[FlagValues, ...] = ()  # flags of which only some values are the enhancement


def _c(
    metric: str,
    text: str,
    lo: float | None,
    hi: float | None = None,
    compare: str = "ratio",
    flags: tuple[str, ...] = (),
) -> Claim:
    return Claim(metric, text, lo, lo if hi is None else hi, compare, flags)


_NM = ("not in matrix", "not in matrix", "not in matrix")

ENHANCEMENTS: tuple[Enhancement, ...] = (
    Enhancement(
        "1.1",
        "Multi-Resolution Codec Streaming",
        "1. Latency Reduction Techniques",
        "Codec streams at several frame rates (12/23/47 Hz), coarse first, refined later (SNAC-style).",
        (_c("first_audio_latency", "20-30% reduction in perceived latency", 0.70, 0.80),),
        "Multi-Resolution Codec",
        "Medium",
        "High",
        "High",
        "Phase 2",
        ("first_audio_latency", "codec_quality"),
        ("latency", "codec"),
        "any",
        (),
        not_implementable="training-only: needs a codec trained at several frame rates and an LM trained on "
        "its tokens; no inference-time transform of Mimi gives multi-rate streams",
    ),
    Enhancement(
        "1.2",
        "Speculative Decoding",
        "1. Latency Reduction Techniques",
        "Draft several audio tokens per step, verify them in one parallel pass.",
        (
            _c("lm_step_time", "40-60% reduction in generation time", 0.40, 0.60),
            _c("lm_step_time", "2-3x speedup in generation", 1 / 3, 1 / 2),
            _c(
                "fidelity",
                "verification step ensures quality (read as 100% token agreement with the baseline)",
                1.0,
                compare="value",
            ),
        ),
        "Speculative Decoding",
        "High",
        "High",
        "High",
        "Phase 2",
        ("lm_step_time", "frame_latency", "fidelity"),
        ("latency", "fidelity"),
        "any",
        ("speculative",),
    ),
    Enhancement(
        "1.3",
        "KV-Cache Optimization",
        "1. Latency Reduction Techniques",
        "Rotating KV cache with compression of older entries.",
        (
            _c("lm_step_time", "15-25% faster inference", 0.75, 0.85),
            _c("kv_cache_bytes", "30% memory reduction", 0.70),
        ),
        None,
        *_NM,
        "Phase 1",
        ("lm_step_time", "kv_cache_bytes", "fidelity"),
        ("latency", "memory", "fidelity"),
        "any",
        ("kv-compress",),
        notes="moshi's PyTorch cache is already a rotating ring buffer; the flag adds int8 compression",
    ),
    Enhancement(
        "2.1",
        "Grouped Query Attention (GQA)",
        "2. Model Architecture Improvements",
        "Fewer KV heads than query heads (7B: 32 -> 8; 2B: 20 -> 5).",
        (
            _c("lm_step_time", "25-35% faster inference", 0.65, 0.75),
            _c("kv_cache_bytes", "4x KV-cache reduction", 0.25),
        ),
        "GQA",
        "High",
        "Medium",
        "High",
        "Phase 2",
        ("lm_step_time", "kv_cache_bytes", "fidelity"),
        ("latency", "memory", "fidelity"),
        "any",
        ("gqa",),
        notes="on a checkpoint trained with full MHA, KV heads are mean-pooled (no uptraining here): the "
        "fidelity suite measures the quality cost the document calls 'minimal'",
    ),
    Enhancement(
        "2.2",
        "Flash Attention Integration",
        "2. Model Architecture Improvements",
        "Fused attention kernels (FlashAttention 2/3).",
        (
            _c("attention_time", "50-70% faster attention", 0.30, 0.50),
            _c("attention_time", "2-4x faster attention computation", 0.25, 0.50),
            _c("attention_memory", "40% memory reduction", 0.60),
        ),
        "Flash Attention",
        "High",
        "Low",
        "Critical",
        "Phase 1",
        ("attention_time", "attention_memory", "lm_step_time", "peak_memory"),
        ("attention", "latency", "memory"),
        "attn=flash needs CUDA + flash-attn; attn=sdpa (a fused kernel) runs on CPU too",
        ("attn",),
        notes="attn=eager is the document's 'standard attention', the baseline, never the enhancement; "
        "the memory claim is read as the attention op's own peak (attention_peak_memory): a process's "
        "peak is weights and KV cache, which no attention kernel changes",
        flag_values=(FlagValues("attn", ("sdpa", "flash"), default="sdpa"),),
    ),
    Enhancement(
        "2.3",
        "Mixture of Depths (MoD)",
        "2. Model Architecture Improvements",
        "Skip transformer layers for low-importance tokens.",
        (
            _c("lm_step_time", "30-40% faster inference", 0.60, 0.70),
            _c("fidelity", "<2% quality loss", 0.98, compare="value"),
            _c("flops", "30-40% FLOPs reduction", 0.60, 0.70),
        ),
        "MoD",
        "Medium",
        "High",
        "Low",
        "not in roadmap",
        ("lm_step_time", "flops", "fidelity"),
        ("latency", "fidelity"),
        "any",
        ("mod",),
        notes="real MoD trains its routers; without training the flag routes by a fixed capacity, so the "
        "fidelity cost is measured, not assumed",
    ),
    Enhancement(
        "3.1",
        "Semantic-Acoustic Dual-Stream Codec",
        "3. Audio Codec Enhancements",
        "First codebooks semantic, the rest acoustic (SAC-style).",
        (_c("codec_quality", "15-20% better quality at same bitrate", 1.15, 1.20),),
        None,
        *_NM,
        "not in roadmap",
        ("codec_quality",),
        ("codec",),
        "any",
        (),
        not_implementable="Mimi already splits one semantic codebook (distilled from WavLM) from the "
        "acoustic ones; a different split needs a retrained codec",
    ),
    Enhancement(
        "3.2",
        "Dynamic Bitrate Adaptation",
        "3. Audio Codec Enhancements",
        "Choose the number of codebooks per frame from the content's complexity.",
        (_c("frame_latency", "10-15% average latency reduction", 0.85, 0.90),),
        "Dynamic Bitrate",
        "Medium",
        "Medium",
        "Medium",
        "Phase 3",
        ("frame_latency", "codec_quality"),
        ("latency", "codec"),
        "any",
        ("dynamic-bitrate",),
    ),
    Enhancement(
        "3.3",
        "Improved Quantization (ERVQ)",
        "3. Audio Codec Enhancements",
        "Intra/inter-codebook optimisation of the RVQ.",
        (_c("codec_quality", "10-15% quality improvement", 1.10, 1.15),),
        None,
        *_NM,
        "not in roadmap",
        ("codec_quality",),
        ("codec",),
        "any",
        (),
        not_implementable="training-only: ERVQ changes how the codebooks are learned; it needs codec "
        "training on a speech corpus",
    ),
    Enhancement(
        "4.1",
        "Distillation from Larger Models",
        "4. Training Optimizations",
        "Distil the 7B into a smaller model.",
        (_c("quality", "2B model reaches 90-95% of 7B quality", 0.90, 0.95),),
        None,
        *_NM,
        "Phase 2",
        ("quality",),
        ("wer", "fidelity"),
        "any",
        (),
        not_implementable="training-only: needs the 7B teacher's weights and a training corpus",
    ),
    Enhancement(
        "4.2",
        "Reinforcement Learning from Human Feedback (RLHF)",
        "4. Training Optimizations",
        "Reward model from human preferences, PPO/DPO fine-tuning.",
        (_c("user_satisfaction", "20-30% improvement in user satisfaction scores", 1.20, 1.30),),
        "RLHF",
        "High",
        "Very High",
        "Medium",
        "Phase 3",
        ("user_satisfaction",),
        (),
        "any",
        (),
        not_implementable="training-only: needs human preference data and a reward model; user "
        "satisfaction cannot be measured offline",
    ),
    Enhancement(
        "4.3",
        "Curriculum Learning for Latency",
        "4. Training Optimizations",
        "Lower the training latency target progressively (200 -> 160 ms).",
        (_c("quality", "15-20% better quality at target latency", 1.15, 1.20),),
        None,
        *_NM,
        "not in roadmap",
        ("quality",),
        ("wer",),
        "any",
        (),
        not_implementable="training-only: a training schedule; nothing to switch on at inference",
    ),
    Enhancement(
        "5.1",
        "Model Quantization (4-bit, GPTQ/AWQ)",
        "5. System-Level Optimizations",
        "Weight-only int8/int4 with calibration (GPTQ, AWQ), LM and codec.",
        (
            _c("lm_step_time", "50-70% faster on consumer hardware", 0.30, 0.50, flags=("int4",)),
            _c("lm_step_time", "2x faster inference", 0.50, flags=("int4",)),
            _c("weight_bytes", "4x memory reduction", 0.25, flags=("int4", "codec-int4")),
        ),
        "4-bit Quantization",
        "High",
        "Medium",
        "Critical",
        "Phase 1",
        ("lm_step_time", "weight_bytes", "peak_memory", "fidelity", "codec_quality"),
        ("latency", "memory", "fidelity", "codec"),
        "any",
        ("int4", "int8", "codec-int4", "codec-int8"),
        notes="the claims are for 4-bit against the document's bf16; a tiny-preset run in fp32 makes the "
        "memory ratio look twice as good as against bf16",
    ),
    Enhancement(
        "5.2",
        "Batched Inference Optimization (continuous batching)",
        "5. System-Level Optimizations",
        "Request queueing and continuous batching (vLLM-style).",
        (_c("throughput", "3-5x throughput improvement", 3.0, 5.0),),
        None,
        *_NM,
        "not in roadmap",
        ("throughput", "first_audio_latency"),
        ("serving", "throughput"),
        "any",
        ("continuous-batching",),
    ),
    Enhancement(
        "5.3",
        "CUDA Graph Optimization",
        "5. System-Level Optimizations",
        "Capture the whole streaming step as CUDA graphs (and torch.compile).",
        (
            _c("frame_latency", "20-30% latency reduction", 0.70, 0.80),
            _c("lm_step_time", "20-30% faster inference", 0.70, 0.80),
        ),
        None,
        *_NM,
        "Phase 1",
        ("frame_latency", "lm_step_time", "latency_jitter"),
        ("latency",),
        "cuda-graphs needs CUDA; compile runs on CPU too",
        ("cuda-graphs", "compile"),
    ),
    Enhancement(
        "6.1",
        "Prosody Modeling",
        "6. Quality Enhancements",
        "Explicit prosody encoder and conditioning.",
        (_c("naturalness", "25-35% improvement in naturalness scores", 1.25, 1.35),),
        "Prosody Modeling",
        "Medium",
        "High",
        "Medium",
        "Phase 3",
        ("naturalness",),
        ("codec",),
        "any",
        (),
        not_implementable="training-only: needs a prosody encoder trained with prosody-labelled data",
    ),
    Enhancement(
        "6.2",
        "Multi-Speaker Consistency",
        "6. Quality Enhancements",
        "Better speaker embeddings, a speaker verification loss, speaker memory.",
        (_c("speaker_similarity", "30-40% better speaker consistency", 1.30, 1.40),),
        None,
        *_NM,
        "not in roadmap",
        ("speaker_similarity",),
        ("speaker",),
        "any",
        (),
        not_implementable="training-only: a training loss and conditioning; the speaker suite measures "
        "the baseline's consistency",
    ),
    Enhancement(
        "6.3",
        "Noise Robustness",
        "6. Quality Enhancements",
        "Multi-condition training with noise augmentation (SNR 5-20 dB).",
        (_c("wer_noisy", "40-50% better performance in noisy conditions", 0.50, 0.60),),
        "Noise Robustness",
        "Medium",
        "Low",
        "Medium",
        "Phase 3",
        ("wer_noisy",),
        ("noise",),
        "any",
        (),
        not_implementable="training-only: data augmentation during training; the noise suite measures the "
        "baseline's robustness",
    ),
)

BY_ID = {e.id: e for e in ENHANCEMENTS}


# --- status and listing -------------------------------------------------------------------------------
def status(entry: Enhancement, flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """ "implemented" when one of the entry's flags is registered in the model, else why not."""
    if flags is None:
        from reference_model.enhancements import available_flags

        flags = available_flags()
    have = [f for f in entry.flags if f in flags]
    missing = [f for f in entry.flags if f not in flags]
    if have:
        return {"status": "implemented", "flags_registered": have, "flags_missing": missing, "reason": ""}
    if not entry.flags:
        return {
            "status": "not implemented",
            "flags_registered": [],
            "flags_missing": [],
            "reason": entry.not_implementable,
        }
    return {
        "status": "not implemented",
        "flags_registered": [],
        "flags_missing": missing,
        "reason": f"flag {', '.join(missing)} not registered in reference_model.enhancements",
    }


def suites_measuring(entry: Enhancement, suites: Mapping[str, Path] | None = None) -> list[str]:
    """Suites that run a variant with one of the entry's flags; else suites with one of its kinds."""
    from .suites import SuiteError, load_suite

    if suites is None:
        from .suites import available_suites

        suites = available_suites()
    with_flag, with_kind = [], []
    for name, path in sorted(suites.items()):
        try:
            s = load_suite(str(path), known_kinds=_AnyKind(), check_flags=False)
        except SuiteError:
            continue
        names = {f.partition("=")[0] for v in s.variants for f in v.flags}
        if names & set(entry.flags):
            with_flag.append(name)
        elif set(s.kinds) & set(entry.kinds):
            with_kind.append(name)
    return with_flag or with_kind


class _AnyKind(dict):
    """Accepts every kind name: listing suites must not import every measurement module."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> None:
        return None


def registry_table(flags: Mapping[str, Any] | None = None, with_suites: bool = True) -> list[dict[str, Any]]:
    """Every entry as a plain dict (what `vemi-eval list flags --json` prints)."""
    if flags is None:
        from reference_model.enhancements import available_flags

        flags = available_flags()
    rows = []
    for e in ENHANCEMENTS:
        d = asdict(e)
        d["claims"] = [{**asdict(c), "better": c.better, "threshold": c.threshold} for c in e.claims]
        d.update(status(e, flags))
        if with_suites:
            d["suites"] = suites_measuring(e)
        rows.append(d)
    return rows


def flag_table(flags: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every registered flag: name, stage, summary, default, group, conflicts, CUDA need, enhancement id."""
    if flags is None:
        from reference_model.enhancements import available_flags

        flags = available_flags()
    owner = {f: e.id for e in ENHANCEMENTS for f in e.flags}
    return [
        {
            "name": name,
            "enhancement": owner.get(name),
            "stage": spec.stage,
            "summary": spec.summary,
            "default": spec.default,
            "group": spec.group,
            "conflicts": sorted(spec.conflicts),
            "requires_cuda": spec.requires_cuda,
        }
        for name, spec in sorted(flags.items())
    ]


# --- the priority matrix, measured ------------------------------------------------------------------
def _matches(record: Mapping[str, Any], claim: Claim) -> bool:
    """Does a record stand for the claim's metric (name glob and required condition values)?"""
    name, cond = record.get("metric", ""), record.get("condition") or {}
    for pattern, where in METRICS[claim.metric]["match"]:
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if all(k in cond and (v == "*" or cond[k] == v) for k, v in where.items()):
            return True
    return False


def verdict(claim: Claim, value: float | None, low: float | None, high: float | None) -> str:
    """meets / falls short / inconclusive for one measured ratio (or value) against a claim."""
    t = claim.threshold
    if value is None or t is None:
        return "not measured"
    better = claim.better
    if better == "mixed":
        return "not comparable"
    good = (lambda x: x <= t) if better == "lower" else (lambda x: x >= t)
    if low is None or high is None:
        return "meets (no CI)" if good(value) else "falls short (no CI)"
    if good(low) and good(high):
        return "meets"
    if not good(low) and not good(high):
        return "falls short"
    return "inconclusive"


def _variant_flags(results: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """Variant name -> {flag name: value (None when written without one)}."""
    out = {}
    for v in results.get("variants", []):
        pairs = (f.partition("=") for f in v.get("flags", []))
        out[v["name"]] = {name.strip(): (value.strip() if eq else None) for name, eq, value in pairs}
    return out


def attributed(
    entry: Enhancement,
    claim: Claim,
    variant_flags: Mapping[str, str | None],
    baseline_flags: Mapping[str, str | None],
) -> bool:
    """Does a variant, measured against a baseline, stand for the entry's claim?

    It must use one of the claim's flags; where the entry says which values of a flag are the enhancement
    (``flag_values``), its value must be one of them and differ from the baseline's (the flag's default
    when the baseline does not set it): attn=eager is the baseline of 2.2, and attn=sdpa against a
    baseline that already runs sdpa measures nothing of it.
    """
    used = set(claim.flags or entry.flags) & set(variant_flags)
    if not used:
        return False
    for rule in entry.flag_values:
        if rule.flag not in used:
            continue
        value = variant_flags[rule.flag]
        if value not in rule.values or baseline_flags.get(rule.flag, rule.default) == value:
            return False
    return True


def priority_matrix(
    results: Iterable[Mapping[str, Any]], flags: Mapping[str, Any] | None = None
) -> list[dict]:
    """One row per enhancement: the document's impact/effort/priority and claims beside what the runs
    measured (every record of a variant ``attributed`` to the entry whose metric matches a claim)."""
    results = list(results)
    rows = []
    for e in ENHANCEMENTS:
        row = {
            "id": e.id,
            "title": e.title,
            "matrix_name": e.matrix_name,
            "impact": e.impact,
            "effort": e.effort,
            "priority": e.priority,
            "phase": e.phase,
            **status(e, flags),
            "claims": [],
        }
        for c in e.claims:
            measured = []
            for res in results:
                vflags = _variant_flags(res)
                base = next((v["name"] for v in res.get("variants", []) if v.get("is_baseline")), None)
                for m in res.get("metrics", []):
                    if m.get("status") not in ("ok", "invalid") or not _matches(m, c):
                        continue
                    if m.get("variant") == base:
                        continue
                    if not attributed(e, c, vflags.get(m.get("variant"), {}), vflags.get(base, {})):
                        continue
                    if c.compare == "value":
                        val, lo, hi = m.get("value"), m.get("ci_low"), m.get("ci_high")
                    else:
                        val, lo, hi = (
                            m.get("ratio_to_baseline"),
                            m.get("ratio_ci_low"),
                            m.get("ratio_ci_high"),
                        )
                    if val is None:
                        continue
                    measured.append(
                        {
                            "run": res.get("_path") or res.get("suite", {}).get("name"),
                            "suite": m.get("suite"),
                            "variant": m.get("variant"),
                            "metric": m.get("metric"),
                            "condition": m.get("condition", {}),
                            "measured": val,
                            "ci_low": lo,
                            "ci_high": hi,
                            "status": m.get("status"),
                            "verdict": verdict(c, val, lo, hi),
                        }
                    )
            row["claims"].append(
                {
                    "metric": c.metric,
                    "text": c.text,
                    "claimed_low": c.lo,
                    "claimed_high": c.hi,
                    "compare": c.compare,
                    "better": c.better,
                    "threshold": c.threshold,
                    "measurements": measured,
                    "verdict": _overall(measured),
                }
            )
        rows.append(row)
    return rows


def _overall(measured: list[dict[str, Any]]) -> str:
    if not measured:
        return "not measured"
    kinds = {m["verdict"].split(" (")[0] for m in measured}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {"meets", "inconclusive"} or kinds <= {"falls short", "inconclusive"}:
        return "inconclusive"
    return "mixed"
