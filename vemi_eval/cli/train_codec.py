"""`vemi-eval train codec`: the tiny preset's codec, for a time budget, resumable."""

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


@click.command("codec", epilog=EXIT_CODES_HELP)
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
        [
            "v2",
            "v1-continue",
            "v1-decoder",
            "v1-decoder-gan",
            "ab-seanet",
            "ab-istft",
            "istft-full",
            "stft-full",
            "istft-full-gan",
            "istft-decoder",
            "istft-decoder-gan",
            "istft-decoder-phase",
            "istft-decoder-voice",
        ]
    ),
    default="v2",
    show_default=True,
    help="v2: from scratch; v1-continue: recipe 1's losses, to continue --init-from on the codec corpus; "
    "v1-decoder: the decoder of --init-from alone (codes unchanged, an LM on them stays valid); "
    "v1-decoder-gan: the same with an MS-STFT discriminator and feature matching; ab-seanet / ab-istft: "
    "the decoder A/B (1.92 s crops, mel + linear STFT + level losses, tokeniser of --init-from frozen) with "
    "the SEANet decoder or the causal iSTFT decoder; istft-full: the whole codec with the iSTFT decoder "
    "(new codes: retrain the LM on them); stft-full: the same with the causal STFT encoder front-end; "
    "istft-full-gan: istft-full with v1-decoder-gan's discriminator (for the decoder's phase); "
    "istft-decoder / istft-decoder-gan: the decoder of an istft-full --init-from alone (its codes and the LM "
    "on them stay), without / with that discriminator; istft-decoder-phase: istft-decoder plus a loss on the "
    "decoded phase's derivatives (no discriminator); istft-decoder-voice: istft-decoder with half of its "
    "crops in the model's own voice (festival ked_diphone on other sentences; held out of the codec corpus).",
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
    """Train the tiny preset's codec (recipes: vemi_eval/training/codec_recipes.py) for a wall-time budget.

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

    from ..training.codec import train_codec
    from ..training.codec_recipes import named_recipes, with_options
    from ..training.outputs import check_training_outputs, sidecar_of
    from ..training.recipes import check_options

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
