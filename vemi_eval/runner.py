"""The runner: suite -> variants -> measurement kinds -> records on disk -> results.json, samples.csv,
history, report.

Order of work: variant by variant (each built lazily, once per batch size, freed when its measurements are
done), and inside a variant the suite's measurement tables in file order. Every (kind, variant) result is
appended to results.partial.jsonl as soon as it exists; ``resume=True`` skips what is there. Every
measurement starts from the same seeds, so a resumed run gives what an uninterrupted one would have.

Each variant runs its own model (vemi_eval/variant_models.py: the suite's [model] under the variant's own
preset, config, checkpoints, dtype). A variant with several checkpoints (one per training seed) is measured
once per replicate, against the baseline's replicate of the same index where it has one; finalize pools
the replicates into the variant's records (vemi_eval/replicates.py) before intervals and ratios.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import traceback
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import results as rs
from . import rundir
from .environment import environment, now_iso
from .errors import DataError, OptionsError, StorageError, user_error_types
from .measurements import MeasureContext, VariantRef
from .progress import progress
from .records import FAILED, INVALID, MEASURED, OK, SKIPPED, UNDERPOWERED, MetricRecord
from .replicates import pool_replicates, record_samples
from .stats import bootstrap_ci, infer_statistic, is_sample_statistic, ratio_ci
from .suites import Suite, VariantDecl, load_suite
from .variant_models import VariantModel, check_model, variant_models, weights_provenance

log = logging.getLogger("vemi_eval.run")

# --preset NAME: the LM preset and the codec it goes with.
PRESETS = {"tiny": ("tiny", "tiny"), "moshi-7b": ("moshi-7b", "mimi"), "moshi-2b": ("moshi-2b", "mimi")}
VALID, INVALID_RUN, INCOMPLETE = rundir.VALID, rundir.INVALID, rundir.INCOMPLETE
MAX_SEED = 2**63 - 1
DEFAULT_MAX_FAILED_SHARE = 0.5  # [validity] max_failed_share: a kind with more failed records is INVALID


@dataclass
class RunOptions:
    suite: str
    preset: str | None = None
    config: str | None = None  # LM config JSON (overrides the suite's and the preset's lm)
    checkpoint: str | None = None
    codec_checkpoint: str | None = None
    flags: list[str] = field(default_factory=list)  # each "a,b=2": one variant beside the baseline
    variants: list[str] | None = None  # keep only these of the suite's variants (the baseline stays)
    device: str | None = None
    dtype: str | None = None  # the LM's; None: the suite's, else default_dtype(device)
    seed: int | None = None
    threads: int | None = None
    quick: bool = False
    data: str | None = None
    text_tokenizer: str | None = None  # SentencePiece model of the LM's text stream (the dialogue suite)
    out: str | None = None
    resume: bool = False
    overwrite: bool = False  # replace an earlier run in ``out`` (without it, such a run is never touched)
    report: bool = True
    history: bool = True
    history_path: Path | None = None
    progress: bool = True
    build_fn: Callable[[Any], Any] | None = None  # default reference_model.build_duplex (tests inject fakes)


@dataclass
class RunOutcome:
    status: str
    out_dir: Path
    exit_code: int
    results: dict[str, Any]
    report: Path | None = None


# --- model spec and variants ------------------------------------------------------------------------
def model_spec(suite: Suite, opts: RunOptions) -> dict[str, Any]:
    """The suite's [model] table with the command line's overrides, checked before any work."""
    from reference_model import ConfigError

    m = {"lm": "tiny", "codec": "tiny", "lm_checkpoint": None, "codec_checkpoint": None}
    m.update({"dtype": None, "device": "cpu"})
    m.update(suite.model)
    if opts.preset:
        m["lm"], m["codec"] = PRESETS.get(opts.preset, (opts.preset, m["codec"]))
    if opts.config:
        if not Path(opts.config).is_file():
            raise ConfigError(f"config file not found: {opts.config}")
        m["lm"] = str(Path(opts.config).resolve())
    if opts.checkpoint:
        m["lm_checkpoint"] = opts.checkpoint
    if opts.codec_checkpoint:
        m["codec_checkpoint"] = opts.codec_checkpoint
    if opts.device:
        m["device"] = opts.device
    if opts.dtype:
        m["dtype"] = opts.dtype
    if m["dtype"] is None:
        m["dtype"] = default_dtype(str(m["device"]))
    for key in ("lm_checkpoint", "codec_checkpoint"):
        p = m.get(key)
        if p and p != "random" and Path(p).is_file():
            m[key] = str(Path(p).resolve())
    dev = str(m["device"])
    if not (dev == "cpu" or dev == "cuda" or dev.startswith("cuda:")):
        raise OptionsError(f"unknown device {dev!r} (cpu, cuda or cuda:N)")
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OptionsError(f"device {dev!r} asked but CUDA is not available on this machine")
    m["weights"] = weights_provenance(m)
    check_model(m)
    return m


def default_dtype(device: str) -> str:
    """The LM's dtype when neither the command line nor the suite says: bf16 on CUDA (what the released
    weights are, what flash-attn and the int4 kernel need), fp32 on CPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def select_variants(suite: Suite, opts: RunOptions, device: str) -> list[tuple[VariantDecl, str | None]]:
    """(variant, reason to skip it or None). --variants keeps a subset; --flags replaces the others."""
    from reference_model.enhancements import FlagError, parse_flags

    variants = list(suite.variants)
    if opts.variants:
        known = [v.name for v in variants]
        for n in opts.variants:
            if n not in known:
                listed = ", ".join(known)
                raise OptionsError(f"--variants: suite {suite.name!r} has no variant {n!r} ({listed})")
        variants = [variants[0]] + [v for v in variants[1:] if v.name in opts.variants]
    if opts.flags:
        controls = [
            v for v in variants[1:] if v.aa
        ]  # the A/A control stays: the noise floor of the comparison
        variants = [variants[0]]
        for raw in opts.flags:
            flags = tuple(f.strip() for f in raw.split(",") if f.strip())
            parse_flags(list(flags), device=device)  # a flag this device cannot run is a usage error here
            name = ",".join(flags) or "no-flags"
            if any(v.name == name for v in variants + controls):
                raise OptionsError(f"--flags {raw!r} gives a variant named like an existing one ({name!r})")
            variants.append(VariantDecl(name, flags, "from --flags"))
        variants += controls
    out: list[tuple[VariantDecl, str | None]] = []
    for v in variants:
        reason = None
        try:
            parse_flags(list(v.flags), device=device)
        except FlagError as exc:
            if "needs a CUDA device" not in str(exc):
                raise
            reason = str(exc)
        if v is variants[0] and reason:
            raise OptionsError(f"the baseline variant {v.name!r} cannot run here: {reason}")
        out.append((v, reason))
    return out


class _VariantBuilder:
    """VariantRef.build: builds the variant lazily, once per (batch size, overrides); resets on reuse.

    ``fresh=True`` frees what is cached for this variant, then builds a model the caller owns (not cached).
    """

    def __init__(self, decl: VariantDecl, spec: dict[str, Any], seed: int, build_fn: Callable[[Any], Any]):
        self.decl, self.spec, self.seed, self.build_fn = decl, spec, seed, build_fn
        self.cache: dict[str, Any] = {}
        self._last: weakref.ref | None = None
        self._kernels_at_build: dict[str, Any] | None = None

    def __call__(self, batch_size: int = 1, fresh: bool = False, **overrides: Any) -> Any:
        key = repr((batch_size, sorted(overrides.items(), key=lambda kv: kv[0])))
        if not fresh and key in self.cache:
            model = self.cache[key]
            if hasattr(model, "reset"):
                model.reset()
            return model
        if fresh and self.cache:
            # a fresh build is one whose cost is being measured (peak memory, build time): nothing of
            # this variant may stay resident beside it
            self.release()
        import torch

        from reference_model import DuplexSpec

        fields = {k: v for k, v in self.spec.items() if k != "weights"}  # weights: provenance only
        fields["dtype"] = getattr(torch, fields.get("dtype", "float32"))
        fields.update(flags=list(self.decl.flags), batch_size=batch_size, seed=self.seed)
        fields.update(overrides)
        from .random_weights import random_lm_file

        # a large random LM is drawn once and read back from a file (the same values, seconds not minutes)
        cached = random_lm_file(fields["lm"], fields.get("lm_checkpoint"), self.seed, fields["dtype"])
        if cached is not None:
            fields["lm_checkpoint"] = str(cached)
        log.info("building variant %s (batch_size=%d, overrides=%s)", self.decl.name, batch_size, overrides)
        model = self.build_fn(DuplexSpec(**fields))
        self._note_kernels(model)
        if not fresh:
            self.cache[key] = model
        return model

    def _note_kernels(self, model: Any) -> None:
        from reference_model import DuplexModel

        if isinstance(model, DuplexModel):  # test fakes have no report
            self._last = weakref.ref(model)
            self._kernels_at_build = model.report().kernels()

    def kernels(self) -> dict[str, Any] | None:
        """The kernels the last model built actually ran (its report), or what it had run when built
        (a fresh model already freed)."""
        model = self._last() if self._last is not None else None
        return model.report().kernels() if model is not None else self._kernels_at_build

    def release(self) -> None:
        if not self.cache:  # nothing of this variant is held: nothing to free
            return
        self.cache.clear()
        release_memory()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # freeing is best effort
            pass


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc malloc_trim), so that a measurement of
    peak memory does not start inside pages an earlier measurement freed but the allocator kept."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- validity, ratios -------------------------------------------------------------------------------
def apply_validity(rec: MetricRecord, rules: dict[str, Any]) -> None:
    """Mark an ok record INVALID when it breaks a suite rule (too few samples, frames or seconds), or
    UNDERPOWERED when its only fault is too few of the events it is conditioned on (``conditional_on``):
    shown with n and the threshold, never a verdict, and not a broken rule of the run."""
    if rec.status != OK:
        return
    why = []
    few = "min_samples" in rules and rec.n < rules["min_samples"]
    if few:
        why.append(f"n={rec.n} < min_samples={rules['min_samples']}")
    frames = rec.extra.get("frames")
    if "min_frames" in rules and isinstance(frames, (int, float)) and frames < rules["min_frames"]:
        why.append(f"frames={frames} < min_frames={rules['min_frames']}")
    dur = rec.extra.get("duration_s")
    if "min_duration_s" in rules and isinstance(dur, (int, float)) and dur < rules["min_duration_s"]:
        why.append(f"duration {dur:.2f}s < min_duration_s={rules['min_duration_s']}")
    if few and rec.conditional_on and len(why) == 1:
        low = rules["min_samples"]
        why = [f"underpowered: n={rec.n} {rec.conditional_on} < min_samples={low}, no verdict"]
        rec.status = UNDERPOWERED
    elif why:
        rec.status = INVALID
    if why:
        rec.reason = "; ".join([rec.reason] + why if rec.reason else why)


def _cond_key(rec: MetricRecord) -> str:
    return json.dumps(rec.condition, sort_keys=True, default=str)


def _statistic(rec: MetricRecord, samples: list[float]) -> str | None:
    stat = rec.statistic
    if isinstance(stat, str):
        return stat
    return infer_statistic(samples, rec.value) if rec.value is not None else None


def fill_intervals(
    records: list[MetricRecord], rows: dict[tuple[str, str], list[dict[str, Any]]], baseline: str, seed: int
) -> None:
    """Own CI from raw samples where missing; ratio to the baseline (+ bootstrap CI) for other variants."""
    by_key = {}
    for r in records:
        if r.variant == baseline and r.value is not None:
            by_key[(r.kind, r.metric, _cond_key(r))] = r

    def samples_of(r: MetricRecord) -> list[float] | None:
        return record_samples(r, rows.get((r.kind, r.variant), []))

    for r in records:
        if r.value is None or r.status not in MEASURED:
            continue
        samples = samples_of(r)
        stat = _statistic(r, samples) if samples else None
        if samples and stat and r.ci_low is None and len(samples) > 1 and is_sample_statistic(stat):
            r.ci_low, r.ci_high = bootstrap_ci(samples, stat, seed=seed)
        if r.variant == baseline or r.ratio_to_baseline is not None:
            continue
        paired = r.extra.get("paired_baseline") if isinstance(r.extra, dict) else None
        if isinstance(paired, dict) and paired.get("value"):
            # measured side by side with the baseline (interleaved blocks): the ratio is to that twin
            b_value, b_samples, b_stat = paired["value"], paired.get("samples"), paired.get("statistic")
        else:
            b = by_key.get((r.kind, r.metric, _cond_key(r)))
            if b is None or not b.value:
                continue
            b_value, b_samples = b.value, samples_of(b)
            b_stat = _statistic(b, b_samples) if b_samples else None
        r.ratio_to_baseline = r.value / b_value
        # an interval by resampling needs a statistic of the samples (a WER's total errors / total words
        # is not one: its ratio stands without an interval)
        if samples and b_samples and stat and b_stat == stat and is_sample_statistic(stat):
            try:
                _, r.ratio_ci_low, r.ratio_ci_high = ratio_ci(samples, b_samples, stat, seed=seed)
            except ValueError as exc:  # a zero baseline statistic: the ratio stands without an interval
                log.info("no ratio interval for %s/%s: %s", r.variant, r.metric, exc)


# --- the run ----------------------------------------------------------------------------------------
def _fingerprint(
    suite: Suite,
    model: dict[str, Any],
    variants: list[VariantDecl],
    seed: int,
    quick: bool,
    models: dict[str, VariantModel] | None = None,
) -> dict[str, Any]:
    def variant(v: VariantDecl) -> list[Any]:
        # a variant with a model of its own: its specs (the files it names) are part of the run
        own = models is not None and v.own_model
        return [v.name, list(v.flags)] + ([list(models[v.name].replicates)] if own else [])

    return {
        "suite_sha256": suite.sha256,
        "model": model,
        "variants": [variant(v) for v in variants],
        "seed": seed,
        "quick": quick,
    }


RUN_FILES = (rs.PARTIAL_FILE, rs.RESULTS_FILE, rs.SAMPLES_FILE, rs.LOG_FILE, rs.REPORT_FILE)


def check_data_dir(path: Path) -> None:
    if path.is_file():
        raise DataError(
            f"--data {path} is a file: give the directory that holds the audio (and its manifest, if any)"
        )
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")


def check_data_is_read(suite: str, kinds: Sequence[str]) -> None:
    """--data for a suite none of whose kinds reads data would be ignored while the run says VALID."""
    from .measurements import takes_data

    if not any(takes_data(k) for k in kinds):
        raise OptionsError(
            f"--data: no kind of suite {suite!r} ({', '.join(kinds)}) reads data; it would be ignored"
        )


def check_enough_inputs(suite: Suite, data: dict[str, Any], validity: dict[str, Any], quick: bool) -> None:
    """A data folder with fewer audio files than ``min_samples`` makes every per-input record INVALID:
    known now, so said now (exit 2) instead of after minutes of work."""
    from .data.byo import count_audio_entries
    from .measurements import counts_inputs

    source = data.get("dir") or data.get("path")
    low = validity.get("min_samples")
    kinds = [k for k in suite.kinds if counts_inputs(k)]
    if not source or low is None or not kinds:
        return
    found = count_audio_entries(source)
    for kind in kinds:
        cap = int(suite.params_for(kind, quick).get("max_utterances") or 0)
        usable = min(found, cap) if cap else found
        if usable < low:
            capped = f" (max_utterances = {cap} in [{kind}])" if cap and cap < found else ""
            mode = " under --quick" if quick and "min_samples" in suite.validity.get("quick", {}) else ""
            raise DataError(
                f"data {source}: {kind} would score {usable} input(s){capped}, fewer than [validity] "
                f"min_samples = {low}{mode}: every record would be INVALID; give at least {low} audio files"
            )


def _prepare_out(
    out: Path, fingerprint: dict, resume: bool, overwrite: bool = False
) -> tuple[list[dict[str, Any]], str | None]:
    """Create the run directory; on resume, check it holds the same run and return its entries. An
    earlier run there is never deleted without ``overwrite``; an output that cannot be written is an
    error here, before any work."""
    if out.exists() and not out.is_dir():
        raise OptionsError(f"--out {out} is a file, not a run directory")
    rundir.refuse_other_kind(out, (rundir.SWEEP_FILE,), "sweep")
    if not resume:
        rundir.refuse_to_destroy(out, RUN_FILES, overwrite)
    rundir.check_writable(out)
    if resume:
        entries = rs.read_partial(out)
        header = next((e for e in entries if e.get("type") == "header"), None)
        if header is None:
            raise OptionsError(f"--resume: {out} holds no partial run ({rs.PARTIAL_FILE} missing or empty)")
        rundir.check_same_run(out, header.get("fingerprint", {}), fingerprint)
        return entries, header.get("started")
    rundir.clear(out, RUN_FILES)  # --overwrite: the new run starts afresh
    return [], None


def _attach_log(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / rs.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vemi_eval")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


@dataclass
class RunJob:
    """What every measurement of one run shares: where results go, the suite, the settings checked
    before any work, and the baseline every variant is measured against."""

    out: Path
    suite: Suite
    model: dict[str, Any]
    variants: list[VariantDecl]
    seed: int
    threads: int
    quick: bool
    data: dict[str, Any]
    validity: dict[str, Any]
    models: dict[str, VariantModel] = field(default_factory=dict)  # variant -> its model, per replicate
    bar: Any = None

    @property
    def device(self) -> str:
        return str(self.model["device"])


def run_suite(opts: RunOptions, echo: Callable[[str], None] = print) -> RunOutcome:
    """Run a suite; raise a user error (exit 2) before any work when the input is bad."""
    import torch

    from .measurements import load_all

    kinds = load_all()
    suite = load_suite(opts.suite, known_kinds=kinds)
    model = model_spec(suite, opts)
    chosen = select_variants(suite, opts, model["device"])
    variants = [v for v, _ in chosen]
    models = variant_models(variants, model, PRESETS)
    skip_reason = {v.name: reason for v, reason in chosen}
    seed = opts.seed if opts.seed is not None else (suite.seed if suite.seed is not None else 0)
    if not 0 <= seed <= MAX_SEED:  # torch takes 64 bits, the history's SQLite integers 63
        raise OptionsError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")
    threads = next(t for t in (opts.threads, suite.threads, 1) if t is not None)
    if threads < 1:
        raise OptionsError(f"--threads must be >= 1, got {threads}")
    if opts.data is not None:
        check_data_dir(Path(opts.data))
        check_data_is_read(suite.name, suite.kinds)
    if opts.history:
        from .history import check_history

        check_history(opts.history_path)
    validity = dict(suite.validity)
    quick_rules = validity.pop("quick", {})
    if opts.quick:
        validity.update(quick_rules)
    data = {**suite.data, "quick": opts.quick}
    if opts.data is not None:  # --data wins over the suite's [data] dir
        data["dir"] = str(Path(opts.data).resolve())
    if opts.text_tokenizer is not None:
        data["text_tokenizer"] = str(Path(opts.text_tokenizer).resolve())
    for kind in suite.kinds:  # each kind reads and checks the data it will run on, before any work
        check = getattr(kinds[kind], "check_data", None)
        if check is not None:
            check(dict(data), suite.params_for(kind, opts.quick))
    check_enough_inputs(suite, data, validity, opts.quick)

    out = Path(opts.out) if opts.out else rundir.default_out(suite.name)
    job = RunJob(out, suite, model, variants, seed, threads, opts.quick, data, validity, models)
    fingerprint = _fingerprint(suite, model, variants, seed, opts.quick, models)
    if "text_tokenizer" in data:  # another tokenizer reads other words: not the same run to resume
        fingerprint["text_tokenizer"] = data["text_tokenizer"]
    entries, started = _prepare_out(out, fingerprint, opts.resume, opts.overwrite)
    handler = _attach_log(out)
    torch.set_num_threads(threads)
    started = started or now_iso()
    if not entries:
        _append(out, {"type": "header", "started": started, "fingerprint": fingerprint})
    done = {_entry_key(e) for e in entries if e.get("type") == "result"}
    log.info(
        "run %s: suite %s, %d variants, seed %d, threads %d, quick %s, resume %s (%d done)",
        out,
        suite.name,
        len(variants),
        seed,
        threads,
        opts.quick,
        opts.resume,
        len(done),
    )

    build_fn = opts.build_fn
    if build_fn is None:
        from reference_model import build_duplex as build_fn
    # one builder and one ref per (variant, replicate); the variant's name is the records' variant
    builders: dict[tuple[str, int], _VariantBuilder] = {}
    refs: dict[tuple[str, int], VariantRef] = {}
    for i, v in enumerate(variants):
        for r, spec in enumerate(models[v.name].replicates):
            builders[(v.name, r)] = _VariantBuilder(v, spec, seed, build_fn)
            refs[(v.name, r)] = VariantRef(v.name, list(v.flags), builders[(v.name, r)], is_baseline=(i == 0))
    base_name = variants[0].name
    todo = plan(suite, variants, opts.quick)
    interrupted = False
    planned = [(kind, v.name, r) for v, kind in todo for r in range(len(models[v.name].replicates))]
    on_disk = sum(1 for key in planned if key in done)
    # the bar counts what is left to measure; a resumed run says once what it found on disk
    job.bar = progress(len(planned) - on_disk, opts.progress)
    if on_disk:
        job.bar.write(f"resume: {on_disk} of {len(planned)} measurements already on disk in {out}")
    try:
        for v in variants:
            for r in range(len(models[v.name].replicates)):
                # replicate r of a variant is measured against replicate r of the baseline where the
                # baseline has as many (paired seeds), else against its first
                base_r = r if (base_name, r) in refs else 0
                for vv, kind in todo:
                    if vv is not v:
                        continue
                    job.bar.set_description(f"{kind} / {v.name}" + (f" #{r + 1}" if r else ""))
                    if (kind, v.name, r) in done:
                        log.info("resume: %s/%s replicate %d already on disk, skipped", kind, v.name, r)
                        continue
                    ref, base = refs[(v.name, r)], refs[(base_name, base_r)]
                    _measure_one(job, kind, kinds[kind], ref, base, r, skip_reason.get(v.name))
                    job.bar.update(1)
                if v.name != base_name:
                    builders[(v.name, r)].release()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: finished measurements are in %s", rs.PARTIAL_FILE)
    finally:
        job.bar.close()
        for b in builders.values():
            b.release()

    try:
        try:
            results = finalize(job, todo, started, interrupted)
        except OSError as exc:  # the atomic writes leave the files of before, never half a file
            raise StorageError(
                f"cannot write the results of {out}: {exc.strerror or exc}; every finished measurement is "
                f"in {rs.PARTIAL_FILE}: free space, then run again with --resume"
            ) from None
        report = _build_report(out, echo) if opts.report else None
        if opts.history:
            _append_history(results, out, opts.history_path)
    finally:
        logging.getLogger("vemi_eval").removeHandler(handler)
        handler.close()
    code = rundir.exit_code([results.status], interrupted)
    return RunOutcome(results.status, out, code, results.to_dict(), report)


def plan(suite: Suite, variants: list[VariantDecl], quick: bool = False) -> list[tuple[VariantDecl, str]]:
    """(variant, kind) pairs in run order. A --flags variant runs every kind its baseline runs."""
    pairs = []
    for v in variants:
        for kind in suite.kinds:
            runs_on = suite.variants_for(kind, quick)
            if v in runs_on or (v not in suite.variants and variants[0] in runs_on):
                pairs.append((v, kind))
    return pairs


def _result_entry(
    kind: str, variant: str, records: list[MetricRecord], samples: list, replicate: int = 0
) -> dict[str, Any]:
    return {
        "type": "result",
        "kind": kind,
        "variant": variant,
        "replicate": replicate,
        "records": [r.to_dict() for r in records],
        "samples": samples,
    }


def _entry_key(e: dict[str, Any]) -> tuple[str, str, int]:
    """(kind, variant, replicate) of a partial entry (entries written before replicates: replicate 0)."""
    return (e["kind"], e["variant"], int(e.get("replicate") or 0))


def _measure_one(
    job: RunJob,
    kind: str,
    fn: Callable[[MeasureContext], Any],
    variant: VariantRef,
    baseline: VariantRef,
    replicate: int,
    skip_reason: str | None,
) -> None:
    suite, out = job.suite, job.out
    if skip_reason:
        _skip_variant(job, kind, variant, replicate, skip_reason)
        return
    ctx = MeasureContext(
        suite=suite.name,
        kind=kind,
        variant=variant,
        baseline=baseline,
        params=suite.params_for(kind, job.quick),
        seed=job.seed,
        quick=job.quick,
        device=job.device,
        data=dict(job.data),
        artifacts=out / kind / (variant.name if not replicate else f"{variant.name}-r{replicate}"),
        progress=lambda msg: job.bar.set_postfix_str(str(msg)[:60], refresh=True),
    )
    if getattr(fn, "clean_heap", False):  # a peak-memory kind must not start in pages others left behind
        release_memory()
    seed_everything(job.seed)
    log.info("measuring %s on %s with %s", kind, variant.name, ctx.params)
    try:
        records = list(fn(ctx) or [])
        for r in records:
            if not isinstance(r, MetricRecord):
                raise TypeError(f"measurement {kind!r} returned {type(r).__name__}, not a MetricRecord")
    except user_error_types() as exc:
        from reference_model import FlagError

        if isinstance(exc, FlagError) and not variant.is_baseline:
            # a flag this device or dtype cannot run, found only when the variant is built (a CPU-only
            # kernel on CUDA): skipped with the reason like a CUDA-only flag on a CPU, the run goes on;
            # the baseline's own failure stays fatal
            _skip_variant(job, kind, variant, replicate, f"cannot run here: {exc}")
            return
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        log.error("%s/%s crashed:\n%s", kind, variant.name, traceback.format_exc())
        _append(
            out,
            {
                "type": "error",
                "kind": kind,
                "variant": variant.name,
                "replicate": replicate,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )
        job.bar.write(
            f"error: measurement {kind} on {variant.name} failed: {type(exc).__name__}: {exc}"
            f" (traceback in {out / rs.LOG_FILE})"
        )
        return
    kernels = variant.build.kernels() if isinstance(variant.build, _VariantBuilder) else None
    for r in records:
        r.suite = r.suite or suite.name
        r.variant = r.variant or variant.name
        r.kind = r.kind or kind
        if kernels is not None:
            r.extra.setdefault("kernels", kernels)  # what the variant actually ran (report of the model)
        apply_validity(r, job.validity)
    for item in ctx.skipped_inputs:
        log.warning("%s/%s: skipped input %s: %s", kind, variant.name, item["input"], item["reason"])
    entry = _result_entry(kind, variant.name, records, ctx.samples, replicate)
    entry["skipped_inputs"] = ctx.skipped_inputs
    _append(out, entry)
    log.info("%s/%s: %d records", kind, variant.name, len(records))


def _skip_variant(job: RunJob, kind: str, variant: VariantRef, replicate: int, reason: str) -> None:
    """One skipped record for (kind, variant): the device cannot run it (not a kind that scored nothing)."""
    rec = MetricRecord(
        job.suite.name, variant.name, kind, None, "", 0, status=SKIPPED, reason=reason, kind=kind
    )
    entry = _result_entry(kind, variant.name, [rec], [], replicate)
    entry["skipped_variant"] = reason
    _append(job.out, entry)
    log.info("%s/%s skipped: %s", kind, variant.name, reason)


def _append(out: Path, entry: dict[str, Any]) -> None:
    """One line of the partial file; a failed write (a full disk) ends the run with exit 5, keeping every
    line written before it."""
    try:
        rs.append_partial(out, entry)
    except OSError as exc:
        raise StorageError(
            f"cannot write {out / rs.PARTIAL_FILE}: {exc.strerror or exc}; the measurements finished before "
            "are kept there: free space, then run again with --resume"
        ) from None


def scoring_problems(kind: str, variant: str, records: list[MetricRecord], max_failed: float) -> list[str]:
    """Why a (kind, variant) makes the run INVALID although no record broke a rule: it scored nothing
    (no record, or none ok: underpowered records bear no verdict), or more than ``max_failed`` of its
    records failed."""
    if not records:
        return [f"{variant}/{kind}: scored nothing (the measurement returned no record)"]
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    if not (by_status.get(OK, 0) + by_status.get(INVALID, 0)):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        first = next((r.reason for r in records if r.reason), "")
        what = "nothing but underpowered records" if by_status.get(UNDERPOWERED) else "nothing"
        return [f"{variant}/{kind}: scored {what} ({counts}" + (f"; first: {first})" if first else ")")]
    failed = by_status.get(FAILED, 0)
    if failed / len(records) > max_failed:
        return [
            f"{variant}/{kind}: {failed} of {len(records)} records failed (more than max_failed_share "
            f"{max_failed:g})"
        ]
    return []


def invalid_line(rec: MetricRecord) -> str:
    """variant/metric[condition]: why, so that records of one metric under two conditions read apart."""
    cond = ",".join(f"{k}={v}" for k, v in rec.condition.items())
    return f"{rec.variant}/{rec.metric}" + (f"[{cond}]" if cond else "") + f": {rec.reason or 'invalid'}"


def finalize(
    job: RunJob, todo: list[tuple[VariantDecl, str]], started: str, interrupted: bool = False
) -> rs.RunResults:
    """Gather the partial file into results.json + samples.csv (the last entry per (kind, variant) wins)."""
    out, suite, variants = job.out, job.suite, job.variants
    entries = rs.read_partial(out)
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for e in entries:
        if e.get("type") in ("result", "error"):
            latest[_entry_key(e)] = e
    records: list[MetricRecord] = []
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    errors = []
    unscored = []
    skipped_inputs = []
    max_failed = float(job.validity.get("max_failed_share", DEFAULT_MAX_FAILED_SHARE))
    by_pair: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for (kind, variant, r), e in latest.items():
        by_pair.setdefault((kind, variant), []).append((r, e))
    for key, reps in by_pair.items():
        n_reps = len(job.models[key[1]].replicates) if key[1] in job.models else 1
        done_reps: list[tuple[int, list[MetricRecord], list[dict[str, Any]]]] = []
        for r, e in sorted(reps, key=lambda x: x[0]):
            where = {"kind": key[0], "variant": key[1]} | ({"replicate": r} if n_reps > 1 else {})
            if e["type"] == "error":
                errors.append({**where, "error": e["error"]})
                continue
            done_reps.append((r, [rs.record_from_dict(d) for d in e["records"]], e.get("samples", [])))
            skipped_inputs += [{**where, **s} for s in e.get("skipped_inputs") or []]
        if not done_reps:
            continue
        mine, rows[key] = pool_replicates(done_reps) if n_reps > 1 else done_reps[0][1:]
        records += mine
        if not any(e.get("skipped_variant") for _, e in reps):
            unscored += scoring_problems(key[0], key[1], mine, max_failed)
    fill_intervals(records, rows, variants[0].name, job.seed)

    planned = {(k, v.name, r) for v, k in todo for r in range(len(job.models[v.name].replicates))}
    missing = sorted(
        (k, v + (f" replicate {r + 1}" if len(job.models[v].replicates) > 1 else ""))
        for k, v, r in planned - set(latest)
    )
    invalid = [invalid_line(r) for r in records if r.status == INVALID]
    invalid = list(dict.fromkeys(invalid + unscored))  # each reason once
    if errors or interrupted or missing:
        status = INCOMPLETE
    elif invalid:
        status = INVALID_RUN
    else:
        status = VALID
    evaluators: dict[str, Any] = {}
    data_hashes: dict[str, Any] = {}
    for r in records:
        ev = r.evaluator
        if isinstance(ev, dict) and ev.get("name"):
            evaluators[ev["name"]] = {k: v for k, v in ev.items() if k != "name"}
        data_hashes.update(r.data)
    all_rows = [row for rr in rows.values() for row in rr]
    rs.write_samples_csv(out, rs.sample_rows(records, all_rows))
    results = rs.RunResults(
        suite=rs.SuiteFacts.of(suite),
        model=job.model,
        variants=[rs.VariantFacts.of(v, i == 0, job.models[v.name]) for i, v in enumerate(variants)],
        seed=job.seed,
        quick=job.quick,
        threads=job.threads,
        status=status,
        invalid_reasons=invalid,
        errors=errors,
        missing=[f"{k}/{v}" for k, v in missing],
        environment=environment(job.threads),
        evaluators=evaluators,
        data=data_hashes,
        started=started,
        finished=now_iso(),
        skipped_inputs=skipped_inputs,
        metrics=records,
    )
    rs.write_results(out, results.to_dict())
    log.info("results.json written: status %s, %d records", status, len(records))
    return results


def _append_history(results: rs.RunResults, out: Path, path: Path | None) -> None:
    import sqlite3

    from .history import append_run

    try:
        run_id = append_run(results.to_dict(), out_dir=out.resolve(), path=path)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"the run is complete in {out} but was not added to the history: {exc}") from None
    log.info("history: run %d appended", run_id)


def _build_report(out: Path, echo: Callable[[str], None]) -> Path | None:
    try:
        from .report import build_report
    except ImportError as exc:
        log.warning("report not built: %s", exc)
        echo(f"note: report not built (vemi_eval.report unavailable: {exc})")
        return None
    try:
        return Path(build_report([out], out / rs.REPORT_FILE))
    except Exception as exc:  # a broken report must not lose the run: the results are on disk
        log.error("report failed:\n%s", traceback.format_exc())
        echo(f"warning: report not built: {type(exc).__name__}: {exc} (traceback in {out / rs.LOG_FILE})")
        return None
