"""`vemi-eval run SUITE`: one run of a suite, its summary, and the command that resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_INTERRUPTED
from .options import EXIT_CODES_HELP, OutputSettings, model_options, output_options
from .show import print_metrics, print_summary

RUN_HELP = """Run SUITE (a name from `vemi-eval list suites`, or the path of a suite file).

\b
Variants: the suite's [[variants]] (the first is the baseline).
  --variants a,b   keeps only those of the suite's variants (the baseline always runs).
  --flags F,G=2    REPLACES the suite's other variants with one variant using those flags, measured
                   beside the baseline (ratios to it are reported). Repeat --flags for more variants.
                   A flag the device cannot run (attn=flash on CPU) is an error here; in a suite file
                   such a variant is skipped with its reason.
"""


@click.command("run", help=RUN_HELP, epilog=EXIT_CODES_HELP)
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
    from ..recorded_run import run_suite
    from ..runner import RunOptions

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
        print_metrics(outcome.results.get("metrics", []))
        click.echo("")
    print_summary(outcome.results, outcome.out_dir, outcome.report)
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
