"""Score degraded utterances against their references with the chosen evaluators, and turn the
per-utterance rows into MetricRecords that say how many items were scored and why the others were not.

Row = one (utterance, metric): {"utt", "speaker", "metric", "value", "status", "reason", **condition}.
A record's value is the mean over scored utterances (WER/CER: total edits / total reference words, with a
bootstrap interval over utterances); extra carries "scored", "of", the failures, the evaluator's version
and weights hash, and the data hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..records import FAILED, OK, SKIPPED, MetricRecord
from . import EvaluatorError

# metric -> (evaluator, unit, higher_is_better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "pesq_wb": ("pesq", "MOS", True),
    "pesq_nb": ("pesq", "MOS", True),
    "stoi": ("stoi", "", True),
    "estoi": ("stoi", "", True),
    "si_sdr": ("sisdr", "dB", True),
    "dnsmos_ovrl": ("dnsmos", "MOS", True),
    "dnsmos_sig": ("dnsmos", "MOS", True),
    "dnsmos_bak": ("dnsmos", "MOS", True),
    "speaker_similarity": ("speaker", "cosine", True),
    "wer": ("wer", "fraction", False),
    "cer": ("wer", "fraction", False),
}
DEFAULT_METRICS = tuple(METRICS)
MAX_LAG_S = 0.1  # alignment search range for STOI / SI-SDR (PESQ aligns itself)


class MetricsError(ValueError):
    pass


def check_metrics(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise MetricsError(f"unknown metric(s) {unknown} (known: {', '.join(METRICS)})")
    return names


ENVELOPE_HOP_S = 0.001  # resolution of the envelope alignment
ENVELOPE_WIN_S = 0.01
COHERENT_CORR = 0.25  # normalised waveform correlation above which the waveform lag is trusted


def _envelope(x: np.ndarray, hop: int, win: int) -> np.ndarray:
    """Level in dB of ``win`` samples every ``hop`` samples, floored 60 dB below the loudest window: a log
    envelope, so that a codec's loud artefacts do not outweigh the speech's shape."""
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, max(1, x.size - win + 1), hop)
    power = np.maximum(c[np.minimum(starts + win, x.size)] - c[starts], 0.0) / win
    return 10.0 * np.log10(np.maximum(power, max(float(power.max()), 1e-20) * 1e-6))


def _shifted(deg: np.ndarray, lag: int, n: int) -> np.ndarray:
    """``deg`` advanced by ``lag`` samples (>0: it was delayed), zero-padded or cut to length n."""
    out = np.zeros(n)
    src = deg[max(0, lag) : max(0, lag) + n - max(0, -lag)]
    out[max(0, -lag) : max(0, -lag) + src.size] = src
    return out


def align(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, max_lag_s: float = MAX_LAG_S):
    """Shift ``degraded`` by its lag behind the reference (|lag| <= max_lag_s); returns (aligned degraded of
    the reference's length, lag in samples: >0 = delayed).

    The lag is found on log-energy envelopes first (1 ms resolution), then refined to the sample by
    waveform cross-correlation within 3 ms of it, kept only where the waveforms are coherent (normalised
    correlation >= 0.25: Opus 6 kbps 0.4-0.8, Codec2 and the tiny codecs 0.06-0.44). A vocoder or an iSTFT
    decoder does not reproduce the input's phase, and the waveform correlation's peak then lies anywhere in
    the search range: a 10-17 ms misalignment cost STOI 0.04-0.12 on the tiny iSTFT codec's output, which
    is aligned by construction."""
    from scipy.signal import correlate

    ref = np.asarray(reference, dtype=np.float64)
    deg = np.asarray(degraded, dtype=np.float64)
    n = ref.size
    max_lag = int(max_lag_s * sample_rate)
    hop = max(1, int(ENVELOPE_HOP_S * sample_rate))
    win = max(hop, int(ENVELOPE_WIN_S * sample_rate))
    steps = max_lag // hop
    e_ref = _envelope(ref, hop, win)
    e_deg = _envelope(deg[: n + max_lag], hop, win)
    e_ref, e_deg = e_ref - e_ref.mean(), e_deg - e_deg.mean()  # zero padding below is then neutral
    e_deg = np.concatenate([np.zeros(steps), e_deg, np.zeros(max(0, e_ref.size + steps - e_deg.size))])
    corr = correlate(e_deg[: e_ref.size + 2 * steps], e_ref, mode="valid", method="fft")  # lags -steps..+
    lag = (int(np.argmax(corr)) - steps) * hop
    # refine on the waveform near the envelope's lag, where the waveforms are coherent
    span = 3 * hop
    lo, hi = max(-max_lag, lag - span), min(max_lag, lag + span)
    deg_p = _shifted(deg, lo, n + hi - lo)
    wcorr = correlate(deg_p, ref, mode="valid", method="fft")  # lags lo..hi
    best = int(np.argmax(wcorr))
    cand = _shifted(deg, lo + best, n)
    norm = float(np.sqrt((ref @ ref) * (cand @ cand)))
    if norm > 0 and wcorr[best] / norm >= COHERENT_CORR:
        return cand.astype(np.float32), lo + best
    return _shifted(deg, lag, n).astype(np.float32), lag


@dataclass
class Scorer:
    """Scores (reference utterance, degraded audio) pairs; caches what depends on the reference only."""

    metrics: list[str]
    sample_rate: int
    asr_model: str | None = None
    beam_size: int = 5
    threads: int = 1

    def __post_init__(self) -> None:
        check_metrics(self.metrics)
        self._ref_embed: dict[str, Any] = {}
        self._ref_text: dict[str, str] = {}
        self.seconds: dict[str, float] = {}  # evaluator -> total time spent
        self.calls: dict[str, int] = {}

    def _timed(self, evaluator: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[evaluator] = self.seconds.get(evaluator, 0.0) + time.perf_counter() - t0
            self.calls[evaluator] = self.calls.get(evaluator, 0) + 1

    def transcribe(self, audio: np.ndarray) -> str:
        from . import asr

        return self._timed(
            "asr",
            lambda: asr.transcribe(
                audio,
                self.sample_rate,
                model_dir=self.asr_model,
                beam_size=self.beam_size,
                threads=self.threads,
            ),
        )

    def reference_transcript(self, utt) -> str:
        """ASR of the clean reference (for the WER change a degradation causes), cached per utterance."""
        if utt.id not in self._ref_text:
            self._ref_text[utt.id] = self.transcribe(utt.audio)
        return self._ref_text[utt.id]

    def reference_embedding(self, utt):
        from . import speaker

        if utt.id not in self._ref_embed:
            self._ref_embed[utt.id] = self._timed(
                "speaker", lambda: speaker.embed(utt.audio, self.sample_rate)
            )
        return self._ref_embed[utt.id]

    def score(self, utt, degraded: np.ndarray, condition: dict[str, Any] | None = None) -> list[dict]:
        """Rows for every chosen metric of one degraded utterance (failures as rows with a reason)."""
        from . import dnsmos, pesq, sisdr, speaker, stoi
        from . import wer as wer_mod

        cond = dict(condition or {})
        base = {"utt": utt.id, "speaker": utt.speaker, **cond}
        rows: list[dict] = []

        def add(metric: str, value=None, status=OK, reason="", **extra):
            rows.append(
                {**base, "metric": metric, "value": value, "status": status, "reason": reason, **extra}
            )

        deg = np.asarray(degraded, dtype=np.float32)
        if deg.size == 0 or not np.all(np.isfinite(deg)):
            for m in self.metrics:
                add(m, status=FAILED, reason="degraded audio is empty or has NaN/inf samples")
            return rows
        ref = utt.audio
        want = set(self.metrics)
        aligned, lag = (None, 0)
        if want & {"stoi", "estoi", "si_sdr"}:
            aligned, lag = align(ref, deg, self.sample_rate)
        jobs: list[tuple[str, Callable[[], float]]] = [
            ("pesq_wb", lambda: pesq.pesq_wb(ref, deg, self.sample_rate)),
            ("pesq_nb", lambda: pesq.pesq_nb(ref, deg, self.sample_rate)),
            ("stoi", lambda: stoi.stoi(ref, aligned, self.sample_rate)),
            ("estoi", lambda: stoi.estoi(ref, aligned, self.sample_rate)),
            ("si_sdr", lambda: sisdr.si_sdr(ref, aligned)),
        ]
        for metric, fn in jobs:
            if metric in want:
                try:
                    extra = (
                        {"lag_ms": 1000 * lag / self.sample_rate}
                        if metric in ("stoi", "estoi", "si_sdr")
                        else {}
                    )
                    add(metric, self._timed(METRICS[metric][0], fn), **extra)
                except EvaluatorError as e:
                    add(metric, status=FAILED, reason=str(e))
        dn = [m for m in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak") if m in want]
        if dn:
            try:
                res = self._timed("dnsmos", lambda: dnsmos.dnsmos(deg, self.sample_rate))
                for m in dn:
                    add(m, res[m.split("_")[1]])
            except EvaluatorError as e:
                for m in dn:
                    add(m, status=FAILED, reason=str(e))
        if "speaker_similarity" in want:
            try:
                e_ref = self.reference_embedding(utt)
                e_deg = self._timed("speaker", lambda: speaker.embed(deg, self.sample_rate))
                add("speaker_similarity", speaker.similarity(e_ref, e_deg))
            except EvaluatorError as e:
                add("speaker_similarity", status=FAILED, reason=str(e))
        wm = [m for m in ("wer", "cer") if m in want]
        if wm:
            if not utt.text:
                for m in wm:
                    add(m, status=SKIPPED, reason="no transcript for this utterance")
            else:
                try:
                    hyp = self.transcribe(deg)
                    c = wer_mod.error_counts(utt.text, hyp)
                    for m in wm:  # errors and units of each rate: words for WER, characters for CER
                        errors, total = {"wer": ("word_errors", "words"), "cer": ("char_errors", "chars")}[m]
                        add(m, c[errors] / c[total], errors=c[errors], total=c[total], hyp=hyp)
                except EvaluatorError as e:
                    for m in wm:
                        add(m, status=FAILED, reason=str(e))
        return rows

    def timings_ms(self) -> dict[str, float]:
        """Mean milliseconds per call of each evaluator so far."""
        return {k: 1000 * v / max(1, self.calls[k]) for k, v in self.seconds.items()}


def bootstrap_ratio_ci(
    errors: np.ndarray, totals: np.ndarray, seed: int, n_boot: int = 2000
) -> tuple[float, float]:
    """95 % percentile interval of sum(errors)/sum(totals) resampling utterances."""
    errors = np.asarray(errors, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    if errors.size < 2:
        v = float(errors.sum() / totals.sum())
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, errors.size, size=(n_boot, errors.size))
    dist = errors[idx].sum(1) / np.maximum(totals[idx].sum(1), 1e-12)
    lo, hi = np.quantile(dist, [0.025, 0.975])
    return float(lo), float(hi)


def summarize_failures(rows: list[dict], limit: int = 5) -> list[str]:
    out = [f"{r['utt']}: {r['reason']}" for r in rows if r["status"] != OK]
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def records_from_rows(
    ctx,
    rows: list[dict],
    *,
    condition: dict[str, Any] | None = None,
    data_hash: dict[str, str] | None = None,
    metric_prefix: str = "",
    skipped_items: list[tuple[str, str]] | None = None,
) -> list[MetricRecord]:
    """One record per metric present in ``rows`` (rows already restricted to one condition)."""
    from . import all_specs

    specs = all_specs()
    cond = dict(condition or {})
    by_metric: dict[str, list[dict]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    bad_files = [f"{n}: {why}" for n, why in (skipped_items or [])]
    out = []
    for metric, mrows in by_metric.items():
        ev_name, unit, hib = METRICS[metric]
        ok = [r for r in mrows if r["status"] == OK]
        of = len(mrows) + len(bad_files)
        extra: dict[str, Any] = {
            "scored": len(ok),
            "of": of,
            "scored_text": f"scored {len(ok)} of {of}",
            "failures": summarize_failures(mrows) + bad_files[:5],
        }
        typed: dict[str, Any] = {
            "evaluator": {"name": ev_name, **specs[ev_name].info()},
            "data": dict(data_hash or {}),
        }
        name = metric_prefix + metric
        base = dict(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric=name,
            unit=unit,
            condition=cond,
            higher_is_better=hib,
        )
        if not ok:
            skipped = all(r["status"] == SKIPPED for r in mrows)
            reason = mrows[0]["reason"] if mrows else "no items"
            status = SKIPPED if skipped else FAILED
            why = f"{'skipped' if skipped else 'failed'} on all {len(mrows)} items: {reason}"
            out.append(MetricRecord(value=None, n=0, status=status, reason=why, extra=extra, **typed, **base))
            continue
        vals = np.array([r["value"] for r in ok], dtype=np.float64)
        if metric in ("wer", "cer"):
            errs = np.array([r["errors"] for r in ok], dtype=np.float64)
            tots = np.array([r["total"] for r in ok], dtype=np.float64)
            value = float(errs.sum() / tots.sum())
            lo, hi = bootstrap_ratio_ci(errs, tots, ctx.seed)
            stat = "total errors / total reference units"
            rec = MetricRecord(
                value=value, n=len(ok), ci_low=lo, ci_high=hi, statistic=stat, extra=extra, **typed, **base
            )
        else:
            samples = [float(v) for v in vals]
            rec = MetricRecord(
                value=float(vals.mean()),
                n=len(ok),
                samples=samples,
                statistic="mean",
                extra=extra,
                **typed,
                **base,
            )
        if len(ok) < len(mrows):
            rec.reason = f"scored {len(ok)} of {of}; " + "; ".join(summarize_failures(mrows, 2))
        out.append(rec)
    return out
