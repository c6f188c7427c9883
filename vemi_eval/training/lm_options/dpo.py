"""Option ``dpo`` (enhancement 4.2): automated preference optimisation of the LM (DPO, Rafailov et al.
2023), from a warm start that is also the frozen reference model.

Preference pairs come from the model itself, not from people: on ``prompts`` training sessions of the
dialogue corpus the starting model (``--init-from``) samples two conversations each with the streaming
generator (the session's user codes in, frame by frame; ``temp_text`` > 0 so the two differ), and the
automatic reward of vemi_eval/measurements/preference.py ranks them (answer correctness of the text
stream against the task's deterministic answer, response latency after the user stops, speaker
similarity of the decoded answers to the model voice's reference; weights ``RewardWeights``). A pair
with equal rewards teaches nothing and is dropped. Each step then takes ``pair_batch`` pairs and
minimises

    -log sigmoid(beta * ((log p(w) - log p_ref(w)) - (log p(l) - log p_ref(l))))

where log p of a sampled conversation is the sum of the teacher-forced log-probabilities of the model's
streams (text and its dep_q audio codebooks; the user's streams are inputs) over its valid frames. At the
reference the loss is log 2. The pairs are drawn once (off-policy DPO); they are a function of the seed
and the starting weights, so a resumed run draws the same ones.

At full scale: the same recipe on a Moshi-format model, with the prompts and reward of the user's task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from .base import LMOption, OptionContext, OptionError


def dpo_loss(
    logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> torch.Tensor:
    """Rafailov et al.'s loss, mean over pairs."""
    return -F.logsigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))).mean()


def sequence_logp(lm, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (total log-prob [B], text log-prob [B], audio log-prob [B]) of the model's
    streams over the valid targets (every frame through the depth transformer)."""
    from ..lm_objective import teacher_forced_logits, valid_targets

    text_logits, audio_logits, targets = teacher_forced_logits(lm, codes)
    valid = valid_targets(lm, targets)
    B, K, T = targets.shape
    text_t = targets[:, 0].masked_fill(~valid[:, 0], 0)
    lt = torch.log_softmax(text_logits.float(), -1).gather(-1, text_t[..., None])[..., 0]
    lt = (lt * valid[:, 0]).sum(dim=1)
    audio_t = targets[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    audio_ok = valid[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    la = torch.log_softmax(audio_logits.float(), -1).gather(-1, audio_t.masked_fill(~audio_ok, 0)[..., None])[
        ..., 0
    ]
    la = (la * audio_ok).view(B, T, lm.dep_q).sum(dim=(1, 2))
    return lt + la, lt, la


@torch.no_grad()
def sample_conversations(
    lm,
    user: torch.Tensor,
    draws: int,
    temp: float,
    temp_text: float,
    seed: int,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """user [P, n_user, T] (undelayed user codes) -> sampled grids [P * draws, 1 + n_q, T]: the model's text
    and audio streams generated live against each user (draws per user), the user's codes as given.
    The user code of grid frame t is fed at step t + 1 (the trainer's alignment: teacher forcing these
    grids reproduces the logits the streamer sampled from). ``condition`` [P * draws, 1, dim]: an offset
    added to every step's input (a conditioning)."""
    from reference_model.lm import Streamer

    P, n_user, T = user.shape
    B = P * draws
    torch.manual_seed(seed)
    streamer = Streamer(lm, temp=temp, temp_text=temp_text, batch_size=B)
    if condition is not None:  # [B, 1, dim] added to every step's input (a conditioning's offset)
        streamer.condition = condition.to(device=lm.device, dtype=lm.dtype)
    fed = user.repeat_interleave(draws, dim=0).to(lm.device)
    outputs = []
    for s in range(T + 1 + lm.max_delay):
        frame = fed[:, :, s - 1 : s] if 1 <= s <= T else torch.full((B, n_user, 1), -1, device=lm.device)
        out = streamer.step(frame)
        if out is not None and len(outputs) < T:
            outputs.append(out[:, :, 0])
    grid = torch.empty(B, 1 + lm.n_q, T, dtype=torch.long)
    grid[:, : 1 + lm.dep_q] = torch.stack(outputs, dim=2).cpu()
    grid[:, 1 + lm.dep_q :] = user.repeat_interleave(draws, dim=0)
    return grid


@dataclass
class PreferencePairs:
    chosen: torch.Tensor  # [N, K, T]
    rejected: torch.Tensor
    ref_chosen: torch.Tensor  # [N] reference log-probs
    ref_rejected: torch.Tensor


@dataclass
class Dpo(LMOption):
    name: ClassVar[str] = "dpo"
    beta: float = 0.1
    prompts: int = 12  # training sessions sampled (two conversations each)
    frames: int = 128  # frames of each session from its start (10.24 s: two to three turns)
    pair_batch: int = 4  # pairs per step
    temp: float = 0.8  # audio sampling temperature of the pair generation
    temp_text: float = 0.7  # text sampling temperature (> 0: the two samples differ; 0.7 as deployed)
    speaker_reward: bool = True  # decode the answers and score the voice (a resemblyzer pass per sample)

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        for key in ("prompts", "frames", "pair_batch"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.temp_text <= 0:
            raise ValueError(
                f"temp_text must be > 0 (the two samples must be able to differ), got {self.temp_text}"
            )

    # --- pairs from the starting model ---------------------------------------------------------------
    def setup(self, ctx: OptionContext) -> None:
        from reference_model.lm import load_lm

        if getattr(self, "pairs", None) is not None:  # pairs made by the caller (tests, a user's own)
            return
        if ctx.init_from is None:
            raise OptionError("dpo: needs --init-from (the starting model, also the frozen reference)")
        if ctx.corpus is None:
            raise OptionError(
                "dpo: the reward is the dialogue task's; train on the dialogue corpus (no --data)"
            )
        t0 = time.time()
        self.reference = load_lm(ctx.cfg, ctx.init_from, device=ctx.device).eval().requires_grad_(False)
        sessions, grids = self._prompts(ctx)
        user = torch.stack([g[1 + ctx.cfg.dep_q :, : self.frames] for g in grids])
        samples = sample_conversations(
            self.reference, user, 2, self.temp, self.temp_text, int(self.rng.integers(2**31))
        )
        rewards = self._rewards(sessions, samples, ctx)
        chosen, rejected, ties = [], [], 0
        for p in range(len(sessions)):
            a, b = rewards[2 * p], rewards[2 * p + 1]
            if abs(a.total - b.total) <= 1e-9:
                ties += 1
                continue
            w, lo = (2 * p, 2 * p + 1) if a.total > b.total else (2 * p + 1, 2 * p)
            chosen.append(w)
            rejected.append(lo)
        if not chosen:
            raise OptionError(f"dpo: all {len(sessions)} prompts gave two samples of equal reward; no pairs")
        self.pairs = self._with_reference(samples[chosen], samples[rejected])
        self.stats = {
            "prompts": len(sessions),
            "pairs": len(chosen),
            "ties_dropped": ties,
            "reward_chosen_mean": float(np.mean([rewards[i].total for i in chosen])),
            "reward_rejected_mean": float(np.mean([rewards[i].total for i in rejected])),
            "correct_chosen_mean": float(np.mean([rewards[i].correct for i in chosen])),
            "correct_rejected_mean": float(np.mean([rewards[i].correct for i in rejected])),
            "generation_s": round(time.time() - t0, 1),
        }
        self.steps: list[tuple[float, float]] = []
        took = self.stats["generation_s"]
        ctx.log(f"dpo: {len(chosen)} pairs from {len(sessions)} prompts ({ties} ties dropped) in {took} s")

    def _prompts(self, ctx: OptionContext):
        from reference_model.checkpoint import read_safetensors
        from vemi_eval.data import dialogue as dlg

        by_id: dict[str, torch.Tensor] = {}
        folder = ctx.train.source
        for f in sorted(Path(folder).glob("*.safetensors")):
            by_id.update({k: v.to(torch.long) for k, v in read_safetensors(f).items()})
        planned = dlg.dialogue_sessions(ctx.corpus.split, limit=ctx.corpus.train_sessions)
        sessions = [s for s in planned if s.id in by_id]
        if not sessions:
            raise OptionError(f"dpo: no dialogue training session found in {folder}")
        pick = self.rng.choice(len(sessions), size=min(self.prompts, len(sessions)), replace=False)
        chosen = [sessions[int(i)] for i in sorted(pick)]
        return chosen, [self._fit(by_id[s.id]) for s in chosen]

    def _fit(self, g: torch.Tensor) -> torch.Tensor:
        if g.shape[1] >= self.frames:
            return g[:, : self.frames]
        out = torch.full((g.shape[0], self.frames), -1, dtype=torch.long)
        out[:, : g.shape[1]] = g
        return out

    def _rewards(self, sessions, samples: torch.Tensor, ctx: OptionContext):
        from vemi_eval.data import dialogue as dlg
        from vemi_eval.evaluators import dialogue_scoring as scoring

        weights = scoring.RewardWeights(
            speaker=scoring.RewardWeights().speaker if self.speaker_reward else 0.0
        )
        sr, fs = dlg.SAMPLE_RATE, dlg.FRAME_SIZE
        codec = ref = None
        if self.speaker_reward:
            from reference_model import bundled_codec_weights, load_codec

            ckpt = ctx.corpus.codec_checkpoint if ctx.corpus is not None else None
            codec = load_codec("tiny", ckpt or bundled_codec_weights("tiny"))
            ref = scoring.reference_embedding()
        self.reward_weights = weights
        out = []
        for j, grid in enumerate(samples):
            sess = sessions[j // 2]
            tokens = [int(t) for t in grid[0]]
            spk = None
            if codec is not None:
                with torch.no_grad():
                    audio = codec.decode(grid[None, 1 : 1 + ctx.cfg.dep_q].clamp(min=0))[0, 0].numpy()
                spk = scoring.speaker_score(scoring.answers_audio(sess, audio, sr), sr, ref)
            out.append(scoring.reward(sess, tokens, fs, sr, weights, spk))
        return out

    @torch.no_grad()
    def _with_reference(self, chosen: torch.Tensor, rejected: torch.Tensor) -> PreferencePairs:
        dev = self.reference.device
        rw = torch.cat([sequence_logp(self.reference, c[None].to(dev))[0] for c in chosen]).cpu()
        rl = torch.cat([sequence_logp(self.reference, r[None].to(dev))[0] for r in rejected]).cpu()
        return PreferencePairs(chosen, rejected, rw, rl)

    # --- the objective -------------------------------------------------------------------------------
    def objective(self, lm, batch: torch.Tensor, frames: torch.Tensor | None):
        from ..lm_objective import LossParts

        n = self.pairs.chosen.shape[0]
        idx = torch.from_numpy(self.rng.choice(n, size=min(self.pair_batch, n), replace=False))
        dev = lm.device
        both = torch.cat([self.pairs.chosen[idx], self.pairs.rejected[idx]]).to(dev)
        logp, lt, la = sequence_logp(lm, both)
        k = len(idx)
        loss = dpo_loss(
            logp[:k],
            logp[k:],
            self.pairs.ref_chosen[idx].to(dev),
            self.pairs.ref_rejected[idx].to(dev),
            self.beta,
        )
        margin = (logp[:k] - self.pairs.ref_chosen[idx].to(dev)) - (
            logp[k:] - self.pairs.ref_rejected[idx].to(dev)
        )
        self.steps.append((float(loss.detach()), float((margin > 0).float().mean())))
        valid = both[:, 0] >= 0
        # text / audio: mean per-frame negative log-likelihood of the chosen samples (for the log)
        per_frame = max(1, int(valid[:k].sum()))
        return LossParts(
            loss,
            float(-lt[:k].sum().detach()) / per_frame,
            float(-la[:k].sum().detach()) / per_frame,
            [],
            0,
            0,
        )

    def recipe(self) -> dict[str, Any]:
        from vemi_eval.evaluators.dialogue_scoring import RewardWeights

        w = RewardWeights()
        weights = {
            "correct": w.correct,
            "latency": w.latency,
            "speaker": w.speaker if self.speaker_reward else 0.0,
        }
        return {**super().recipe(), "reward_weights": weights}

    def report(self) -> dict[str, Any]:
        tail = self.steps[-10:]
        return {
            **getattr(self, "stats", {}),
            "reward": "vemi_eval.measurements.preference.reward (automated: no human preference data)",
            "dpo_loss_first": self.steps[0][0] if self.steps else None,
            "dpo_loss_last10": float(np.mean([s[0] for s in tail])) if tail else None,
            "implicit_reward_accuracy_last10": float(np.mean([s[1] for s in tail])) if tail else None,
        }
