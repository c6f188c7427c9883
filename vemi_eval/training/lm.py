"""Training of a Moshi-format LM on token grids (the tiny preset on the synthetic dialogue corpus by default).

The objective is Moshi's (moshi/models/lm.py ``LMModel.forward`` in training, moshi-finetune's loss):
teacher forcing over the *delayed* token grid with the model's own delays (the start token fills the
first ``delay`` steps of each stream and opens the sequence), the temporal transformer over the whole
sequence, the depth transformer teacher-forced per frame (each codebook step sees the previous stream's
true token), then

    loss = text CE (padding and end-of-padding targets weighted ``text_padding_weight``)
         + audio CE over the dep_q model codebooks (codebook 0, the semantic one, weighted
           ``first_codebook_weight``; the others 1), each a weighted mean over valid targets.

Only the model's streams (text + its dep_q audio codebooks) are predicted; the user's codebooks are
inputs only. Targets equal to -1 (Moshi's zero token; crops are padded with it) are masked.

Data format (``--data DIR``): a folder of ``.safetensors`` files; every tensor in them is one sequence, an
integer grid ``[1 + n_q, T]``: row 0 the text stream (the inner monologue, padding id where no word
starts), rows 1..dep_q the model's audio codebooks, rows dep_q+1..n_q the user's, all at the codec's
frame rate and *not* delayed (the trainer applies the config's delays). -1 marks a frame to ignore.
An optional ``manifest.json`` beside them is recorded in the sidecar (e.g. the codec's sha256).

Recipe options (``--option NAME``; vemi_eval/training/lm_options, one module each: distill,
latency-curriculum, noise-aug) change one step through hooks that default to nothing: which grids a step
crops from, the batch after cropping, the loss. Without options the batches, the loss and the recipe
digest are the plain recipe's; with them, their names go into the sidecar's ``trained_with``. On the
dialogue corpus the bundled recipe adds noise on the user channel (``train_tiny_dialogue(user_noise=True)``,
lm_options/noise_aug.py ``default_user_noise``): in the recipe, not in ``trained_with``.

Time-budgeted and resumable: the state (weights, AdamW moments, step, the data sampler's RNG state,
elapsed time) is written atomically every ``checkpoint_every_s`` into one safetensors file (the small
JSON state in its metadata, nothing pickled); a new run with the same recipe continues from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reference_model import bundled_codec_weights
from reference_model.config import LMConfig, load_lm_config
from reference_model.lm import load_lm
from reference_model.pairing import tokenizer_sha256

from .interrupt import StopRequest

# The objective lives in lm_objective.py; its names stay importable from here for the callers.
from .lm_objective import (  # noqa: F401
    ZERO,
    LossParts,
    LossWeights,
    TextTerms,
    TokenData,
    TrainDataError,
    check_token_range,
    crop_plan,
    crops,
    delay_grid,
    drop_user_tokens,
    eval_windows,
    evaluate,
    load_token_folder,
    moshi_loss,
    pick_depth_frames,
    read_manifest,
    sample_batch,
    teacher_forced_logits,
    temporal_forward,
    text_terms,
    valid_targets,
)
from .lm_options import CorpusRef, LMOption, OptionContext, with_default_user_noise
from .loop import Budget, Checkpoint, Provenance, Schedule, TrainingLoop, resume_state
from .state import file_sha256, write_sidecar, write_weights


@dataclass
class LMTrainRecipe:
    config: dict[str, Any]
    data_sha256: str
    data_source: str
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    user_token_dropout: float = 0.0  # share of user-stream input tokens replaced by the zero token
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    depth_fraction: float = 0.25  # share of frames the depth transformer's loss uses per step
    seed: int = 0
    loss: LossWeights = field(default_factory=LossWeights)
    schedule: str = "linear warmup, then cosine over the budget's fraction (time, or steps with max_steps)"
    max_steps: int | None = None
    options: list[dict[str, Any]] = field(default_factory=list)  # recipe options and their arguments
    init_from: dict[str, str] | None = None  # warm start: {"path", "sha256"}

    def digest(self) -> str:
        d = asdict(self)
        # Absent when unused, so the digest of a plain recipe is the one it had before options existed
        # (a training started then still resumes).
        for key in ("options", "init_from"):
            if not d[key]:
                del d[key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def lm_schedule(recipe: LMTrainRecipe) -> Schedule:
    """Warmup, then cosine over the budget's fraction down to ``min_lr_fraction`` of the peak."""
    return Schedule(recipe.lr, recipe.warmup_steps, recipe.min_lr_fraction, floor_kind="blend")


# --- the loop ----------------------------------------------------------------------------------------
def train_lm(
    out_path: str | os.PathLike,
    train: TokenData,
    *,
    heldout: TokenData | None = None,
    config: str | os.PathLike | dict | LMConfig = "tiny",
    minutes: float | None = None,
    max_steps: int | None = None,
    stop_after_steps: int | None = None,
    state_path: str | os.PathLike | None = None,
    fresh: bool = False,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
    batch_size: int = 8,
    seq_len: int = 256,
    lr: float = 1e-3,
    warmup_steps: int = 100,
    depth_fraction: float = 0.25,
    weight_decay: float = 0.0,
    user_token_dropout: float = 0.0,
    loss_weights: LossWeights | None = None,
    checkpoint_every_s: float = 180.0,
    heldout_every_s: float | None = 900.0,
    weights_dtype: str = "float16",
    log_every: int = 25,
    log: Callable[[str], None] = print,
    extra_info: dict[str, Any] | None = None,
    options: list[LMOption] | None = None,
    init_from: str | os.PathLike | None = None,
    corpus: CorpusRef | None = None,
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Train for ``minutes`` of wall time (or exactly ``max_steps`` steps; the LR schedule then follows the
    steps, so runs are reproducible; with both, the minutes are an upper bound). ``options``: recipe
    options (vemi_eval/training/lm_options; ``corpus``: the dialogue corpus the data came from, for the
    options that render more of it); ``init_from``: warm start from these LM weights. Writes
    ``out_path`` (the LM's safetensors, Moshi keys) and its ``.json`` sidecar; keeps the resumable state
    in ``state_path`` (default: ``<out stem>.state.safetensors`` beside ``out_path``; the CLI puts it
    under ``runs/``). ``stop_after_steps`` stops early as a kill would (tests); ``stop``: a signal's
    request to stop (training/interrupt.py): the state is saved, TrainingInterrupted raised. Every
    ``heldout_every_s`` of wall time (None: never) the held-out figures join the run's ``heldout_curve``,
    kept in the state and written, with the step, to ``<out stem>.progress.json`` (``final: false``): a long
    run's progress can be committed before it ends. Returns the sidecar."""
    budget = Budget(None if minutes is None else minutes * 60.0, max_steps)  # neither: ValueError
    torch.set_num_threads(threads)
    out_path = Path(out_path)
    state_path = Path(state_path) if state_path else out_path.with_name(out_path.stem + ".state.safetensors")
    cfg = load_lm_config(config)
    check_token_range(train, cfg)
    if heldout is not None:
        check_token_range(heldout, cfg)
    if train.grids[0].shape[0] != cfg.n_q + 1:
        raise TrainDataError(f"grids have {train.grids[0].shape[0]} streams; the config needs {cfg.n_q + 1}")
    options = list(options or [])
    for o in options:  # before the recipe: what an option loads (a teacher's hash) is part of it
        o.seed(seed)
        o.setup(
            OptionContext(
                cfg,
                train,
                corpus,
                device,
                seed,
                log,
                None if init_from is None else Path(init_from),
                out_path,
            )
        )
    recipe = LMTrainRecipe(
        config=cfg.to_dict(),
        data_sha256=train.sha256,
        data_source=train.source,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        warmup_steps=warmup_steps,
        depth_fraction=depth_fraction,
        weight_decay=weight_decay,
        user_token_dropout=user_token_dropout,
        seed=seed,
        loss=loss_weights or LossWeights(),
        max_steps=max_steps,
        options=[o.recipe() for o in options],
        init_from=None if init_from is None else {"path": str(init_from), "sha256": file_sha256(init_from)},
    )
    torch.manual_seed(seed)
    if init_from is not None:  # a warm start; load_lm checks every key and shape against the config
        lm = load_lm(cfg, init_from, device=device).train().requires_grad_(True)
    else:
        lm = load_lm(cfg, device=device).train().requires_grad_(True)
    # an option's own parameters (a conditioning) train beside the model's and resume with them
    option_modules = {o.name: m.to(device) for o in options if (m := o.trainable()) is not None}
    params = list(lm.parameters()) + [p for m in option_modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(
        params, lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay, foreach=False
    )
    rng = np.random.default_rng(seed)
    step, elapsed_before, cpu_before, history, curve = 0, 0.0, 0.0, [], []
    resumed_from = None
    if state_path.is_file() and not fresh:
        info, extra_state = resume_state(state_path, lm, opt, recipe.digest())
        for name, module in option_modules.items():
            prefix = f"option.{name}."
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in extra_state.items() if k.startswith(prefix)}
            )
        step, elapsed_before, history = info["step"], info["elapsed_s"], info["history"]
        curve = info.get("heldout_curve", [])  # states of before kept none
        cpu_before = float(info.get("train_cpu_s", 0.0))  # states of before kept none: the curve restarts
        rng.bit_generator.state = info["rng"]
        for o, st in zip(options, info.get("option_rng", [])):
            o.rng.bit_generator.state = st
        resumed_from = {"step": step, "elapsed_s": elapsed_before}
        log(f"resuming from {state_path} at step {step} ({elapsed_before:.0f}s done)")
    provenance = Provenance.at_start(seed, threads, device)
    recent: list[tuple[float, float]] = []

    def state_meta() -> dict[str, Any]:
        return {
            "rng": rng.bit_generator.state,
            "history": history[-400:],
            "heldout_curve": curve,
            "train_cpu_s": loop.cpu_s,  # the curve's CPU axis runs on over resumes
            **({"option_rng": [o.rng.bit_generator.state for o in options]} if options else {}),
        }

    def state_tensors() -> dict[str, torch.Tensor]:
        return {f"option.{n}.{k}": v for n, m in option_modules.items() for k, v in m.state_dict().items()}

    checkpoint = Checkpoint(
        state_path, lm, opt, recipe.digest(), state_meta, state_tensors, checkpoint_every_s
    )
    loop = TrainingLoop(
        budget, lm_schedule(recipe), checkpoint, stop, step=step, elapsed_s=elapsed_before, cpu_s=cpu_before
    )

    def one_step() -> None:
        grids = train.grids
        for o in options:
            grids = o.grids(loop.step, loop.fraction(), grids)
        plan = crop_plan(grids, rng, batch_size, seq_len)
        batch = crops(grids, plan, seq_len)
        for o in options:
            batch = o.transform(batch, plan, grids)
        drop_user_tokens(batch, cfg.dep_q, recipe.user_token_dropout, rng)
        frames = pick_depth_frames(batch, recipe.depth_fraction, rng)
        frames = None if frames is None else frames.to(device)
        batch = batch.to(device)
        parts = next((p for o in options if (p := o.objective(lm, batch, frames)) is not None), None)
        if parts is None:
            offsets = [x for o in options if (x := o.input_offset(lm, batch)) is not None]
            parts = moshi_loss(lm, batch, recipe.loss, frames, sum(offsets) if offsets else None)
            for o in options:
                parts = o.loss(lm, batch, frames, parts)
        if not torch.isfinite(parts.total):
            raise FloatingPointError(f"LM training diverged at step {loop.step} (loss {float(parts.total)})")
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        recent.append((parts.text, parts.audio))

    last_eval = [time.time()]
    progress_path = out_path.with_name(out_path.stem + ".progress.json")

    def heldout_point() -> None:
        """The held-out figures now, on the curve and in the progress file (a few seconds for the tiny LM)."""
        fig = evaluate(lm, heldout.grids, seq_len, recipe.loss, None, heldout.groups("engine_groups"))
        point = {
            "step": loop.step,
            "t": round(loop.elapsed(), 1),
            "cpu_s": round(loop.cpu_s, 1),
            "text_word_accuracy_teacher_forced": fig["text_word_accuracy_teacher_forced"],
            "text_loss": fig["text_loss"],
            "audio_loss": fig["audio_loss"],
        }
        if "text_word_accuracy_by_engine" in fig:
            point["by_engine"] = {
                k: v["accuracy"] for k, v in fig["text_word_accuracy_by_engine"]["of"].items()
            }
        curve.append(point)
        log(f"held-out at step {loop.step}: {json.dumps(point)}")
        progress = {
            "final": False,
            "produced_by": "vemi_eval.training.lm.train_lm",
            "weights": out_path.name,
            "state": str(state_path),
            "recipe_digest": recipe.digest(),
            "data_sha256": train.sha256,
            "heldout_sha256": heldout.sha256,
            "step": loop.step,
            "max_steps": max_steps,
            "minutes_budget": minutes,
            "heldout_curve": curve,
            "resume": "the same command resumes from the state (a fresh start needs --fresh)",
        }
        write_sidecar(progress_path, progress)

    def after_step() -> None:
        if heldout is not None and heldout_every_s and time.time() - last_eval[0] >= heldout_every_s:
            heldout_point()
            last_eval[0] = time.time()
        if loop.step % log_every == 0:
            r = np.array(recent[-log_every:])
            history.append(
                {
                    "step": loop.step,
                    "t": round(loop.elapsed(), 1),
                    "text": float(r[:, 0].mean()),
                    "audio": float(r[:, 1].mean()),
                }
            )
            steps_per_s = (loop.step - loop.first_step) / max(loop.run_seconds(), 1e-9)
            log(
                f"step {loop.step} t={loop.elapsed():.0f}s lr={loop.lr:.2e} text={r[:, 0].mean():.4f} "
                f"audio={r[:, 1].mean():.4f} ({steps_per_s:.3f} step/s)"
            )

    if not loop.run(one_step, after_step, stop_after_steps=stop_after_steps):
        return {"stopped_at": loop.step, "state": str(state_path)}
    step = loop.step
    lm.eval()
    wall = loop.elapsed()
    run_s = loop.run_seconds()
    run_steps = step - loop.first_step
    # The shipped weights are stored in weights_dtype (half the bytes of fp32; loading casts them to the
    # dtype asked for); the resume state keeps exact fp32.
    store = getattr(torch, weights_dtype)
    final = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    if any(type(o).export is not LMOption.export for o in options):
        for o in options:  # e.g. a conditioning folded into the plain model's weights
            final = o.export(lm, final)
        lm.load_state_dict(final, strict=True)  # the held-out figures below are the shipped model's
    tensors = {
        k: (v.to(store) if v.is_floating_point() else v).contiguous().clone() for k, v in final.items()
    }
    write_weights(out_path, tensors, {"steps": str(step), "recipe_digest": recipe.digest()})
    tail = np.array(recent[-200:]) if recent else np.zeros((1, 2))
    sidecar: dict[str, Any] = {
        "produced_by": "vemi_eval.training.lm.train_lm",
        "trained_with": [o.name for o in options if not o.in_base_recipe],
        "weights": out_path.name,
        "weights_sha256": file_sha256(out_path),
        "weights_dtype": weights_dtype,
        "recipe": asdict(recipe),
        "recipe_digest": recipe.digest(),
        "data": {
            "source": train.source,
            "sha256": train.sha256,
            "sequences": len(train.grids),
            "frames": train.frames,
            "manifest": train.manifest,
        },
        "parameters": sum(p.numel() for p in lm.parameters()),
        **provenance.run_fields(),
        "minutes_budget": minutes,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "train_cpu_s": round(loop.cpu_s, 1),  # the training steps' CPU time, over every resume
        "steps_per_s_this_process": round(run_steps / max(run_s, 1e-9), 4),
        "resumed_from": resumed_from,
        "final_losses_mean_last_200": {"text": float(tail[:, 0].mean()), "audio": float(tail[:, 1].mean())},
        "loss_history": history[-400:],
        **provenance.code_fields(),
        **({"options": {o.name: o.report() for o in options}} if options else {}),
        **(extra_info or {}),
    }
    if heldout is not None:
        t_eval = time.time()
        sidecar["heldout"] = {
            "source": heldout.source,
            "sha256": heldout.sha256,
            "sequences": len(heldout.grids),
            **evaluate(
                lm, heldout.grids, seq_len, recipe.loss, heldout.groups(), heldout.groups("engine_groups")
            ),
        }
        log(f"held-out ({time.time() - t_eval:.0f}s): {json.dumps(sidecar['heldout'])}")
        if curve:
            sidecar["heldout_curve"] = curve
    write_sidecar(out_path.with_suffix(".json"), sidecar)
    progress_path.unlink(missing_ok=True)  # its curve is in the sidecar now
    return sidecar


# --- the default recipe: the tiny preset on the dialogue corpus ----------------------------------------
def train_tiny_dialogue(
    out_path: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    heldout_data: str | os.PathLike | None = None,
    codec_checkpoint: str | os.PathLike | None = None,
    train_sessions: int | None = None,
    corpus_split: str = "train",
    config: str | os.PathLike = "tiny",
    corpus_workers: int = 1,
    user_noise: bool = True,
    log: Callable[[str], None] = print,
    **train_args: Any,
) -> dict[str, Any]:
    """``train_lm`` on ``data`` (a token-grid folder), or by default on the dialogue corpus's training
    split tokenised with the tiny codec (``codec_checkpoint``, default its bundled weights), evaluated
    on the held-out split (unseen voices and prompts). Tokenisation is cached; ``corpus_workers``
    processes build it (the training itself runs on ``threads``). ``user_noise``: on the corpus, the
    recipe's noise on the user channel (off: an ablation; with ``data``, give noise-aug its copy_data)."""
    cfg = load_lm_config(config)
    extra: dict[str, Any] = {}
    if data is None:
        from vemi_eval.data import dialogue

        vocab = dialogue.vocab()
        if cfg.text_card != vocab.text_card or cfg.existing_text_padding_id != vocab.pad_id:
            raise TrainDataError(
                f"the dialogue corpus needs text_card {vocab.text_card} and padding id {vocab.pad_id}; "
                f"the config has {cfg.text_card} and {cfg.existing_text_padding_id}"
            )
        data = dialogue.tokenised_split(
            corpus_split, codec_checkpoint, limit=train_sessions, workers=corpus_workers, log=log
        )
        if heldout_data is None:
            heldout_data = dialogue.tokenised_split(
                "heldout", codec_checkpoint, workers=corpus_workers, log=log
            )
        extra["corpus"] = "vemi_eval.data.dialogue"
        extra["vocab"] = list(vocab.tokens)
        ckpt = None if codec_checkpoint is None else str(codec_checkpoint)
        train_args.setdefault("corpus", CorpusRef(ckpt, train_sessions, corpus_split))
        if user_noise:
            train_args["options"] = with_default_user_noise(list(train_args.get("options") or []))
        # the pair check (reference_model/pairing.py) accepts a codec with the same tokeniser tensors
        extra["codec_tokenizer_sha256"] = tokenizer_sha256(ckpt or bundled_codec_weights("tiny"))
    elif corpus_split != "train":
        raise TrainDataError("--corpus-split chooses a dialogue corpus split; it has no use with --data")
    elif not user_noise:
        raise TrainDataError(
            "--no-user-noise turns off the dialogue corpus's noise; it has no use with --data"
        )
    train = load_token_folder(data, cfg.n_q + 1)
    held = load_token_folder(heldout_data, cfg.n_q + 1) if heldout_data is not None else None
    extra["codec_sha256"] = train.manifest.get("codec_sha256")
    return train_lm(out_path, train, heldout=held, config=cfg, log=log, extra_info=extra, **train_args)
