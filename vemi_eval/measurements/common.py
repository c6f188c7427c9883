"""What the measurement kinds share, so that no kind imports another: ``RecordMaker`` (the records of one
measurement with the shared fields), and the opening of every codec-side kind (its parameters, the
variant's model and codec, the codec's rate, the data at that rate, a scorer). A library: it registers no
kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.byo import Dataset, dataset_for
from ..data.codec_roundtrip import STREAM_ABOVE_S, streams
from ..errors import DataError
from ..evaluators.scoring import Scorer, check_metrics
from ..records import INVALID, MetricRecord
from ..stats import bootstrap_ci, summarize
from . import MeasureContext, merged_params


class RecordMaker:
    """Builds the records of one measurement with the shared fields (suite, variant, seed, n_boot)."""

    def __init__(
        self, ctx: MeasureContext, n_boot: int, base_condition: dict[str, Any] | None = None
    ) -> None:
        self.ctx = ctx
        self.n_boot = n_boot
        self.base_condition = base_condition or {}
        self.records: list[MetricRecord] = []

    def plain(
        self,
        metric: str,
        value: float,
        unit: str,
        n: int,
        *,
        higher_is_better: bool | None = False,
        condition: dict[str, Any] | None = None,
        ci: tuple[float | None, float | None] = (None, None),
        extra: dict[str, Any] | None = None,
        samples: list[float] | None = None,
        statistic: str | None = None,
    ) -> MetricRecord:
        rec = MetricRecord(
            suite=self.ctx.suite,
            variant=self.ctx.variant.name,
            metric=metric,
            value=float(value),
            unit=unit,
            n=int(n),
            ci_low=ci[0],
            ci_high=ci[1],
            condition={**self.base_condition, **(condition or {})},
            higher_is_better=higher_is_better,
            samples=samples,
            statistic=statistic,
            extra=extra or {},
        )
        self.records.append(rec)
        return rec

    def stat(
        self,
        metric: str,
        samples: Iterable[float],
        statistic: str,
        unit: str,
        *,
        scale: float = 1.0,
        shift: float = 0.0,
        higher_is_better: bool | None = False,
        condition: dict[str, Any] | None = None,
    ) -> MetricRecord:
        """``statistic`` of ``scale * samples + shift`` with its bootstrap interval.

        The transformed samples travel in the record's ``samples`` with the statistic's name, so the runner
        can put a bootstrap interval on the ratio to the baseline (it resamples both sides).
        """
        a = np.asarray(list(samples), dtype=np.float64) * scale + shift
        lo, hi = bootstrap_ci(a, statistic, n_boot=self.n_boot, seed=self.ctx.seed)
        return self.plain(
            metric,
            summarize(a, statistic),
            unit,
            a.size,
            higher_is_better=higher_is_better,
            condition=condition,
            ci=(lo, hi),
            samples=[round(float(x), 5) for x in a],
            statistic=statistic,
        )

    def invalidate(self, reasons: list[str]) -> None:
        if reasons:
            for rec in self.records:
                rec.status = INVALID
                rec.reason = "; ".join(reasons)


MAX_INPUT_S = 1800.0  # the default of max_input_s: longer inputs are skipped by name


def load_data(ctx: MeasureContext, sample_rate: int, params: dict[str, Any]) -> Dataset:
    """The suite's data (BYO directory or espeak corpus), at the codec's rate, capped at max_utterances."""
    ds = dataset_for(
        ctx.data,
        sample_rate=sample_rate,
        quick=ctx.quick,
        split=params.get("split", "heldout"),
        report=ctx.progress,
    )
    limit_s = float(params.get("max_input_s", MAX_INPUT_S))
    keep = []
    for u in ds.utterances:
        seconds = u.audio.size / float(sample_rate)
        if seconds > limit_s:
            ds.skipped.append((u.id, f"{seconds:.0f} s is longer than max_input_s = {limit_s:g}"))
        else:
            keep.append(u)
    ds.utterances = keep
    if not keep:
        raise DataError(f"no input of {ds.name} is at most max_input_s = {limit_s:g} s long")
    for name, why in ds.skipped:
        ctx.skip_input(name, why)
    cap = int(params.get("max_utterances") or 0)
    if cap and len(ds.utterances) > cap:
        ds.utterances = spread_over_speakers(ds.utterances, cap)
    return ds


def spread_over_speakers(utts: list, n: int) -> list:
    """n utterances taken round-robin over speakers (a cut of a speaker-sorted list would keep one)."""
    groups: dict[Any, list] = {}
    for u in utts:
        groups.setdefault(u.speaker, []).append(u)
    out, i = [], 0
    while len(out) < n:
        for g in groups.values():
            if i < len(g) and len(out) < n:
                out.append(g[i])
        i += 1
    return out


def make_scorer(params: dict[str, Any], sample_rate: int, metrics: list[str] | None = None) -> Scorer:
    return Scorer(
        metrics=check_metrics(metrics if metrics is not None else params["metrics"]),
        sample_rate=sample_rate,
        asr_model=params.get("asr_model") or None,
        beam_size=int(params.get("beam_size", 5)),
        threads=max(1, torch.get_num_threads()),
    )


def codec_of(model) -> Any:
    return model.codec


def annotated(records: list[MetricRecord], scorer: Scorer, codec, ds: Dataset) -> list[MetricRecord]:
    """The records with the evaluators' time per call and, when there were long inputs, which ones went
    through the codec streamed."""
    timing = scorer.timings_ms()
    long = [u.id for u in ds.utterances if streams(codec, u.audio.size)]
    for r in records:
        r.extra["evaluator_ms_per_call"] = timing
        if long:
            r.extra.update(streamed_inputs=long, streamed_above_s=STREAM_ABOVE_S)
    return records


@dataclass(frozen=True)
class CodecOpening:
    """What a codec-side kind starts from: its parameters (defaults <- the suite's table <- quick), the
    variant's model and codec, the codec's sample rate, and the data at that rate (capped, long inputs
    skipped by name)."""

    params: dict[str, Any]
    model: Any
    codec: Any
    sample_rate: int
    data: Dataset

    def scorer(self, metrics: list[str] | None = None) -> Scorer:
        """The evaluators of ``metrics`` (None: the kind's ``metrics`` parameter) at the codec's rate."""
        return make_scorer(self.params, self.sample_rate, metrics)


def open_codec(ctx: MeasureContext, defaults: dict[str, Any]) -> CodecOpening:
    """Merge the kind's parameters, build the variant, load the data at its codec's rate."""
    params = merged_params(ctx, defaults)
    model = ctx.variant.build()
    codec = codec_of(model)
    rate = int(codec.sample_rate)
    return CodecOpening(params, model, codec, rate, load_data(ctx, rate, params))
