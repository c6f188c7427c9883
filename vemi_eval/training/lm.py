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
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from reference_model import bundled_codec_weights
from reference_model.checkpoint import read_safetensors
from reference_model.config import LMConfig, load_lm_config
from reference_model.lm import load_lm
from reference_model.lm.model import LMModel
from reference_model.pairing import tokenizer_sha256
from vemi_eval.errors import DataError, one_line
from vemi_eval.stats import counts_by_group

from .interrupt import StopRequest, end_of_loop
from .lm_options import CorpusRef, LMOption, OptionContext, with_default_user_noise
from .state import (
    file_sha256,
    git_commit,
    load_training_state,
    save_training_state,
    write_sidecar,
    write_weights,
)

ZERO = -1  # Moshi's zero token: zero embedding as input, masked as target


class TrainDataError(DataError):
    """Unusable training data or resume state (one line; the CLI exits 2)."""


# --- data ------------------------------------------------------------------------------------------
@dataclass
class TokenData:
    """Token grids [1 + n_q, T] (int64) and where they came from."""

    grids: list[torch.Tensor]
    sha256: str
    source: str
    manifest: dict[str, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # each grid's tensor name (a session id), or empty

    def groups(self, entry_name: str = "groups") -> tuple[str, list[str]] | None:
        """(what the groups are, each grid's group) from the manifest's ``groups`` entry
        ({"by": "user voice", "of": {name: group}}; the dialogue corpus's ``engine_groups`` by user
        engine), or None when it has none or misses a grid."""
        entry = self.manifest.get(entry_name)
        if not isinstance(entry, dict) or len(self.names) != len(self.grids):
            return None
        of = entry.get("of") or {}
        if not all(n in of for n in self.names):
            return None
        return str(entry.get("by", "group")), [str(of[n]) for n in self.names]

    @property
    def frames(self) -> int:
        return sum(int(g.shape[1]) for g in self.grids)


def load_token_folder(folder: str | os.PathLike, num_streams: int) -> TokenData:
    """Every tensor of every ``*.safetensors`` in ``folder`` (sorted by file, then tensor name)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        raise TrainDataError(f"no .safetensors token grids in {folder}")
    h = hashlib.sha256()
    grids, names = [], []
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
        for name, t in sorted(read_safetensors(f).items()):
            if t.dtype.is_floating_point or t.dim() != 2 or t.shape[0] != num_streams or t.shape[1] < 1:
                raise TrainDataError(
                    f"{f.name}:{name} is {t.dtype} {list(t.shape)}; expected an integer grid "
                    f"[{num_streams}, T] (1 text + n_q audio streams, T >= 1 frames)"
                )
            if bool((t == ZERO).all()):  # nothing to predict nor to condition on
                raise TrainDataError(f"{f.name}:{name} holds only -1 (ignored frames): no token to train on")
            grids.append(t.to(torch.long))
            names.append(name)
    return TokenData(grids, h.hexdigest(), str(folder), read_manifest(folder / "manifest.json"), names)


def read_manifest(path: Path) -> dict[str, Any]:
    """A token folder's optional ``manifest.json``: a JSON object, or TrainDataError naming the file."""
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrainDataError(f"cannot read {path}: {one_line(exc)}") from None
    if not isinstance(manifest, dict):
        raise TrainDataError(f"{path} is a JSON {type(manifest).__name__}; expected an object")
    return manifest


def check_token_range(data: TokenData, cfg: LMConfig) -> None:
    for i, g in enumerate(data.grids):
        text, audio = g[0], g[1:]
        bad_text = ((text < ZERO) | (text >= cfg.text_card)).any()
        bad_audio = ((audio < ZERO) | (audio >= cfg.card)).any()
        if bad_text or bad_audio:
            what = "text" if bad_text else "audio"
            raise TrainDataError(
                f"grid {i} of {data.source} has {what} tokens outside [-1, "
                f"{cfg.text_card if bad_text else cfg.card}) (text_card {cfg.text_card}, card {cfg.card})"
            )


def crop_plan(
    grids: list[torch.Tensor], rng: np.random.Generator, batch_size: int, seq_len: int
) -> list[tuple[int, int]]:
    """(grid index, start frame) per batch item: a random grid, a random crop of ``seq_len`` frames."""
    plan = []
    for _ in range(batch_size):
        i = int(rng.integers(len(grids)))
        T = grids[i].shape[1]
        plan.append((i, int(rng.integers(0, T - seq_len + 1)) if T > seq_len else 0))
    return plan


def crops(grids: list[torch.Tensor], plan: list[tuple[int, int]], seq_len: int) -> torch.Tensor:
    """The planned crops as a batch [B, K, seq_len]; shorter grids padded with -1."""
    out = torch.full((len(plan), grids[0].shape[0], seq_len), ZERO, dtype=torch.long)
    for b, (i, start) in enumerate(plan):
        crop = grids[i][:, start : start + seq_len]
        out[b, :, : crop.shape[1]] = crop
    return out


def sample_batch(
    grids: list[torch.Tensor], rng: np.random.Generator, batch_size: int, seq_len: int
) -> torch.Tensor:
    """A random crop of ``seq_len`` frames of a random grid per item; shorter grids padded with -1."""
    return crops(grids, crop_plan(grids, rng, batch_size, seq_len), seq_len)


def drop_user_tokens(codes: torch.Tensor, dep_q: int, p: float, rng: np.random.Generator) -> None:
    """In place: each user-stream token becomes the zero token with probability ``p`` (a regulariser
    against memorising voices; user streams are inputs only, never targets)."""
    if p <= 0:
        return
    user = codes[:, 1 + dep_q :]
    mask = torch.from_numpy(rng.random(tuple(user.shape)) < p)
    user.masked_fill_(mask, ZERO)


def eval_windows(grids: list[torch.Tensor], seq_len: int) -> list[torch.Tensor]:
    """Consecutive windows of every grid (deterministic), each [1, K, <= seq_len]."""
    return [g[None, :, s : s + seq_len] for g in grids for s in range(0, g.shape[1], seq_len)]


# --- the objective -----------------------------------------------------------------------------------
def delay_grid(lm: LMModel, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (inputs, targets), both [B, K, T], as Moshi's ``LMModel.forward``: stream k is
    shifted right by its delay with the start token in front, the sequence opens with a column of start
    tokens, and inputs are that sequence without its last column."""
    B, K, T = codes.shape
    initial = torch.tensor([lm.text_card] + [lm.card] * lm.n_q, device=codes.device).view(1, K, 1)
    delayed = initial.expand(B, K, T).clone()
    for k, d in enumerate(lm.delays):
        delayed[:, k, d:] = codes[:, k, : T - d]
    inputs = torch.cat([initial.expand(B, K, 1), delayed[:, :, :-1]], dim=2)
    return inputs, delayed


def temporal_forward(
    lm: LMModel, codes: torch.Tensor, input_offset: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (temporal hidden states [B, T, dim], text logits [B, T, text_card], delayed
    targets [B, K, T]): the teacher-forced temporal transformer alone (what the text stream needs).
    ``input_offset`` (broadcastable to [B, T, dim]) is added to the summed input embeddings (a recipe
    option's conditioning)."""
    inputs, targets = delay_grid(lm, codes)
    B, K, T = codes.shape
    x = lm.embed(inputs)
    if input_offset is not None:
        x = x + input_offset
    cos, sin = lm.transformer.rope_angles(torch.arange(T, device=codes.device).expand(B, T))
    for layer in lm.transformer.layers:
        x = layer.forward_sequence(x, cos, sin)
    hidden = lm.out_norm(x)
    return hidden, lm.text_linear(hidden), targets


def teacher_forced_logits(
    lm: LMModel,
    codes: torch.Tensor,
    depth_frames: torch.Tensor | None = None,
    input_offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes [B, K, T] -> (text logits [B, T, text_card], audio logits [F, dep_q, card], delayed targets
    [B, K, T]). Text position t predicts column t of the delayed grid. The depth transformer runs on the
    flat frames ``depth_frames`` (indices into B * T; every frame when None), in that order."""
    hidden, text_logits, targets = temporal_forward(lm, codes, input_offset)
    B, K, T = codes.shape
    # Depth stage, per frame: codebook k sees the delayed true token of stream k (text for k = 0).
    depth_in = targets[:, : lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    flat_hidden = hidden.reshape(B * T, -1)
    if depth_frames is not None:
        depth_in, flat_hidden = depth_in[depth_frames], flat_hidden[depth_frames]
    audio_logits = lm.depformer_forward_parallel(flat_hidden, depth_in)
    return text_logits, audio_logits, targets


def valid_targets(lm: LMModel, targets: torch.Tensor) -> torch.Tensor:
    """Targets that carry a token: not a start-token fill (t < delay) and not the zero token."""
    T = targets.shape[2]
    t = torch.arange(T, device=targets.device).view(1, 1, T)
    delays = torch.tensor(lm.delays, device=targets.device).view(1, -1, 1)
    return (t >= delays) & (targets != ZERO)


@dataclass
class LossWeights:
    text_padding_weight: float = 0.5  # moshi-finetune's text_padding_weight (PAD and EPAD targets)
    first_codebook_weight: float = 10.0  # moshi-finetune's first_codebook_weight_multiplier


@dataclass
class LossParts:
    total: torch.Tensor
    text: float
    audio: float
    audio_per_codebook: list[float]
    text_word_correct: int  # argmax hits on targets that are words (not padding), for accuracy
    text_words: int
    # What the loss was computed from, for the options that add a term to it (distillation): the
    # logits and each position's weight in the hard-label loss (0 where masked).
    text_logits: torch.Tensor | None = None  # [B, T, text_card]
    audio_logits: torch.Tensor | None = None  # [F, dep_q, card]
    text_weight: torch.Tensor | None = None  # [B, T]
    audio_weight: torch.Tensor | None = None  # [F, dep_q]


@dataclass
class TextTerms:
    """The text stream's part of the objective, per position [B, T]."""

    targets: torch.Tensor
    ok: torch.Tensor  # a real target (not a start-token fill, not the zero token)
    is_pad: torch.Tensor  # PAD or EPAD target
    weight: torch.Tensor  # its weight in the loss (padding at text_padding_weight, 0 where not ok)
    ce: torch.Tensor  # cross-entropy [B * T]
    loss: torch.Tensor  # the weighted mean


def text_terms(
    lm: LMModel, text_logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: LossWeights
) -> TextTerms:
    pad_ids = (lm.text_padding_token_id, lm.end_of_text_padding_id)
    text_t, text_ok = targets[:, 0], valid[:, 0]
    is_pad = (text_t == pad_ids[0]) | (text_t == pad_ids[1])
    w_text = text_ok.float() * torch.where(is_pad, weights.text_padding_weight, 1.0)
    ce_text = F.cross_entropy(
        text_logits.reshape(-1, lm.text_card).float(),
        text_t.masked_fill(~text_ok, 0).reshape(-1),
        reduction="none",
    )
    text_loss = (ce_text * w_text.reshape(-1)).sum() / w_text.sum().clamp(min=1e-9)
    return TextTerms(text_t, text_ok, is_pad, w_text, ce_text, text_loss)


def pick_depth_frames(codes: torch.Tensor, fraction: float, rng: np.random.Generator) -> torch.Tensor | None:
    """A uniform random share of the frames that are not padding (None: all frames). The depth
    transformer is per frame, so a subset is an unbiased estimate of its loss at a fraction of the cost."""
    if fraction >= 1.0:
        return None
    B, _, T = codes.shape
    real = torch.nonzero((codes[:, 1] != ZERO).reshape(-1)).view(-1).cpu().numpy()
    n = max(1, int(round(fraction * len(real))))
    return torch.from_numpy(np.sort(rng.permutation(real)[:n])).to(codes.device)


def moshi_loss(
    lm: LMModel,
    codes: torch.Tensor,
    weights: LossWeights,
    depth_frames: torch.Tensor | None = None,
    input_offset: torch.Tensor | None = None,
) -> LossParts:
    text_logits, audio_logits, targets = teacher_forced_logits(lm, codes, depth_frames, input_offset)
    valid = valid_targets(lm, targets)
    B, K, T = targets.shape
    text = text_terms(lm, text_logits, targets, valid, weights)
    text_t, text_ok, is_pad, w_text, text_loss = text.targets, text.ok, text.is_pad, text.weight, text.loss

    audio_t = targets[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    audio_valid = valid[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
    if depth_frames is not None:
        audio_t, audio_valid = audio_t[depth_frames], audio_valid[depth_frames]
    audio_ok = audio_valid.float()
    ce_audio = F.cross_entropy(
        audio_logits.reshape(-1, lm.card).float(),
        audio_t.masked_fill(~audio_valid, 0).reshape(-1),
        reduction="none",
    ).view_as(audio_ok)
    cb_w = torch.ones(lm.dep_q, device=codes.device)
    cb_w[0] = weights.first_codebook_weight
    w_audio = audio_ok * cb_w.view(1, -1)
    audio_loss = (ce_audio * w_audio).sum() / w_audio.sum().clamp(min=1e-9)
    per_cb = (ce_audio * audio_ok).sum(dim=0) / audio_ok.sum(dim=0).clamp(min=1)

    words = text_ok & ~is_pad
    hits = (text_logits.argmax(-1) == text_t) & words
    return LossParts(
        text_loss + audio_loss,
        float(text_loss.detach()),
        float(audio_loss.detach()),
        [float(v) for v in per_cb.detach()],
        int(hits.sum()),
        int(words.sum()),
        text_logits,
        audio_logits,
        w_text,
        w_audio,
    )


@torch.no_grad()
def evaluate(
    lm: LMModel,
    grids: list[torch.Tensor],
    seq_len: int,
    weights: LossWeights,
    groups: tuple[str, list[str]] | None = None,
    engines: tuple[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Teacher-forced figures on held-out grids: losses (mean over windows) and the text stream's word
    accuracy (argmax at the frames where a word token is the target). With ``groups`` (what they are,
    each grid's group: the user voice of each held-out session), the accuracy per group too: a pooled
    figure hides the few voices the model does not generalise to. ``engines`` likewise, per speech engine."""
    was = lm.training
    lm.eval()
    text, audio, per_cb, hits, words, n = 0.0, 0.0, None, 0, 0, 0
    tallies: list[tuple[int, int, int]] = []  # (grid, word hits, words) per window
    for i, g in enumerate(grids):
        for w in eval_windows([g], seq_len):
            parts = moshi_loss(lm, w.to(lm.device), weights)
            text += parts.text
            audio += parts.audio
            per_cb = (
                parts.audio_per_codebook
                if per_cb is None
                else [a + b for a, b in zip(per_cb, parts.audio_per_codebook)]
            )
            hits += parts.text_word_correct
            words += parts.text_words
            n += 1
            tallies.append((i, parts.text_word_correct, parts.text_words))
    lm.train(was)
    if n == 0:
        return {"windows": 0}
    out: dict[str, Any] = {
        "windows": n,
        "text_loss": text / n,
        "audio_loss": audio / n,
        "audio_ce_per_codebook": [v / n for v in per_cb or []],
        "text_word_accuracy_teacher_forced": hits / words if words else None,
        "text_words": words,
    }
    for key, grouping in (("text_word_accuracy_by_group", groups), ("text_word_accuracy_by_engine", engines)):
        if grouping is not None:
            of = counts_by_group(((grouping[1][i], c, w) for i, c, w in tallies), total="words")
            out[key] = {
                "by": grouping[0],
                "of": {
                    k: {**t, "accuracy": t["correct"] / t["words"] if t["words"] else None}
                    for k, t in of.items()
                },
            }
    return out


# --- recipe, state -----------------------------------------------------------------------------------
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


def lr_at(recipe: LMTrainRecipe, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / max(1, recipe.warmup_steps))
    cos = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    floor = recipe.min_lr_fraction
    return recipe.lr * warm * (floor + (1 - floor) * cos)


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
    request to stop (training/interrupt.py): the state is saved, TrainingInterrupted raised. Returns the
    sidecar."""
    if minutes is None and max_steps is None:
        raise ValueError("give minutes (a time budget) or max_steps")
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
    step, elapsed_before, history = 0, 0.0, []
    resumed_from = None
    if state_path.is_file() and not fresh:

        def same_recipe(meta: dict[str, Any]) -> None:
            if meta.get("recipe_digest") != recipe.digest():
                raise TrainDataError(
                    f"{state_path} holds a run with another recipe ({meta.get('recipe_digest')} != "
                    f"{recipe.digest()}); pass --fresh to start over or another --state"
                )

        info, extra_state = load_training_state(state_path, lm, opt, same_recipe)
        for name, module in option_modules.items():
            prefix = f"option.{name}."
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in extra_state.items() if k.startswith(prefix)}
            )
        step, elapsed_before, history = info["step"], info["elapsed_s"], info["history"]
        rng.bit_generator.state = info["rng"]
        for o, st in zip(options, info.get("option_rng", [])):
            o.rng.bit_generator.state = st
        resumed_from = {"step": step, "elapsed_s": elapsed_before}
        log(f"resuming from {state_path} at step {step} ({elapsed_before:.0f}s done)")
    budget_s = minutes * 60.0 if minutes is not None else None
    start_step = step
    # the code this process trains with; the sidecar's "git_commit" is read when it is written, which a
    # commit made during a long run would otherwise misattribute
    commit_at_start = git_commit()
    t0 = time.time()
    last_ckpt = t0
    recent: list[tuple[float, float]] = []

    def elapsed() -> float:
        return elapsed_before + time.time() - t0

    def progress() -> float:
        return step / max_steps if max_steps is not None else elapsed() / budget_s  # type: ignore[operator]

    def done() -> bool:
        if stop is not None and stop():
            return True
        if max_steps is not None and step >= max_steps:
            return True
        return budget_s is not None and elapsed() >= budget_s

    def checkpoint() -> None:
        save_training_state(
            state_path,
            lm,
            opt,
            {
                "recipe_digest": recipe.digest(),
                "step": step,
                "elapsed_s": elapsed(),
                "rng": rng.bit_generator.state,
                "history": history[-400:],
                **({"option_rng": [o.rng.bit_generator.state for o in options]} if options else {}),
            },
            {f"option.{n}.{k}": v for n, m in option_modules.items() for k, v in m.state_dict().items()},
        )

    while not done():
        lr_now = lr_at(recipe, step, progress())
        for group in opt.param_groups:
            group["lr"] = lr_now
        grids = train.grids
        for o in options:
            grids = o.grids(step, progress(), grids)
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
            raise FloatingPointError(f"LM training diverged at step {step} (loss {float(parts.total)})")
        opt.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        step += 1
        recent.append((parts.text, parts.audio))
        if step % log_every == 0:
            r = np.array(recent[-log_every:])
            history.append(
                {
                    "step": step,
                    "t": round(elapsed(), 1),
                    "text": float(r[:, 0].mean()),
                    "audio": float(r[:, 1].mean()),
                }
            )
            log(
                f"step {step} t={elapsed():.0f}s lr={lr_now:.2e} text={r[:, 0].mean():.4f} "
                f"audio={r[:, 1].mean():.4f} ({(step - start_step) / max(time.time() - t0, 1e-9):.3f} step/s)"
            )
        if time.time() - last_ckpt > checkpoint_every_s:
            checkpoint()
            last_ckpt = time.time()
        if stop_after_steps is not None and step >= stop_after_steps:
            checkpoint()
            return {"stopped_at": step, "state": str(state_path)}
    checkpoint()
    end_of_loop(stop, state_path, step)
    lm.eval()
    wall = elapsed()
    run_s = time.time() - t0
    run_steps = step - start_step
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
        "seed": seed,
        "threads": threads,
        "device": device,
        "minutes_budget": minutes,
        "steps": step,
        "wall_time_s": round(wall, 1),
        "steps_per_s_this_process": round(run_steps / max(run_s, 1e-9), 4),
        "resumed_from": resumed_from,
        "final_losses_mean_last_200": {"text": float(tail[:, 0].mean()), "audio": float(tail[:, 1].mean())},
        "loss_history": history[-400:],
        "git_commit": git_commit(),
        "git_commit_at_start": commit_at_start,
        "torch": torch.__version__,
        "platform": platform.platform(),
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
    write_sidecar(out_path.with_suffix(".json"), sidecar)
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
