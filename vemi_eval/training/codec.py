"""Training recipe of the "tiny" codec preset, on CPU (or a GPU where one is given).

Recipe 2 (the diagnosis behind it is in docs/results.md; the bundled weights were made with
``--recipe v1-continue`` from recipe 1's, see their JSON sidecar):

* Data: the codec corpus (``vemi_eval.data.codec_corpus``): espeak-ng's English voices x ~90 variants at
  random pitch and rate, and 10 festival voices (recorded human speakers, 8 languages), thousands of
  random sentences; whole voices held out of training for evaluation.
* Losses: DAC's mel loss scales (L1 on log10 mel at 7 scales, windows 32..2048; smooth log10(mel + 1e-5)
  instead of DAC's clamp, whose zero gradient below 1e-5 froze a quiet decoder), a small waveform L1
  (EnCodec's 0.1) and the RVQ commitment, relative to the latent's energy.
* Initialisation: every conv rescaled on a real batch so activations keep a unit-ish scale and the
  decoder starts at the input's level (LSUV); PyTorch's default init loses ~10x through each half.
* Codebooks learn by EMA with k-means initialisation and dead-code restarts (as Mimi); quantizer dropout
  (8 codebooks half of the time, else uniform in [1, max]); half of the items bypass the quantizer
  (Mimi), so the decoder learns from the clean latent too.
* Weight normalisation is available (``weight_norm``; folded into the weights when they are written, so
  the saved keys stay moshi's) but off: here it let the activations collapse (see ``CodecRecipe``).
* No adversarial loss (not enough CPU time for it to pay off).

The learning rate follows the fraction of the wall-time budget spent (cosine after a warmup), so a run
of ``minutes`` ends annealed whatever the machine's speed. Every ``checkpoint_every_s`` the full training
state (weights, EMA codebooks, optimizer moments, step, elapsed time, RNG states) is written atomically
beside the output as safetensors + JSON; a killed run started again with the same arguments resumes
from it. The final weights and their JSON sidecar (recipe, data hash, steps, wall time, held-out quality
per engine and number of codebooks) are written at the end.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from reference_model.codec import MimiCodec, codec_config

from ..data.dialogue.spec import MODEL_VOICE
from ..errors import OptionsError
from ..storage import file_sha256
from .codec_audio import TrainingAudio
from .codec_eval import evaluate_codec, heldout_sets
from .codec_losses import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    OptionParts,
    PhaseDerivativeLoss,
    frame_level_loss,
)
from .codec_model import (
    add_weight_norm,
    codes_digest,
    freeze_encoder_side,
    plain_copy,
    unit_variance_init,
    warm_start_into,
)
from .codec_recipes import CodecRecipe
from .interrupt import StopRequest
from .loop import (
    Budget,
    Checkpoint,
    Provenance,
    Schedule,
    TrainingLoop,
    resume_state,
    resumed_without_state,
    unfinished_run,
)
from .state import TrainingStateError, write_sidecar, write_weights

PRODUCED_BY = "vemi_eval.training.codec.train_codec"


def codec_schedule(recipe: CodecRecipe) -> Schedule:
    """Warmup, then cosine over the budget's fraction, never below 5% of the peak."""
    return Schedule(recipe.lr, recipe.warmup_steps, floor=0.05, floor_kind="clamp")


def _state_path(out_path: Path) -> Path:
    return out_path.with_suffix(".state.safetensors")


def train_codec(
    out_path: str | os.PathLike,
    *,
    minutes: float,
    recipe: CodecRecipe | None = None,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
    checkpoint_every_s: float = 300.0,
    eval_every_s: float = 900.0,
    log_every: int = 50,
    log=print,
    evaluate: bool = True,
    init_from: str | os.PathLike | None = None,
    fresh: bool = False,
    audio: TrainingAudio | None = None,
    max_steps: int | None = None,
    clock: str = "wall",
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Train the recipe's codec for ``minutes`` of wall time (``clock="cpu"``: of the training steps' CPU
    time, so that arms of an A/B on a shared machine get equal compute), or ``max_steps``; resume from the
    state beside ``out_path`` when there is one (unless ``fresh``). Writes ``out_path`` (safetensors, weight
    norm folded) and ``out_path`` with suffix .json (recipe, seed, steps, wall time, CPU time, losses,
    held-out quality)."""
    recipe = recipe or CodecRecipe()
    budget = Budget(minutes * 60.0, max_steps, clock)  # type: ignore[arg-type]  # Budget checks the clock
    if recipe.train_parts not in ("all", "decoder"):
        raise ValueError(f"train_parts must be 'all' or 'decoder', got {recipe.train_parts!r}")
    if recipe.train_parts == "decoder" and init_from is None:
        raise OptionsError("a decoder-only recipe trains on a codec's codes: pass --init-from")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_path = Path(out_path)
    json_path = out_path.with_suffix(".json")
    cfg = codec_config(recipe.preset)
    # multi-rate: a structure field, recorded in the weights' metadata too (load_codec reads it there)
    if recipe.multi_rate_strides:
        cfg.quantizer["multi_rate_strides"] = list(recipe.multi_rate_strides)
    codec = MimiCodec(cfg)
    warm_start: dict[str, Any] | None = None
    if init_from is not None:
        init_from = Path(init_from)
        fresh_parts = warm_start_into(codec, init_from)
        sidecar = init_from.with_suffix(".json")
        prior = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        warm_start = {"checkpoint": init_from.name, "sha256": file_sha256(init_from),
                      "prior_steps": prior.get("steps"), "prior_git_commit": prior.get("git_commit"),
                      "fresh_modules": fresh_parts}  # fmt: skip
    else:
        for vq in list(codec.quantizer.rvq_first.vq.layers) + list(codec.quantizer.rvq_rest.vq.layers):
            vq._codebook._initialized.fill_(0.0)  # k-means init on first use, as moshi
    audio = audio or TrainingAudio(recipe, cfg.sample_rate, log=log)
    init_scales = None
    if recipe.init == "unit-variance" and init_from is None:
        init_batch = audio.batch(np.random.default_rng(seed + 1), recipe.segment_frames * cfg.frame_size)
        init_scales = unit_variance_init(codec, init_batch)
    if recipe.weight_norm:
        add_weight_norm(codec)
    for rvq in (codec.quantizer.rvq_first, codec.quantizer.rvq_rest):
        rvq.commitment = recipe.commitment
    codec.to(device).train()
    frozen = freeze_encoder_side(codec) if recipe.train_parts == "decoder" else []
    mel_loss = MultiScaleMelLoss(cfg.sample_rate, recipe.mel_scales, recipe.mel).to(device)
    stft_loss = MultiResolutionSTFTLoss().to(device) if recipe.stft_weight else None
    phase_loss = PhaseDerivativeLoss().to(device) if recipe.phase_weight else None
    # the losses see the samples a stream has complete: an iSTFT decoder's last n_fft - hop are partial
    keep = recipe.segment_frames * cfg.frame_size - codec.decode_delay
    needs_parts = recipe.options or recipe.adv_weight or recipe.feat_weight
    parts = OptionParts(recipe, codec, threads, device) if needs_parts else None
    trained = [p for p in codec.parameters() if p.requires_grad] + (
        parts.parameters() if parts is not None else []
    )
    opt = torch.optim.AdamW(trained, lr=recipe.lr, betas=recipe.betas, weight_decay=0.0)
    length = recipe.segment_frames * cfg.frame_size
    max_q = codec.max_codebooks
    step, elapsed, progress, cpu_s = 0, 0.0, [], 0.0
    st_path = _state_path(out_path)
    gone_state: dict[str, Any] | None = None
    if st_path.is_file() and not fresh:
        meta, extra_state = resume_state(st_path, codec, opt, recipe.digest())
        torch.set_rng_state(extra_state["rng.torch"])
        if parts is not None:
            parts.load_state_tensors(extra_state)
        rng.bit_generator.state = meta["numpy_rng"]
        step, elapsed = int(meta["step"]), float(meta["elapsed_s"])
        progress, cpu_s = list(meta.get("progress", [])), float(meta.get("train_cpu_s", 0))
        log(f"resumed from {st_path} at step {step} ({elapsed:.0f} s done)")
    elif not fresh and (unfinished := unfinished_run(out_path, PRODUCED_BY, recipe.digest())) is not None:
        # a machine without the state (a fresh clone): the run's committed weights at its last checkpoint,
        # a fresh optimizer and a reseeded sampler; the schedule goes on where it was
        if recipe.weight_norm:
            raise TrainingStateError(
                f"{out_path}: no resume state; a weight-norm recipe restarts with --init-from"
            )
        codec.load_state_dict(load_file(str(out_path)), strict=True)
        step, elapsed = int(unfinished["steps"]), float(unfinished["wall_time_s"])
        cpu_s, progress = float(unfinished.get("train_cpu_s", 0.0)), list(unfinished.get("progress", []))
        rng = np.random.default_rng([seed, step])
        torch.manual_seed(seed + step)
        gone_state = resumed_without_state(out_path, step)
        log(f"no resume state beside {out_path}: its weights go on from step {step} with a fresh optimizer")
    provenance = Provenance.at_start(seed, threads, device)
    recent: list[tuple[float, float, float]] = []
    recent_options: dict[str, list[float]] = {}
    eval_sets = heldout_sets(cfg.sample_rate, per_set=4) if evaluate else []
    # a fixed batch of training audio: its codes' digest, at the start and in the sidecar, shows the
    # frozen tokeniser unchanged
    probe_audio = list(audio.batch(np.random.default_rng(seed + 2), length)[:, 0].numpy()) if frozen else []
    codes_at_start = codes_digest(codec, probe_audio) if frozen else None

    def state_meta() -> dict[str, Any]:
        return {"train_cpu_s": loop.cpu_s, "numpy_rng": rng.bit_generator.state, "progress": progress}

    def state_tensors() -> dict[str, torch.Tensor]:
        return {"rng.torch": torch.get_rng_state(), **(parts.state_tensors() if parts is not None else {})}

    checkpoint = Checkpoint(
        st_path, codec, opt, recipe.digest(), state_meta, state_tensors, checkpoint_every_s
    )
    loop = TrainingLoop(
        budget, codec_schedule(recipe), checkpoint, stop, step=step, elapsed_s=elapsed, cpu_s=cpu_s
    )

    def write_outputs(final: bool, extra: dict[str, Any]) -> None:
        plain = plain_copy(codec).to("cpu")
        meta = {"preset": recipe.preset, "steps": str(loop.step)}
        if recipe.multi_rate_strides:
            meta["multi_rate_strides"] = json.dumps(list(recipe.multi_rate_strides))
        if cfg.decoder is not None:  # load_codec builds the right decoder from the file alone
            meta["decoder"] = json.dumps(cfg.decoder)
        if cfg.encoder is not None:  # ... and the right encoder
            meta["encoder"] = json.dumps(cfg.encoder)
        write_weights(out_path, plain.state_dict(), meta)
        tail = np.array(recent[-500:]) if recent else np.zeros((1, 3))
        info = {
            "produced_by": PRODUCED_BY,
            "trained_with": list(recipe.options),
            "trained": True,
            "recipe": {**asdict(recipe), "digest": recipe.digest(), "config": cfg.to_dict()},
            "data": audio.summary,
            "warm_start": warm_start,
            "frozen": frozen,
            "resumed_without_state": gone_state,
            **(
                {"codes_digest_at_start": codes_at_start, "codes_digest": codes_digest(codec, probe_audio)}
                if frozen
                else {}
            ),
            **(parts.summary() if parts is not None else {}),
            "init_scales": init_scales,
            **provenance.run_fields(),
            "minutes_budget": minutes,
            "steps": loop.step,
            "samples_seen_hours": round(loop.step * recipe.batch_size * length / cfg.sample_rate / 3600, 2),
            "wall_time_s": round(loop.elapsed(), 1),
            # CPU seconds of the training steps (evaluations and checkpoints not counted), over resumes
            "train_cpu_s": round(loop.cpu_s, 1),
            "clock": clock,
            "train_time_s": round(loop.steps_s, 1),
            "train_s_per_step": round(loop.steps_s / max(loop.step - loop.first_step, 1), 3),
            "final": final,
            "final_losses_mean_last_500": {
                "mel": float(tail[:, 0].mean()),
                "wave_l1": float(tail[:, 1].mean()),
                "commit": float(tail[:, 2].mean()),
                **{k: float(np.mean(v[-500:])) for k, v in recent_options.items()},
            },  # fmt: skip
            "progress": progress,
            **provenance.code_fields(),
            **extra,
        }
        write_sidecar(json_path, info)

    def one_step() -> None:
        if frozen:  # evaluate_codec's train() switched the frozen side back to train mode
            freeze_encoder_side(codec)
        x = audio.batch(rng, length).to(device)
        n_q = 8 if rng.random() < 0.5 else int(rng.integers(1, max_q + 1))
        n_q = min(n_q, max_q)
        bypass = torch.from_numpy(rng.random(recipe.batch_size) < recipe.bypass_rate).to(device)
        y, _, commit = codec(x, n_q, bypass)
        y, x = y[..., :keep], x[..., :keep]
        l_mel = mel_loss(y, x)
        l_wave = F.l1_loss(y, x)
        loss = recipe.mel_weight * l_mel + recipe.wave_weight * l_wave + recipe.commit_weight * commit
        if recipe.level_weight:
            l_level = frame_level_loss(y, x)
            loss = loss + recipe.level_weight * l_level
            recent_options.setdefault("level", []).append(l_level.item())
        if stft_loss is not None:
            l_stft = stft_loss(y, x)
            loss = loss + recipe.stft_weight * l_stft
            recent_options.setdefault("stft", []).append(l_stft.item())
        if phase_loss is not None:
            l_phase = phase_loss(y, x)
            loss = loss + recipe.phase_weight * l_phase
            recent_options.setdefault("phase", []).append(l_phase.item())
        if parts is not None:
            for term, value in parts.losses(x, y).items():
                loss = loss + parts.weights()[term] * value
                recent_options.setdefault(term, []).append(value.item())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"codec training diverged at step {loop.step} (loss {float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, recipe.grad_clip)
        opt.step()
        recent.append((l_mel.item(), l_wave.item(), commit.item()))

    last_eval = time.time()

    def after_step() -> None:
        nonlocal last_eval
        step = loop.step
        if step % log_every == 0:
            r = np.array(recent[-log_every:])
            extra_terms = "".join(f" {k}={np.mean(v[-log_every:]):.4f}" for k, v in recent_options.items())
            log(
                f"step {step} t={loop.elapsed():.0f}s lr={opt.param_groups[0]['lr']:.2e} "
                f"mel={r[:, 0].mean():.4f} wave={r[:, 1].mean():.5f} commit={r[:, 2].mean():.4f}{extra_terms}"
            )
        if eval_sets and time.time() - last_eval > eval_every_s:
            q = evaluate_codec(codec, eval_sets, (8, max_q))
            progress.append({"step": step, "t_s": round(loop.elapsed()), "train_cpu_s": round(loop.cpu_s),
                             "heldout_subset": q})  # fmt: skip
            log(f"step {step} held-out subset: " + json.dumps({k: v["8"] for k, v in q.items()})[:400])
            last_eval = time.time()

    if eval_sets and not progress:  # the curve's first point: where the arm starts
        q = evaluate_codec(codec, eval_sets, (8, max_q))
        progress.append({"step": step, "t_s": 0, "train_cpu_s": round(cpu_s), "heldout_subset": q})
        last_eval = time.time()
    loop.run(one_step, after_step, on_checkpoint=lambda: write_outputs(False, {}))
    if parts is not None:
        parts.remove()
    codec.eval()
    extra: dict[str, Any] = {}
    write_outputs(False, extra)
    if evaluate:
        t_eval = time.time()
        extra["heldout_quality"] = evaluate_codec(plain_copy(codec).to("cpu"), heldout_sets(cfg.sample_rate))
        extra["heldout_quality_note"] = (
            "offline round trip, mean over held-out voices never used in training, per engine: "
            "espeak_eval_corpus = the codec suite's data; *_heldout_voices = codec_corpus(split='heldout')"
        )
        if recipe.model_voice_share > 0:  # the model's voice is one of the held-out festival voices
            extra["heldout_quality_note"] += (
                f"; but {MODEL_VOICE} (the model's voice) was trained on here, reading other sentences "
                "(data/model_voice.py): festival_heldout_voices' per_speaker_stoi holds the others apart"
            )
        brief = {
            k: {n: [round(v[m], 3) for m in ("pesq_wb", "stoi", "level_db")] for n, v in q.items()}
            for k, q in extra["heldout_quality"].items()
        }
        log(f"held-out quality ({time.time() - t_eval:.0f}s): {json.dumps(brief)}")
    write_outputs(True, extra)
    return json.loads(json_path.read_text())
