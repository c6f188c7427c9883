"""`vemi-eval train lm`: an LM with Moshi's objective, for a time budget, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK
from .options import EXIT_CODES_HELP, check_at_least
from .training_common import (
    OVERWRITE_HELP,
    check_device,
    check_range,
    check_seed,
    check_sidecar_readable,
    run_training,
)


@click.command("lm", epilog=EXIT_CODES_HELP)
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
    type=click.Choice(["train", "train_aug", "train_aug_echo", "train_aug_mix", "train_aug_f0"]),
    default="train",
    show_default=True,
    help="Dialogue training split: train, train_aug (the same voices and prompts, each session's "
    "user voice speed-perturbed and tilted), train_aug_echo (train_aug's perturbations, half of them "
    "with an echo), train_aug_mix (train_aug with 1,024 crossover espeak speakers) or train_aug_f0 "
    "(train_aug with the festival users spread from male to female pitch, half of the sessions); see "
    "vemi_eval/data/dialogue/.",
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
    "--heldout-every",
    "heldout_every_min",
    type=float,
    default=15.0,
    show_default=True,
    help="Minutes between held-out evaluations during the run (0: at the end only); each joins the "
    "curve in <out stem>.progress.json, then in the sidecar.",
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
    check_range("heldout_every", opts["heldout_every_min"], 0)
    every_min = opts.pop("heldout_every_min")
    opts["heldout_every_s"] = every_min * 60.0 if every_min > 0 else None
    from ..training.lm import train_tiny_dialogue
    from ..training.lm_options import build_options, parse_option_args
    from ..training.outputs import check_training_outputs

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
