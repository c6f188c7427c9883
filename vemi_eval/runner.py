"""The runner: suite -> variants -> measurement kinds -> records on disk -> results.json and samples.csv.

Order of work: variant by variant (each built lazily, once per batch size, freed when its measurements are
done), and inside a variant the suite's measurement tables in file order. Every (kind, variant) result is
appended to results.partial.jsonl as soon as it exists; ``resume=True`` skips what is there. Every
measurement starts from the same seeds, so a resumed run gives what an uninterrupted one would have.

Each variant runs its own model (vemi_eval/variant_models.py: the suite's [model] under the variant's own
preset, config, checkpoints, dtype). A variant with several checkpoints (one per training seed) is measured
once per replicate, against the baseline's replicate of the same index where it has one; the records are
aggregated (vemi_eval/aggregate.py: replicates pooled, intervals, ratios, the run's status) when it ends.

The runner knows nothing above itself: the report and the history of a finished run are the caller's, run
through ``finish`` while the run's log is still attached (vemi_eval/recorded_run.py).
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import measurements, run_results, rundir
from .aggregate import aggregate, apply_validity
from .data.byo import count_audio_entries
from .environment import environment, git_state, now_iso
from .errors import DataError, OptionsError, StorageError, user_error_types
from .measurements import MeasureContext, VariantRef, counts_inputs, takes_data
from .progress import progress
from .records import SKIPPED, MetricRecord
from .run_results import RunResults, SuiteFacts, VariantFacts, sample_rows
from .suites import Suite, VariantDecl, load_suite
from .variant_builder import VariantBuilder, release_memory
from .variant_models import ModelSpec, VariantModel, model_spec, variant_models

log = logging.getLogger("vemi_eval.run")

MAX_SEED = 2**63 - 1


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


# --- variants ----------------------------------------------------------------------------------------
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


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- the run ----------------------------------------------------------------------------------------
def _fingerprint(
    suite: Suite,
    model: ModelSpec,
    variants: list[VariantDecl],
    seed: int,
    quick: bool,
    models: dict[str, VariantModel] | None = None,
) -> dict[str, Any]:
    def variant(v: VariantDecl) -> list[Any]:
        # a variant with a model of its own: its specs (the files it names) are part of the run
        own = models is not None and v.own_model
        return [v.name, list(v.flags)] + ([[s.to_dict() for s in models[v.name].replicates]] if own else [])

    return {
        "suite_sha256": suite.sha256,
        "model": model.to_dict(),
        "variants": [variant(v) for v in variants],
        "seed": seed,
        "quick": quick,
    }


RUN_FILES = (
    rundir.PARTIAL_FILE,
    rundir.RESULTS_FILE,
    rundir.SAMPLES_FILE,
    rundir.LOG_FILE,
    rundir.REPORT_FILE,
)


def check_data_dir(path: Path) -> None:
    if path.is_file():
        raise DataError(
            f"--data {path} is a file: give the directory that holds the audio (and its manifest, if any)"
        )
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")


def check_data_is_read(suite: str, kinds: Sequence[str]) -> None:
    """--data for a suite none of whose kinds reads data would be ignored while the run says VALID."""
    if not any(takes_data(k) for k in kinds):
        raise OptionsError(
            f"--data: no kind of suite {suite!r} ({', '.join(kinds)}) reads data; it would be ignored"
        )


def check_enough_inputs(suite: Suite, data: dict[str, Any], validity: dict[str, Any], quick: bool) -> None:
    """A data folder with fewer audio files than ``min_samples`` makes every per-input record INVALID:
    known now, so said now (exit 2) instead of after minutes of work."""
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
        entries = rundir.read_partial(out)
        header = next((e for e in entries if e.get("type") == "header"), None)
        if header is None:
            raise OptionsError(
                f"--resume: {out} holds no partial run ({rundir.PARTIAL_FILE} missing or empty)"
            )
        rundir.check_same_run(out, header.get("fingerprint", {}), fingerprint)
        return entries, header.get("started")
    rundir.clear(out, RUN_FILES)  # --overwrite: the new run starts afresh
    return [], None


def _attach_log(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / rundir.LOG_FILE, encoding="utf-8")
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
    model: ModelSpec
    variants: list[VariantDecl]
    seed: int
    threads: int
    quick: bool
    data: dict[str, Any]
    validity: dict[str, Any]
    models: dict[str, VariantModel] = field(default_factory=dict)  # variant -> its model, per replicate
    kinds: dict[str, Callable[[MeasureContext], Any]] = field(default_factory=dict)  # kind -> measurement
    skip_reason: dict[str, str | None] = field(default_factory=dict)  # variant -> why it cannot run here
    bar: Any = None
    # the source tree's commit when the run's code was loaded: a commit made while it runs is not its code
    source: dict[str, Any] = field(default_factory=git_state)

    @property
    def device(self) -> str:
        return str(self.model.device)


def prepare_run(opts: RunOptions) -> RunJob:
    """Everything about a run that can be checked before any work, checked: a user error (exit 2) for
    bad input; nothing of the run is written yet."""
    kinds = measurements.load_all()  # looked up when called: tests register kinds of their own
    suite = load_suite(opts.suite, known_kinds=kinds)
    model = model_spec(
        suite,
        preset=opts.preset,
        config=opts.config,
        checkpoint=opts.checkpoint,
        codec_checkpoint=opts.codec_checkpoint,
        device=opts.device,
        dtype=opts.dtype,
    )
    chosen = select_variants(suite, opts, model.device)
    variants = [v for v, _ in chosen]
    models = variant_models(variants, model)
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
    return RunJob(
        out, suite, model, variants, seed, threads, opts.quick, data, validity, models, kinds, skip_reason
    )


def environment_of(job: RunJob) -> dict[str, Any]:
    """The machine at the end of the run, and the source tree as it was when the run began (plus the commit
    at the end when the tree moved while it ran)."""
    env = environment(job.threads)
    if env.get("git_commit") != job.source.get("git_commit"):
        env["git_commit_at_finish"] = env.get("git_commit")
    return {**env, **job.source}


def execute_run(
    job: RunJob, opts: RunOptions, finish: Callable[[RunResults], Path | None] | None = None
) -> RunOutcome:
    """Measure a prepared run, then aggregate it into results.json and samples.csv. ``finish`` (the
    report, the history: the caller's) runs on the results while the run's log is still attached; what it
    returns is the outcome's report."""
    import torch

    out, suite, variants, models, seed = job.out, job.suite, job.variants, job.models, job.seed
    fingerprint = _fingerprint(suite, job.model, variants, seed, opts.quick, models)
    if "text_tokenizer" in job.data:  # another tokenizer reads other words: not the same run to resume
        fingerprint["text_tokenizer"] = job.data["text_tokenizer"]
    entries, started = _prepare_out(out, fingerprint, opts.resume, opts.overwrite)
    handler = _attach_log(out)
    torch.set_num_threads(job.threads)
    started = started or now_iso()
    if not entries:
        rundir.append_entry(out, {"type": "header", "started": started, "fingerprint": fingerprint})
    done = {rundir.entry_key(e) for e in entries if e.get("type") == "result"}
    log.info(
        "run %s: suite %s, %d variants, seed %d, threads %d, quick %s, resume %s (%d done)",
        out,
        suite.name,
        len(variants),
        seed,
        job.threads,
        opts.quick,
        opts.resume,
        len(done),
    )

    build_fn = opts.build_fn
    if build_fn is None:
        from reference_model import build_duplex as build_fn
    # one builder and one ref per (variant, replicate); the variant's name is the records' variant
    builders: dict[tuple[str, int], VariantBuilder] = {}
    refs: dict[tuple[str, int], VariantRef] = {}
    for i, v in enumerate(variants):
        for r, spec in enumerate(models[v.name].replicates):
            builders[(v.name, r)] = VariantBuilder(v, spec, seed, build_fn)
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
                    _measure_one(job, kind, job.kinds[kind], ref, base, r, job.skip_reason.get(v.name))
                    job.bar.update(1)
                if v.name != base_name:
                    builders[(v.name, r)].release()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: finished measurements are in %s", rundir.PARTIAL_FILE)
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
                f"in {rundir.PARTIAL_FILE}: free space, then run again with --resume"
            ) from None
        report = finish(results) if finish is not None else None
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
        rundir.append_entry(
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
            f" (traceback in {out / rundir.LOG_FILE})"
        )
        return
    kernels = variant.build.kernels() if isinstance(variant.build, VariantBuilder) else None
    for r in records:
        r.suite = r.suite or suite.name
        r.variant = r.variant or variant.name
        r.kind = r.kind or kind
        if kernels is not None:
            r.extra.setdefault("kernels", kernels)  # what the variant actually ran (report of the model)
        apply_validity(r, job.validity)
    for item in ctx.skipped_inputs:
        log.warning("%s/%s: skipped input %s: %s", kind, variant.name, item["input"], item["reason"])
    entry = rundir.result_entry(kind, variant.name, records, ctx.samples, replicate)
    entry["skipped_inputs"] = ctx.skipped_inputs
    rundir.append_entry(out, entry)
    log.info("%s/%s: %d records", kind, variant.name, len(records))


def _skip_variant(job: RunJob, kind: str, variant: VariantRef, replicate: int, reason: str) -> None:
    """One skipped record for (kind, variant): the device cannot run it (not a kind that scored nothing)."""
    rec = MetricRecord(
        job.suite.name, variant.name, kind, None, "", 0, status=SKIPPED, reason=reason, kind=kind
    )
    entry = rundir.result_entry(kind, variant.name, [rec], [], replicate)
    entry["skipped_variant"] = reason
    rundir.append_entry(job.out, entry)
    log.info("%s/%s skipped: %s", kind, variant.name, reason)


def finalize(
    job: RunJob, todo: list[tuple[VariantDecl, str]], started: str, interrupted: bool = False
) -> RunResults:
    """Gather the partial file into results.json + samples.csv (the last entry per (kind, variant) wins)."""
    out, suite, variants = job.out, job.suite, job.variants
    replicates = {name: len(m.replicates) for name, m in job.models.items()}
    planned = {(k, v.name, r) for v, k in todo for r in range(replicates[v.name])}
    run = aggregate(
        rundir.read_partial(out), planned, replicates, variants[0].name, job.seed, job.validity, interrupted
    )
    run_results.write_samples_csv(out, sample_rows(run.records, run.sample_rows))
    results = RunResults(
        suite=SuiteFacts.of(suite),
        model=job.model,
        variants=[VariantFacts.of(v, i == 0, job.models[v.name]) for i, v in enumerate(variants)],
        seed=job.seed,
        quick=job.quick,
        threads=job.threads,
        status=run.status,
        invalid_reasons=run.invalid_reasons,
        errors=run.errors,
        missing=run.missing,
        environment=environment_of(job),
        evaluators=run.evaluators,
        data=run.data,
        started=started,
        finished=now_iso(),
        skipped_inputs=run.skipped_inputs,
        metrics=run.records,
    )
    run_results.write_results(out, results.to_dict())
    log.info("results.json written: status %s, %d records", run.status, len(run.records))
    return results
