"""The `vemi-eval` command line. Heavy imports (torch, the model, the report) happen inside commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .cli_options import OutputSettings, check_at_least, model_options, output_options
from .cli_training import check_device, check_range, check_seed, run_training
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_GATE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORAGE,
    OptionsError,
    ResultsError,
    StorageError,
    one_line,
    user_error_types,
)
from .text_table import echo_table

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())


def package_version() -> str:
    """The installed package's version (pyproject.toml), or the source tree's when run uninstalled."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vemi-eval")
    except PackageNotFoundError:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_version(), "--version", "-V", prog_name="vemi-eval", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Benchmark and evaluate full-duplex speech-to-speech models (Moshi family): latency, throughput,
    memory, fidelity, WER, codec quality, speaker consistency and noise robustness, for any combination
    of the enhancement flags."""


# --- list ---------------------------------------------------------------------------------------
@cli.command("list", epilog=EXIT_CODES_HELP)
@click.argument("what", type=click.Choice(["suites", "flags"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(what: str, as_json: bool) -> int:
    """List the suites (suites/*.toml) or the enhancement registry and its flags."""
    if what == "suites":
        rows = _suite_rows()
        if as_json:
            click.echo(json.dumps(rows, indent=1))
        else:
            _table(rows, ["name", "kinds", "variants", "description"])
        return EXIT_OK
    from .registry import flag_table, registry_table

    entries, flags = registry_table(), flag_table()
    if as_json:
        click.echo(json.dumps({"enhancements": entries, "flags": flags}, indent=1))
        return EXIT_OK
    rows = []
    for e in entries:
        claims = "; ".join(c["text"] for c in e["claims"])
        status = "yes" if e["status"] == "implemented" else "no"
        rows.append(
            {
                "id": e["id"],
                "title": e["title"],
                "priority": e["priority"],
                "flags": ",".join(e["flags"]) or "-",
                "implemented": status,
                "claims": claims,
                "suites": ",".join(e["suites"]) or "-",
            }
        )
    click.echo(f"The document's {len(entries)} enhancements:")
    _table(rows, ["id", "title", "priority", "flags", "implemented", "suites", "claims"], wrap=90)
    missing = [e for e in entries if e["status"] != "implemented"]
    if missing:
        click.echo(f"\nNot implemented here ({len(missing)}), and why:")
        for e in missing:
            click.echo(f"  {e['id']}  {e['reason']}")
    click.echo(f"\nFlags ({len(flags)}, each implemented; write name or name=value, comma-separated):")
    _table(
        [
            {
                "flag": f["name"] + (f"={f['default']}" if f["default"] else ""),
                "enh": f["enhancement"] or "-",
                "stage": f["stage"],
                "cuda": "yes" if f["requires_cuda"] else "",
                "summary": f["summary"],
            }
            for f in flags
        ],
        ["flag", "enh", "stage", "cuda", "summary"],
        wrap=80,
    )
    return EXIT_OK


def _suite_rows() -> list[dict[str, Any]]:
    from .registry import _AnyKind
    from .suites import SuiteError, available_suites, load_suite

    rows = []
    for name, path in sorted(available_suites().items()):
        try:
            s = load_suite(str(path), known_kinds=_AnyKind(), check_flags=False)
            rows.append(
                {
                    "name": name,
                    "path": str(path),
                    "kinds": ",".join(s.kinds),
                    "variants": ",".join(v.name for v in s.variants),
                    "description": s.description,
                }
            )
        except SuiteError as exc:
            rows.append(
                {
                    "name": name,
                    "path": str(path),
                    "kinds": "",
                    "variants": "",
                    "description": f"INVALID: {one_line(exc)}",
                }
            )
    return rows


# --- run ----------------------------------------------------------------------------------------
RUN_HELP = """Run SUITE (a name from `vemi-eval list suites`, or the path of a suite file).

\b
Variants: the suite's [[variants]] (the first is the baseline).
  --variants a,b   keeps only those of the suite's variants (the baseline always runs).
  --flags F,G=2    REPLACES the suite's other variants with one variant using those flags, measured
                   beside the baseline (ratios to it are reported). Repeat --flags for more variants.
                   A flag the device cannot run (attn=flash on CPU) is an error here; in a suite file
                   such a variant is skipped with its reason.
"""


@cli.command("run", help=RUN_HELP, epilog=EXIT_CODES_HELP)
@click.argument("suite")
@model_options()
@click.option(
    "--flags", "flags", multiple=True, help="Comma-separated flags: one variant beside the baseline."
)
@click.option("--variants", help="Comma-separated names of the suite's variants to keep.")
@click.option("--device", help="cpu, cuda or cuda:N (default: the suite's, else cpu).")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    help="The LM's dtype (default: the suite's, else bfloat16 on CUDA, float32 on CPU); codec in fp32.",
)
@click.option("--seed", type=int, help="Seed of weights, data and sampling (default: the suite's, else 0).")
@click.option("--threads", type=int, help="torch threads (default: the suite's, else 1); recorded.")
@click.option("--quick", is_flag=True, help="The suite's quick settings (fewer frames, utterances).")
@click.option("--data", type=click.Path(), help="Data directory handed to the quality measurements.")
@click.option(
    "--text-tokenizer",
    type=click.Path(),
    help="SentencePiece model of the LM's text stream (dialogue suite; Moshi: tokenizer_spm_32k_3.model). "
    "Default: the suite's, else the tiny LM's word vocabulary.",
)
@click.option(
    "--table", is_flag=True, help="Print every record (the long table) before the summary; also `show`."
)
@output_options("run", default_out="runs/SUITE-TIME")
def run_cmd(
    suite: str,
    preset: str | None,
    config: str | None,
    checkpoint: str | None,
    codec_checkpoint: str | None,
    flags: tuple[str, ...],
    variants: str | None,
    device: str | None,
    dtype: str | None,
    seed: int | None,
    threads: int | None,
    quick: bool,
    data: str | None,
    text_tokenizer: str | None,
    table: bool,
    output: OutputSettings,
) -> int:
    from .runner import RunOptions, run_suite

    opts = RunOptions(
        suite=suite,
        preset=preset,
        config=config,
        checkpoint=checkpoint,
        codec_checkpoint=codec_checkpoint,
        flags=list(flags),
        variants=[v.strip() for v in variants.split(",") if v.strip()] if variants else None,
        device=device,
        dtype=dtype,
        seed=seed,
        threads=threads,
        quick=quick,
        data=data,
        text_tokenizer=text_tokenizer,
        **output.fields(),
        progress=True,  # a bar on a terminal, a line per measurement in a log
    )
    outcome = run_suite(opts, echo=lambda m: click.echo(m, err=True))
    if table:
        _print_metrics(outcome.results.get("metrics", []))
        click.echo("")
    _print_summary(outcome.results, outcome.out_dir, outcome.report)
    if outcome.exit_code == EXIT_INTERRUPTED:
        click.echo(f"interrupted: continue with `{resume_command(opts, outcome.out_dir)}`", err=True)
    return outcome.exit_code


def resume_command(opts: Any, out_dir: Path) -> str:
    """The command that continues a run: every option its fingerprint checks, then --resume."""
    import shlex

    args = ["vemi-eval", "run", opts.suite, "--out", str(out_dir)]
    names = ("preset", "config", "checkpoint", "codec_checkpoint", "device", "seed", "threads", "data")
    for name in (*names, "text_tokenizer"):
        value = getattr(opts, name)
        if value is not None:
            args += ["--" + name.replace("_", "-"), str(value)]
    for f in opts.flags:
        args += ["--flags", f]
    if opts.variants:
        args += ["--variants", ",".join(opts.variants)]
    if opts.quick:
        args.append("--quick")
    return shlex.join([*args, "--resume"])


def _print_summary(doc: dict[str, Any], out_dir: Path, report: Path | None) -> None:
    """What the run found, in at most 40 lines: status and reasons, claims, headline figures, the report."""
    from .run_summary import summary_lines

    click.echo("\n".join(summary_lines(doc, out_dir, report)))


@cli.command("show", epilog=EXIT_CODES_HELP)
@click.argument("run_dir", type=click.Path())
def show_cmd(run_dir: str) -> int:
    """Every record of a finished run (value, interval, ratio to the baseline, status), then its summary."""
    from .results import read_results, results_path

    doc = read_results(run_dir)
    folder = results_path(run_dir).parent
    _print_metrics(doc.get("metrics", []))
    click.echo("")
    report = folder / "report.html"
    _print_summary(doc, folder, report if report.is_file() else None)
    return EXIT_OK


def _print_metrics(metrics: list[dict[str, Any]]) -> None:
    from .run_summary import baseline_value, number

    first = metrics[0]["variant"] if metrics else ""
    base = {f"{m['metric']}|{json.dumps(m.get('condition') or {}, sort_keys=True, default=str)}": m
            for m in metrics if m["variant"] == first}  # fmt: skip
    rows = []
    for m in metrics:

        def f(x: Any) -> str:
            return "" if x is None else f"{x:.4g}"

        ci = f"[{f(m['ci_low'])}, {f(m['ci_high'])}]" if m.get("ci_low") is not None else ""
        ratio = ""
        if m.get("ratio_to_baseline") is not None:
            ratio = f"x{m['ratio_to_baseline']:.3g}"
            if m.get("ratio_ci_low") is not None:
                ratio += f" [{m['ratio_ci_low']:.3g}, {m['ratio_ci_high']:.3g}]"
            against = baseline_value(m, base)  # the interleaved twin where the ratio was paired
            if against is not None:
                ratio += f" of {number(against, m.get('unit') or '')}"
        cond = ",".join(f"{k}={v}" for k, v in (m.get("condition") or {}).items())
        value = f(m.get("value")) + (f" {m['unit']}" if m.get("unit") and m.get("value") is not None else "")
        rows.append(
            {
                "variant": m["variant"],
                "metric": m["metric"],
                "condition": cond,
                "value": value,
                "95% CI": ci,
                "vs baseline": ratio,
                "status": m["status"] + (f": {m['reason']}" if m.get("reason") else ""),
            }
        )
    if rows:
        _table(rows, ["variant", "metric", "condition", "value", "95% CI", "vs baseline", "status"], wrap=60)


# --- report, matrix -------------------------------------------------------------------------------
@cli.command("report", epilog=EXIT_CODES_HELP)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="HTML file (default: RUN_DIR/report.html for one run, ./report.html for several; the path "
    "written is printed).",
)
def report_cmd(run_dirs: tuple[str, ...], out: str | None) -> int:
    """Build one self-contained HTML report from one or more run directories."""
    from .results import results_path
    from .rundir import check_output_file

    dirs = [results_path(d).parent for d in run_dirs]
    target = Path(out) if out else (dirs[0] / "report.html" if len(dirs) == 1 else Path("report.html"))
    check_output_file(target, "report", create_folder=True)
    try:
        from .report import build_report
    except ImportError as exc:
        raise ResultsError(f"the report module is not available: {exc}") from None
    try:
        path = build_report(dirs, target)
    except OSError as exc:  # the folder filled up or went away while the report was built
        raise StorageError(f"cannot write report {target}: {exc.strerror or exc}") from None
    where = "" if out else " (the default for " + ("one run" if len(dirs) == 1 else "several runs") + ")"
    click.echo(f"report: {Path(path).resolve()}{where}")
    return EXIT_OK


@cli.command("matrix", epilog=EXIT_CODES_HELP)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--markdown",
    is_flag=True,
    help="One Markdown table row per measured claim and context (the table of docs/results.md).",
)
def matrix_cmd(run_dirs: tuple[str, ...], as_json: bool, markdown: bool) -> int:
    """The document's priority matrix beside what the runs measured (claims met, short, inconclusive)."""
    from .registry import priority_matrix, priority_order
    from .report.matrix_markdown import matrix_markdown
    from .results import read_results
    from .run_summary import claim_lines, interval

    if as_json and markdown:
        raise click.UsageError("--json and --markdown exclude each other")
    rows = priority_matrix([read_results(d) for d in run_dirs])
    order = priority_order()  # the document's priority-matrix order, as the report leads with it
    rows.sort(key=lambda r: order.index(r["id"]))
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return EXIT_OK
    if markdown:
        click.echo(matrix_markdown(rows))
        return EXIT_OK
    out = []
    for r in rows:
        for c in r["claims"]:
            base = {
                "id": r["id"],
                "title": r["title"],
                "priority": r["priority"],
                "status": r["status"],
                "claim": c["text"],
                "bar": "" if c["threshold"] is None else f"{c['threshold']:.3g}",
            }
            if not c["rows"]:
                out.append({**base, "context": "", "measured": "", "MDE": "", "verdict": c["verdict"]})
            for row in c["rows"]:  # one line per context: values of two contexts are never one range
                first = row["measurements"][0]  # the first with its interval, then how many more
                more = len(row["measurements"]) - 1
                measured = f"{first['measured']:.3g}{interval(first.get('ci_low'), first.get('ci_high'), 3)}"
                measured += f" (+{more})" if more else ""
                mde = "" if row["mde"] is None else f"{row['mde']:.0%}"
                out.append({**base, "context": row["context"], "measured": measured, "MDE": mde,
                            "verdict": row["verdict"]})  # fmt: skip
    # the verdict keeps its reason and the context comes last, whole: neither is cut
    cols = ["id", "title", "priority", "status", "claim", "bar", "measured", "MDE", "verdict", "context"]
    _table(out, cols)
    click.echo("")
    click.echo(claim_lines(rows)[0])
    return EXIT_OK


# --- gate ---------------------------------------------------------------------------------------
@cli.command("gate", epilog=EXIT_CODES_HELP)
@click.argument("run_dir", type=click.Path())
@click.option(
    "--baseline",
    required=True,
    type=click.Path(),
    help="Baseline run directory or results.json (e.g. a committed one).",
)
@click.option(
    "--rules", type=click.Path(dir_okay=False), help="TOML rules: per-metric tolerance, alpha, direction."
)
@click.option(
    "--threshold",
    multiple=True,
    help="Default tolerance (10% or 0.1), or PATTERN=TOL for metrics matching a glob. Repeatable.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every compared metric, not only changes.")
@click.option(
    "--junit", type=click.Path(dir_okay=False), help="Also write JUnit XML: one test case per gated metric."
)
@click.option(
    "--benchmark-json",
    type=click.Path(dir_okay=False),
    help="Also write the lower-is-better metrics for github-action-benchmark (tool: customSmallerIsBetter).",
)
@click.option(
    "--benchmark-json-bigger",
    type=click.Path(dir_okay=False),
    help="Also write the higher-is-better metrics for github-action-benchmark (tool: customBiggerIsBetter).",
)
def gate_cmd(
    run_dir: str,
    baseline: str,
    rules: str | None,
    threshold: tuple[str, ...],
    show_all: bool,
    junit: str | None,
    benchmark_json: str | None,
    benchmark_json_bigger: str | None,
) -> int:
    """Regression gate: compare RUN_DIR against a baseline, metric by metric: deterministic metrics
    exactly, timings by tolerance + Mann-Whitney U on raw samples when both have them. Exit 1 on a
    regression."""
    from . import gate_files
    from .gate import format_table, run_gate

    outputs = {junit: "JUnit XML", benchmark_json: "benchmark JSON", benchmark_json_bigger: "benchmark JSON"}
    for path, what in outputs.items():
        if path:
            gate_files.check_writable(path, what)
    result = run_gate(run_dir, baseline, rules, threshold)
    click.echo(format_table(result, show_all=show_all))
    if junit:
        gate_files.write_file(junit, gate_files.junit_xml(result), "JUnit XML")
    for path, direction in ((benchmark_json, gate_files.SMALLER), (benchmark_json_bigger, gate_files.BIGGER)):
        if path:
            entries = gate_files.benchmark_entries(result, direction)
            gate_files.write_file(path, gate_files.benchmark_json(entries), "benchmark JSON")
    return EXIT_GATE_FAILED if result.failed else EXIT_OK


# --- model, train ---------------------------------------------------------------------------------
@cli.group("model")
def model_group() -> None:
    """Facts about a model configuration."""


@model_group.command("info", epilog=EXIT_CODES_HELP)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def model_info_cmd(name: str, as_json: bool) -> int:
    """Parameters by component, bytes per dtype and KV-cache bytes of NAME (preset or config JSON); for a
    .safetensors weights file, its tensors' parameters by dtype and by top-level component."""
    from reference_model import model_info

    info = model_info(name)
    if as_json:
        click.echo(json.dumps(info, indent=1, default=str))
        return EXIT_OK
    rows = [{"field": k, "value": _human(k, v)} for k, v in _flatten(info)]
    _table(rows, ["field", "value"], wrap=90)
    return EXIT_OK


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, d)]


def _human(key: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if "bytes" in key.lower() and v >= 1024:
        return f"{v:,} ({v / 2**30:.3f} GiB)" if v >= 2**30 else f"{v:,} ({v / 2**20:.2f} MiB)"
    return f"{v:,}" if isinstance(v, int) else f"{v:.6g}"


@cli.group("train")
def train_group() -> None:
    """Train the small models the tiny preset needs."""


OVERWRITE_HELP = (
    "Replace finished weights at --out and their sidecar (without it they are never touched; a file "
    "another program wrote is never replaced)."
)


@train_group.command("codec", epilog=EXIT_CODES_HELP)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="runs/codec/tiny_codec.safetensors",
    show_default=True,
    help="Where to write the codec weights (pass to --codec-checkpoint).",
)
@click.option("--minutes", type=float, default=10.0, show_default=True, help="Training time budget.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda where a GPU is at hand.")
@click.option("--lr", type=float, help="Peak learning rate (default: the recipe's).")
@click.option(
    "--init-from",
    type=click.Path(exists=True, dir_okay=False),
    help="Continue from these codec weights (warm start; the learning-rate schedule restarts).",
)
@click.option("--wave-weight", type=float, help="Weight of the waveform L1 loss (default: the recipe's).")
@click.option("--bypass-rate", type=float, help="Share of items that skip the quantizer (default: recipe's).")
@click.option(
    "--data",
    type=click.Choice(["codec_corpus", "espeak_corpus"]),
    help="Training speech (default codec_corpus: espeak-ng + festival voices, whole voices held out).",
)
@click.option("--fresh", is_flag=True, help="Ignore the resumable state beside --out and start over.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option(
    "--recipe",
    "recipe_name",
    type=click.Choice(
        ["v2", "v1-continue", "v1-decoder", "v1-decoder-gan", "ab-seanet", "ab-istft", "istft-full"]
    ),
    default="v2",
    show_default=True,
    help="v2: from scratch; v1-continue: recipe 1's losses, to continue --init-from on the codec corpus; "
    "v1-decoder: the decoder of --init-from alone (codes unchanged, an LM on them stays valid); "
    "v1-decoder-gan: the same with an MS-STFT discriminator and feature matching; ab-seanet / ab-istft: "
    "the decoder A/B (1.92 s crops, mel + linear STFT + level losses, tokeniser of --init-from frozen) with "
    "the SEANet decoder or the causal iSTFT decoder; istft-full: the whole codec with the iSTFT decoder "
    "(new codes: retrain the LM on them).",
)
@click.option(
    "--clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="What --minutes counts: wall time, or the training steps' CPU time (equal compute for A/B arms "
    "on a shared machine).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    help="Codec recipe option, repeatable: ervq (3.3), semantic-distill (3.1), multi-rate (1.1); "
    "vemi_eval/training/recipes.py.",
)
@click.option("--steps", type=int, help="Train exactly this many steps (--minutes stays an upper bound).")
@click.option(
    "--no-heldout-eval",
    is_flag=True,
    help="Skip the sidecar's held-out PESQ/STOI table (minutes; an experiment's suite measures instead).",
)
def train_codec_cmd(
    out: str,
    minutes: float,
    seed: int,
    threads: int,
    device: str,
    lr: float | None,
    init_from: str | None,
    wave_weight: float | None,
    bypass_rate: float | None,
    data: str | None,
    fresh: bool,
    overwrite: bool,
    recipe_name: str,
    options: tuple[str, ...],
    steps: int | None,
    no_heldout_eval: bool,
    clock: str,
) -> int:
    """Train the tiny preset's codec (recipe: vemi_eval/training/codec.py) for a wall-time budget.

    Writes the weights and a .json beside them (recipe, data hash, steps, wall time, losses, held-out
    PESQ-WB/STOI/level per engine and codebook count). The full training state is checkpointed beside
    --out every 5 minutes and on Ctrl-C / SIGTERM; the same command resumes from it."""
    check_range("minutes", minutes, 0, open_low=True)
    check_at_least(1, threads=threads, steps=steps)
    check_seed(seed)
    check_range("lr", lr, 0, open_low=True)
    check_range("wave_weight", wave_weight, 0)
    check_range("bypass_rate", bypass_rate, 0, 1)
    check_device(device)
    import dataclasses

    from .training.codec import train_codec
    from .training.codec_recipes import named_recipes, with_options
    from .training.outputs import check_training_outputs, sidecar_of
    from .training.recipes import check_options

    changes: dict[str, Any] = {"lr": lr, "wave_weight": wave_weight, "bypass_rate": bypass_rate, "data": data}
    recipe = dataclasses.replace(
        named_recipes()[recipe_name], **{k: v for k, v in changes.items() if v is not None}
    )
    try:
        check_options(options, "codec")
        recipe = with_options(recipe, options)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--option") from e
    if init_from is not None:
        check_sidecar_readable(sidecar_of(Path(init_from)), "--init-from")
    outputs = check_training_outputs(
        out, Path(out).with_suffix(".state.safetensors"), "vemi_eval.training.codec.train_codec", overwrite
    )
    ctx = click.get_current_context()
    # a resume state of another recipe raises RecipeMismatchError: a user error (exit 2) like any other
    run_training(ctx, outputs, lambda stop: train_codec(
        Path(out), minutes=minutes, recipe=recipe, seed=seed, threads=threads, device=device,
        init_from=init_from, fresh=fresh, max_steps=steps, evaluate=not no_heldout_eval, clock=clock,
        stop=stop,
    ))  # fmt: skip
    click.echo(f"codec weights: {out} (recipe and held-out quality: {Path(out).with_suffix('.json')})")
    return EXIT_OK


def check_sidecar_readable(sidecar: Path, what: str) -> None:
    """A weights file's sidecar, when there is one, is a JSON object (one line naming it otherwise)."""
    if not sidecar.is_file():
        return
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OptionsError(f"{what}: cannot read its sidecar {sidecar}: {one_line(exc)}") from None
    if not isinstance(info, dict):
        raise OptionsError(f"{what}: its sidecar {sidecar} is not a JSON object")


@train_group.command("lm", epilog=EXIT_CODES_HELP)
@click.option(
    "--out", type=click.Path(dir_okay=False), default="runs/lm/tiny_lm.safetensors", show_default=True
)
@click.option("--minutes", type=float, default=10.0, show_default=True, help="Wall-time budget.")
@click.option(
    "--steps",
    "--max-steps",
    "max_steps",
    type=int,
    help="Train exactly this many steps (LR schedule over steps; --minutes stays an upper bound).",
)
@click.option("--config", default="tiny", show_default=True, help="LM preset or Moshi-format config JSON.")
@click.option(
    "--init-from",
    type=click.Path(exists=True, dir_okay=False),
    help="Warm start from these LM weights (same config; the LR schedule starts over).",
)
@click.option(
    "--option",
    "option_names",
    multiple=True,
    help="A recipe option of the LM trainer (repeatable): distill, latency-curriculum, noise-aug, "
    "speaker-cond, dpo, prosody-cond.",
)
@click.option(
    "--option-arg",
    "option_args",
    multiple=True,
    help="OPTION.ARGUMENT=VALUE for an --option (e.g. distill.temperature=2; see training/lm_options).",
)
@click.option(
    "--teacher",
    help="distill: the teacher LM, CHECKPOINT[:CONFIG] (CONFIG: a preset or Moshi JSON; default --config).",
)
@click.option("--data", type=click.Path(file_okay=False), help="Token-grid folder (default: dialogue).")
@click.option("--heldout-data", type=click.Path(file_okay=False), help="Held-out token-grid folder.")
@click.option("--codec-checkpoint", type=click.Path(dir_okay=False), help="Codec that tokenises the corpus.")
@click.option("--train-sessions", type=int, help="Use only the first N training sessions of the corpus.")
@click.option(
    "--corpus-split",
    type=click.Choice(["train", "train_aug", "train_aug_echo", "train_aug_mix"]),
    default="train",
    show_default=True,
    help="Dialogue training split: train, train_aug (the same voices and prompts, each session's "
    "user voice speed-perturbed and tilted) or train_aug_echo (train_aug's perturbations, half of them "
    "with an echo); see vemi_eval/data/dialogue.py.",
)
@click.option(
    "--corpus-workers",
    type=int,
    default=1,
    show_default=True,
    help="Processes that synthesise and tokenise the dialogue corpus before training (cached after).",
)
@click.option(
    "--no-user-noise",
    "user_noise",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Train without the recipe's noise on the user channel (white/pink/babble 0-30 dB, reverb; "
    "training/lm_options/noise_aug.py): an ablation. Only with the dialogue corpus (not --data).",
)
@click.option("--state", type=click.Path(dir_okay=False), help="Resume state (default: beside --out).")
@click.option("--fresh", is_flag=True, help="Ignore an existing resume state and start over.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--seq-len", type=int, default=256, show_default=True, help="Frames per training crop.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--warmup-steps", type=int, default=100, show_default=True, help="Linear LR warmup steps.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="AdamW weight decay.")
@click.option(
    "--user-token-dropout", type=float, default=0.0, show_default=True, help="Share of user tokens zeroed."
)
@click.option(
    "--weights-dtype",
    type=click.Choice(["float16", "bfloat16", "float32"]),
    default="float16",
    show_default=True,
    help="dtype of the written weights (the resume state stays float32).",
)
def train_lm_cmd(
    out: str,
    state: str | None,
    data: str | None,
    heldout_data: str | None,
    option_names: tuple[str, ...],
    option_args: tuple[str, ...],
    teacher: str | None,
    overwrite: bool,
    **opts: Any,
) -> int:
    """Train an LM with Moshi's objective (delayed teacher forcing; text CE with padding at 0.5; audio CE
    with the semantic codebook up-weighted; model streams only). Time-budgeted; resumes from --state.
    Data: a folder of .safetensors token grids [1 + n_q, T] (see vemi_eval/training/lm.py).
    Recipe options (--option) are written to the sidecar's "trained_with" and are part of the recipe.
    Ctrl-C or SIGTERM saves the state and prints the command that resumes (exit 130). On the dialogue
    corpus the recipe puts noise on the user channel (--no-user-noise: without)."""
    check_range("minutes", opts["minutes"], 0, open_low=True)
    if opts["max_steps"] is not None and opts["max_steps"] < 1:
        raise click.BadParameter("must be >= 1", param_hint="--steps")
    check_at_least(
        1,
        corpus_workers=opts["corpus_workers"],
        threads=opts["threads"],
        batch_size=opts["batch_size"],
        seq_len=opts["seq_len"],
        train_sessions=opts["train_sessions"],
    )
    check_seed(opts["seed"])
    check_range("lr", opts["lr"], 0, open_low=True)
    check_range("warmup_steps", opts["warmup_steps"], 0)
    check_range("weight_decay", opts["weight_decay"], 0)
    check_range("user_token_dropout", opts["user_token_dropout"], 0, 1)
    check_device(opts["device"])
    from .training.lm import train_tiny_dialogue
    from .training.lm_options import build_options, parse_option_args
    from .training.outputs import check_training_outputs

    if teacher is not None and "distill" not in option_names:
        raise click.UsageError("--teacher is an argument of --option distill")
    options = build_options(list(option_names), parse_option_args(option_args), {"teacher": teacher})
    if opts["init_from"] is not None:
        check_sidecar_readable(Path(opts["init_from"]).with_suffix(".json"), "--init-from")
    # beside --out (the default --out keeps its state where it always was): two runs with their own --out
    # never share a state file
    state_path = Path(state) if state else Path(out).with_name(Path(out).stem + ".state.safetensors")
    outputs = check_training_outputs(out, state_path, "vemi_eval.training.lm.train_lm", overwrite)
    info = run_training(
        click.get_current_context(),
        outputs,
        lambda stop: train_tiny_dialogue(
            Path(out),
            data=data,
            heldout_data=heldout_data,
            state_path=state_path,
            options=options,
            stop=stop,
            **opts,
        ),
    )
    sidecar = Path(out).with_suffix(".json")
    click.echo(f"LM weights: {out} ({info['steps']} steps; recipe and held-out figures: {sidecar})")
    return EXIT_OK


# --- plumbing -------------------------------------------------------------------------------------
_table = echo_table  # the commands' tables (vemi_eval/text_table.py)


def _register_sweep() -> None:
    # The sweep command lives in its own module (Ray is imported only when a sweep runs).
    from .sweep import sweep_command

    cli.add_command(sweep_command, "sweep")


_register_sweep()


def _register_experiment() -> None:
    from .experiments.command import experiment_command

    cli.add_command(experiment_command, "experiment")


_register_experiment()


def _register_history() -> None:
    from .history_command import history_command

    cli.add_command(history_command, "history")


_register_history()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit 2, never a traceback."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="vemi-eval", standalone_mode=False
        )
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except user_error_types() as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except StorageError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(EXIT_STORAGE)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
